"""P7: guest actions per wall second of a seeded virtual-clock run against the asyncio ask floor.

A seeded virtual-clock ``mixed`` run (its guest programs in-line in the scheduler), run twice,
beside the asyncio ask floor's round trips per second measured in the same process before,
between and after the two runs (a shared host's load moves during seconds-long runs; the floor
is the median of all its samples, the run the faster of the two). Target: >= 1.5x the floor,
and the two reports are the same bytes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from ..costs import CostModel
from ..experiment import ExperimentOptions, run_experiment
from ..workloads import resolve
from ._figure import Figure, percentile
from .floors import asyncio_floor, interleaved
from .loops import run_asyncio

if TYPE_CHECKING:
    from ..records import BackendName

__all__ = ("FLOOR_RATIO", "measure_p7", "mixed_virtual_run")

#: P7's target: at least this many times the asyncio ask floor's round trips per second.
FLOOR_RATIO: Final = 1.5


async def _virtual_run(options: ExperimentOptions) -> tuple[bytes, int, float]:
    from ..report import build_report, encode_report

    start = time.perf_counter_ns()
    data = await run_experiment(options, CostModel())
    wall = (time.perf_counter_ns() - start) / 1e9
    actions = sum(phase.recorder.actions for phase in data.phases)
    return encode_report(build_report([data], CostModel())), actions, wall


async def _floor_samples(n: int) -> list[int]:
    async with asyncio_floor() as ask:
        return (await interleaved([ask], n))[0]


def mixed_virtual_run(
    partitions: int, ops: int, drivers: int, *, backend: BackendName = "asyncio"
) -> ExperimentOptions:
    """The seeded virtual-clock ``mixed`` run of P7 (and P6): ``partitions`` x 4 VPs, ``ops`` operations."""
    return ExperimentOptions(
        partitions=partitions,
        vps=4,
        workload="mixed",
        mix=resolve("mixed"),
        duration=None,
        ops=ops,
        drivers=drivers,
        rate=None,
        backend=backend,
        clock="virtual",
        commit_policy="batched",
        seed=1,
        trace_vps=0,
    )


def measure_p7(quick: bool) -> list[Figure]:
    partitions, ops = (30, 2_000) if quick else (300, 40_000)
    options = mixed_virtual_run(partitions, ops, 20 if quick else 100)
    samples = 1_000 if quick else 7_000
    floor_samples = run_asyncio(_floor_samples, samples)
    first, actions, wall = run_asyncio(_virtual_run, options)
    floor_samples += run_asyncio(_floor_samples, samples)
    second, _, wall2 = run_asyncio(_virtual_run, options)
    floor_samples += run_asyncio(_floor_samples, samples)
    rate = actions / min(wall, wall2)
    floor = 1e9 / percentile(floor_samples, 0.5)
    identical = first == second
    return [
        Figure(
            id="P7",
            name=f"virtual actions/wall s, {partitions}x4",
            value=round(rate),
            unit="/s",
            floor=round(floor),
            floor_name="asyncio Queue+Future ask round trips/s",
            ratio=round(rate / floor, 3),
            target=f">={FLOOR_RATIO}x, same bytes",
            met=rate >= FLOOR_RATIO * floor and identical,
            detail={"identical_reports": "yes" if identical else "no", "actions": actions, "ops": ops},
        )
    ]
