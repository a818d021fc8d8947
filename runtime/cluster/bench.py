"""P6: a seeded virtual-clock experiment on two Ray shards against one shard, and against a local run.

The same ``mixed`` experiment runs on one shard and on two (local Ray, one CPU per shard),
alternately, ``REPS`` times each. Throughput is the actions of both phases over the phases'
wall time as the shards measured it (the slowest shard's, phase by phase), so Ray's start-up
and the workers' imports are left out; the end-to-end ratio (the coordinator's wall time from
creating the actors to the merged result) is in the detail. The best repetition of each counts
(the machine is shared: the best is the one least disturbed), every sample is in the detail.
The sharded reports must equal the local run's, field for field, but for the backend and the
shard fields. Target: >= 1.7x and equal reports.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec

from ..lab.bench import Figure
from ..lab.bench.p7_virtual import mixed_virtual_run
from ..lab.costs import CostModel
from ..lab.experiment import run_experiment
from ..lab.report import Report, build_report
from .coordinator import connect, run_sharded

if TYPE_CHECKING:
    from ..lab.records import RunData

__all__ = ("REPS", "comparable", "measure_p6")

#: Runs of each shard count.
REPS: Final = 3


def comparable(report: Report) -> dict[str, Any]:
    """``report`` as builtins without what a sharded run may change: the backend and shard fields."""
    data: dict[str, Any] = msgspec.to_builtins(report)
    data.pop("cluster", None)
    data["options"].pop("backend", None)
    for run in data["runs"]:
        run.pop("shards", None)
    return data


def _rate(run: RunData) -> float:
    actions = sum(phase.recorder.actions for phase in run.phases)
    wall = sum(phase.wall_ns for phase in run.phases)
    return actions * 1e9 / wall if wall else 0.0


def measure_p6(quick: bool) -> list[Figure]:
    """Measure P6 (starts a local Ray with this machine's CPUs, or uses this process's Ray)."""
    partitions, ops = (40, 4_000) if quick else (400, 80_000)
    options = mixed_virtual_run(partitions, ops, 20 if quick else 100, backend="ray")
    costs = CostModel()
    local = anyio.run(run_experiment, msgspec.structs.replace(options, backend="asyncio"), costs)
    expected = comparable(build_report([local], costs))
    rates: dict[int, list[float]] = {1: [], 2: []}
    e2e: dict[int, list[float]] = {1: [], 2: []}
    equal = True
    with connect(None, num_cpus=max(2, os.cpu_count() or 1)):
        for rep in range(1 if quick else REPS):
            for shards in (1, 2):
                print(f"  P6 run {rep + 1}: {shards} shard(s)", file=sys.stderr, flush=True)
                run = run_sharded(options, costs, shards)
                rates[shards].append(_rate(run))
                e2e[shards].append(sum(p.recorder.actions for p in run.phases) * 1e9 / run.wall_ns)
                equal = equal and comparable(build_report([run], costs)) == expected
    one, two = max(rates[1]), max(rates[2])
    ratio = two / one if one else 0.0
    detail: dict[str, float | str] = {
        "reports_equal_local": "yes" if equal else "no",
        "end_to_end_ratio": round(max(e2e[2]) / max(e2e[1]), 3) if max(e2e[1]) else 0.0,
        "samples_1": ", ".join(f"{r:,.0f}" for r in rates[1]),
        "samples_2": ", ".join(f"{r:,.0f}" for r in rates[2]),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    return [
        Figure(
            id="P6",
            name=f"Ray 2 shards vs 1, {partitions}x4",
            value=round(two),
            unit="/s",
            floor=round(one),
            floor_name="one shard's actions/s (same run)",
            ratio=round(ratio, 3),
            target=">=1.7x, = local",
            met=None if quick else ratio >= 1.7 and equal,
            detail=detail,
        )
    ]
