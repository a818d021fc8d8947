"""A campaign: many seeds across worker processes, and what they fired, covered and found."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import msgspec

from .faults import FAULT_TYPES
from .history import SOMETIMES
from .seed import run_seed
from .world import SeedResult

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("CampaignReport", "replay_line", "run_campaign")


class CampaignReport(msgspec.Struct, frozen=True, kw_only=True):
    """The sum of a campaign's seeds."""

    seeds: int
    steps: int
    failed: list[SeedResult]
    fault_enabled: dict[str, int]  # seeds whose plan turned the fault on
    fault_fired: dict[str, int]  # of those, seeds where it fired at least once
    fault_count: dict[str, int]  # how often it fired in all
    sometimes_seeds: dict[str, int]  # seeds that hit the assertion at least once
    sometimes_count: dict[str, int]
    calls: int
    restarts: int
    failed_partitions: int
    registers_checked: int
    virtual_seconds: float

    @property
    def ok(self) -> bool:
        """True when every seed passed."""
        return not self.failed


def replay_line(result: SeedResult) -> str:
    """The command that replays ``result``'s seed."""
    return f"tdvsm sim --seed {result.seed} --steps {result.steps}"


def _one(args: tuple[int, int]) -> SeedResult:
    return run_seed(*args)


def run_campaign(
    seeds: range,
    steps: int,
    *,
    jobs: int | None = None,
    progress: Callable[[SeedResult], None] | None = None,
) -> CampaignReport:
    """Run every seed of ``seeds`` for ``steps`` steps on ``jobs`` processes (default: every CPU)."""
    jobs = jobs or os.cpu_count() or 1
    results: list[SeedResult] = []
    work = [(seed, steps) for seed in seeds]
    if jobs == 1:
        for item in work:
            results.append(_one(item))
            if progress is not None:
                progress(results[-1])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(_one, work, chunksize=4):
                results.append(result)
                if progress is not None:
                    progress(result)
    return summarize(results, steps)


def summarize(results: list[SeedResult], steps: int) -> CampaignReport:
    """Add up the results of a campaign's seeds."""
    enabled = dict.fromkeys(FAULT_TYPES, 0)
    fired = dict.fromkeys(FAULT_TYPES, 0)
    count = dict.fromkeys(FAULT_TYPES, 0)
    for result in results:
        on = result.plan.enabled()
        for fault in FAULT_TYPES:
            enabled[fault] += fault in on
            fired[fault] += fault in on and result.faults[fault] > 0
            count[fault] += result.faults[fault]
    return CampaignReport(
        seeds=len(results),
        steps=steps,
        failed=[r for r in results if not r.ok],
        fault_enabled=enabled,
        fault_fired=fired,
        fault_count=count,
        sometimes_seeds={name: sum(r.sometimes[name] > 0 for r in results) for name in SOMETIMES},
        sometimes_count={name: sum(r.sometimes[name] for r in results) for name in SOMETIMES},
        calls=sum(r.calls for r in results),
        restarts=sum(r.restarts for r in results),
        failed_partitions=sum(r.failed_partitions for r in results),
        registers_checked=sum(r.registers_checked for r in results),
        virtual_seconds=round(sum(r.virtual_seconds for r in results), 3),
    )
