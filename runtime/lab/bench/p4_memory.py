"""P4: memory per idle VP, RSS of a large idle fleet and creation rate, each against raw asyncio actors.

The floor of every figure is a raw asyncio actor (a task parked on its own Queue) measured in
the same run: bytes per idle actor (tracemalloc), RSS of a fresh process holding as many of
them as the fleet has VPs, and actors created per second. Targets (PERFORMANCE.md P4, sizes and
counts rather than times): <= 3 KB per idle VP, <= 1.5 GiB with 10,000 partitions x 4 VPs,
>= 20,000 VPs created per second.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Final

import anyio

from ..._host import open_runtime
from ._figure import Figure
from .loops import run_asyncio

__all__ = ("measure_p4", "probe", "raw_rss_probe", "rss_bytes", "rss_probe")

_FLOOR: Final = "raw asyncio actors (a task parked on its own Queue)"
#: P4's targets.
BYTES_PER_VP: Final = 3_072
RSS_GIB: Final = 1.5
VPS_PER_SECOND: Final = 20_000


async def _raw_actors(n: int) -> tuple[float, float]:
    """(bytes per idle raw actor, raw actors created per second)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(n)]
        async with anyio.create_task_group() as tg:
            for queue in queues:
                tg.start_soon(queue.get)
            await anyio.sleep(0.01)
            gc.collect()
            raw = (tracemalloc.get_traced_memory()[0] - base) / n
            tg.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    start = time.perf_counter_ns()
    async with anyio.create_task_group() as tg:
        more = [asyncio.Queue[int]() for _ in range(n)]
        for queue in more:
            tg.start_soon(queue.get)
        await anyio.lowlevel.checkpoint()  # every task has started and parked
        rate = n / ((time.perf_counter_ns() - start) / 1e9)
        tg.cancel_scope.cancel()
    return raw, rate


async def _idle_bytes(partitions: int) -> tuple[float, float, float, float]:
    async with open_runtime(seed=1) as rt:
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            parts = [await rt.create_partition(vp_count=4) for _ in range(partitions)]
            gc.collect()
            per_vp = (tracemalloc.get_traced_memory()[0] - base) / (4 * len(parts))
        finally:
            tracemalloc.stop()
        start = time.perf_counter_ns()
        more = [await rt.create_partition(vp_count=4) for _ in range(partitions)]
        rate = 4 * len(more) / ((time.perf_counter_ns() - start) / 1e9)
    raw, raw_rate = await _raw_actors(4 * partitions)
    return per_vp, raw, rate, raw_rate


def rss_bytes() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_probe(partitions: int) -> None:
    """Create ``partitions`` x 4 idle VPs in this (fresh) process and print RSS as JSON."""

    async def hold() -> None:
        async with open_runtime(seed=1) as rt:
            start = time.perf_counter_ns()
            for _ in range(partitions):
                await rt.create_partition(vp_count=4)
            elapsed = (time.perf_counter_ns() - start) / 1e9
            gc.collect()
            print(json.dumps({"rss": rss_bytes(), "vps_per_s": 4 * partitions / elapsed}))

    anyio.run(hold)


def raw_rss_probe(actors: int) -> None:
    """Hold ``actors`` idle raw asyncio actors in this (fresh) process and print RSS as JSON."""

    async def hold() -> None:
        queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(actors)]
        async with anyio.create_task_group() as tg:
            for queue in queues:
                tg.start_soon(queue.get)
            await anyio.sleep(0.01)
            gc.collect()
            print(json.dumps({"rss": rss_bytes()}))
            tg.cancel_scope.cancel()

    anyio.run(hold)


def probe(call: str, module: str = __name__) -> dict[str, float]:
    """Run ``call`` (a probe of ``module`` printing JSON) in a fresh process; what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", f"from {module} import {call.split('(')[0]}; {call}"],
        capture_output=True,
        check=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure_p4(quick: bool) -> list[Figure]:
    sample, resident = (250, 1_000) if quick else (2_500, 10_000)
    per_vp, raw, rate, raw_rate = run_asyncio(_idle_bytes, sample)
    ours = probe(f"rss_probe({resident})")
    floor = probe(f"raw_rss_probe({4 * resident})")
    gib, raw_gib = ours["rss"] / 2**30, floor["rss"] / 2**30
    return [
        Figure(
            id="P4",
            name="bytes per idle VP (tracemalloc)",
            value=round(per_vp),
            unit="B",
            floor=round(raw),
            floor_name=_FLOOR,
            ratio=round(per_vp / raw, 3),
            target=f"<={BYTES_PER_VP:,} B",
            met=per_vp <= BYTES_PER_VP,
        ),
        Figure(
            id="P4",
            name=f"RSS of {resident:,}x4 idle VPs",
            value=round(gib, 5),  # 0.04 GiB at --quick sizes: 3 decimals would skew the ratio
            unit="GiB",
            floor=round(raw_gib, 5),
            floor_name=_FLOOR,
            ratio=round(gib / raw_gib, 3),
            target=f"<={RSS_GIB} GiB",
            met=gib <= RSS_GIB,
            detail={"vps_per_s_in_probe": round(ours["vps_per_s"])},
        ),
        Figure(
            id="P4",
            name="VPs created per second",
            value=round(rate),
            unit="/s",
            floor=round(raw_rate),
            floor_name=_FLOOR,
            ratio=round(rate / raw_rate, 3),
            target=f">={VPS_PER_SECOND:,}/s",
            met=rate >= VPS_PER_SECOND,
        ),
    ]
