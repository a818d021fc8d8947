"""P4: memory per idle VP against a raw asyncio actor, RSS of a large idle fleet, creation rate.

Bytes per idle VP (tracemalloc) against a raw asyncio actor (task + Queue); RSS of a fresh
process holding 10,000 partitions x 4 VPs; VPs created per second. Targets: <= 3 KB,
<= 1.5 GiB, >= 20,000 VPs/s.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc

import anyio

from ..._host import open_runtime
from ._figure import Figure

__all__ = ("measure_p4", "rss_probe")


async def _idle_bytes(partitions: int) -> tuple[float, float, float]:
    import asyncio

    async with open_runtime(seed=1) as rt:
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter_ns()
            parts = [await rt.create_partition(vp_count=4) for _ in range(partitions)]
            elapsed = (time.perf_counter_ns() - start) / 1e9
            gc.collect()
            per_vp = (tracemalloc.get_traced_memory()[0] - base) / (4 * len(parts))
        finally:
            tracemalloc.stop()
        start = time.perf_counter_ns()
        more = [await rt.create_partition(vp_count=4) for _ in range(partitions)]
        rate = 4 * len(more) / ((time.perf_counter_ns() - start) / 1e9)
        del elapsed
    # The floor: an idle raw actor is a task parked on its own asyncio.Queue.
    n = 2_000
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
    return per_vp, raw, rate


def _rss() -> int:
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
            print(json.dumps({"rss": _rss(), "vps_per_s": 4 * partitions / elapsed}))

    anyio.run(hold)


def measure_p4(quick: bool) -> list[Figure]:
    sample, resident = (250, 1_000) if quick else (2_500, 10_000)
    per_vp, raw, rate = anyio.run(_idle_bytes, sample, backend="asyncio")
    probe = subprocess.run(
        [sys.executable, "-c", f"from runtime.lab.bench.p4_memory import rss_probe; rss_probe({resident})"],
        capture_output=True,
        check=True,
        text=True,
    )
    rss = json.loads(probe.stdout)
    gib = rss["rss"] / 2**30
    return [
        Figure(
            id="P4",
            name="bytes per idle VP (tracemalloc)",
            value=round(per_vp),
            unit="B",
            floor=round(raw),
            floor_name="idle raw asyncio actor (task + Queue)",
            ratio=round(per_vp / raw, 3),
            target="<= 3,072 B",
            met=per_vp <= 3_072,
        ),
        Figure(
            id="P4",
            name=f"RSS with {resident:,} partitions x 4 VPs (fresh process)",
            value=round(gib, 3),
            unit="GiB",
            floor=None,
            floor_name="",
            ratio=round(gib / 1.5, 3),
            target="<= 1.5 GiB",
            met=gib <= 1.5,
            detail={"vps_per_s_in_probe": round(rss["vps_per_s"])},
        ),
        Figure(
            id="P4",
            name="VPs created per second",
            value=round(rate),
            unit="VPs/s",
            floor=None,
            floor_name="",
            ratio=round(rate / 20_000, 3),
            target=">= 20,000 VPs/s",
            met=rate >= 20_000,
        ),
    ]
