"""P2: a fleet of 10,000 VPs driven by 100 concurrent clients against a raw asyncio fleet.

2,500 partitions x 4 VPs (all started), 100 closed-loop drivers executing ``Rdmsr`` on random
VPs, against a raw asyncio fleet (10,000 Queue-fed actor tasks, 100 clients); both fleets live
in one event loop and take turns (4 rounds each). Target: >= 1.0x the raw fleet's asks/s,
p99 <= 3 ms.
"""

from __future__ import annotations

import gc
import random
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import anyio

from protocol import Rdmsr, StartVirtualProcessor, Vtl
from protocol._x86 import Msr

from ..._host import open_runtime
from ...testing import long_mode_context
from ._figure import Figure, percentile
from .floors import Ask, raw_fleet

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..._host import Runtime

__all__ = ("FLOOR_RATIO", "boot_fleet", "drive_fleet", "measure_p2")

#: P2's target: at least this many times the raw fleet's asks per second.
FLOOR_RATIO: Final = 1.0


async def boot_fleet(rt: Runtime, partitions: int) -> Ask:
    """``partitions`` x 4 VPs of ``rt``, every AP started; ``ask(i)`` runs Rdmsr on VP ``i``."""
    parts = [await rt.create_partition(vp_count=4) for _ in range(partitions)]
    context = long_mode_context(0x1000)
    for part in parts:
        for i in (1, 2, 3):
            start = StartVirtualProcessor(vp_index=i, target_vtl=Vtl.VTL0, context=context)
            await part.vp(0).execute(start)
    vps = [part.vp(i) for part in parts for i in range(4)]
    action = Rdmsr(msr=Msr.LSTAR)

    async def ask(i: int) -> object:
        return await vps[i].execute(action)

    return ask


@asynccontextmanager
async def _our_fleet(partitions: int) -> AsyncIterator[Ask]:
    """``boot_fleet`` in a runtime of its own."""
    async with open_runtime(seed=1) as rt:
        yield await boot_fleet(rt, partitions)


async def drive_fleet(
    ask: Ask, targets: int, clients: int, seconds: float, seed: int
) -> tuple[int, int, list[int]]:
    """``clients`` closed-loop clients asking random targets for ``seconds``: (asks, ns, latencies)."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)

    async def client(c: int) -> None:
        rng = random.Random(seed * 1000 + c)
        record = latencies.append
        while True:
            start = clock()
            if start >= deadline:
                return
            await ask(rng.randrange(targets))
            record(clock() - start)

    started = clock()
    async with anyio.create_task_group() as tg:
        for c in range(clients):
            tg.start_soon(client, c)
    return len(latencies), clock() - started, latencies


async def _p2_samples(
    partitions: int, clients: int, seconds: float, rounds: int
) -> list[tuple[float, list[int]]]:
    targets = partitions * 4
    async with raw_fleet(targets) as raw, _our_fleet(partitions) as ours:
        gc.collect()
        gc.freeze()
        asks = [0, 0]
        elapsed = [0, 0]
        latencies: list[list[int]] = [[], []]
        try:
            for r in range(rounds):  # alternate the two fleets so noise hits both alike
                for i, ask in enumerate((raw, ours)):
                    n, ns, samples = await drive_fleet(ask, targets, clients, seconds / rounds, r)
                    asks[i] += n
                    elapsed[i] += ns
                    latencies[i] += samples
        finally:
            gc.unfreeze()
    return [(asks[i] * 1e9 / elapsed[i], latencies[i]) for i in range(2)]


def measure_p2(quick: bool) -> list[Figure]:
    partitions, clients, seconds = (250, 20, 0.6) if quick else (2_500, 100, 4.0)
    (raw_rate, raw_lat), (rate, lat) = anyio.run(
        _p2_samples, partitions, clients, seconds, 4, backend="asyncio"
    )
    ratio = rate / raw_rate
    p99 = percentile(lat, 0.99)
    return [
        Figure(
            id="P2",
            name=f"fleet {partitions}x4 VPs, {clients} drivers",
            value=round(rate),
            unit="/s",
            floor=round(raw_rate),
            floor_name=f"raw asyncio fleet ({partitions * 4} Queue actors)",
            ratio=round(ratio, 3),
            target=f">={FLOOR_RATIO}x, p99<=3ms",
            met=ratio >= FLOOR_RATIO and p99 <= 3e6,
            detail={
                "p50_us": percentile(lat, 0.5) / 1000,
                "p99_us": p99 / 1000,
                "floor_p50_us": percentile(raw_lat, 0.5) / 1000,
                "floor_p99_us": percentile(raw_lat, 0.99) / 1000,
            },
        )
    ]
