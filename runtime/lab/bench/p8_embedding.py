"""P8: embedding: a host task's 1 ms timer lag while the runtime runs the P2 fleet, vs the raw fleet.

An embedding program keeps its own tasks on the event loop beside the runtime. Here one host
task sleeps 1 ms again and again and records how late each wake-up is, first while the raw
asyncio fleet (a task per actor, ``floors.raw_fleet``) serves 100 closed-loop drivers, then
while the runtime serves them (the P2 fleet); the two take turns (4 rounds each) in one event
loop, every round starting with frozen GC generations (a collection in one fleet's round walks
only what that round allocated). Also reported: the longest scheduler pass during the runtime's
rounds. Target: the lag's
p99 beside the runtime <= 1.0x beside the raw fleet, and no pass longer than 2 ms.
"""

from __future__ import annotations

import gc
import time

import anyio

from ..._host import open_runtime
from ._figure import Figure, percentile
from .floors import Ask, raw_fleet
from .loops import asyncio_name, loop_suffix, run_asyncio
from .p2_fleet import boot_fleet, drive_fleet

__all__ = ("measure_p8",)

_TICK = 0.001


async def _lags_while(ask: Ask, targets: int, clients: int, seconds: float, seed: int) -> list[int]:
    """Timer lags (ns) of a host task sleeping ``_TICK`` while ``clients`` drive ``ask``."""
    lags: list[int] = []
    clock = time.perf_counter_ns
    async with anyio.create_task_group() as tg:

        async def host() -> None:
            while True:
                start = clock()
                await anyio.sleep(_TICK)
                lags.append(clock() - start - int(_TICK * 1e9))

        tg.start_soon(host)
        await drive_fleet(ask, targets, clients, seconds, seed)
        tg.cancel_scope.cancel()
    return lags


async def _p8_samples(
    partitions: int, clients: int, seconds: float, rounds: int
) -> tuple[list[int], list[int], int]:
    targets = partitions * 4
    async with raw_fleet(targets) as raw, open_runtime(seed=1) as rt:
        ours = await boot_fleet(rt, partitions)
        gc.collect()
        gc.freeze()
        rt.statistics(reset_peaks=True)  # only the measured rounds' passes count
        lags: list[list[int]] = [[], []]
        try:
            for r in range(rounds):  # alternate so the machine's noise hits both alike
                for i, ask in enumerate((raw, ours)):
                    gc.freeze()  # each round starts with empty GC generations (as in P2)
                    lags[i] += await _lags_while(ask, targets, clients, seconds / rounds, r)
        finally:
            gc.unfreeze()
        longest = rt.statistics().scheduler.longest_pass_ns
    return lags[0], lags[1], longest


def measure_p8(quick: bool) -> list[Figure]:
    """P8: host timer lag p99 beside the runtime vs beside the raw fleet, and the longest pass."""
    partitions, clients, seconds = (250, 20, 0.6) if quick else (2_500, 100, 4.0)
    raw, ours, longest_ns = run_asyncio(_p8_samples, partitions, clients, seconds, 4)
    loop = asyncio_name()
    raw_p99, p99 = percentile(raw, 0.99), percentile(ours, 0.99)
    ratio = p99 / raw_p99 if raw_p99 > 0 else float("inf")
    return [
        Figure(
            id="P8",
            name=f"host 1ms timer lag p99, P2 fleet {partitions}x4{loop_suffix()}",
            value=p99 / 1000,
            unit="us",
            floor=raw_p99 / 1000,
            floor_name=f"the same lag beside the raw {loop} fleet ({partitions * 4} Queue actors)",
            ratio=round(ratio, 3),
            target="<=1.0x, pass<=2ms",
            met=None if quick else ratio <= 1.0 and longest_ns <= 2_000_000,
            detail={
                "longest_pass_us": longest_ns / 1000,
                "p50_us": percentile(ours, 0.5) / 1000,
                "floor_p50_us": percentile(raw, 0.5) / 1000,
                "max_us": max(ours) / 1000,
                "floor_max_us": max(raw) / 1000,
                "ticks": len(ours),
                "floor_ticks": len(raw),
            },
        )
    ]
