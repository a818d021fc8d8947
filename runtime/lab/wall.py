"""The wall-clock section of a run report: host facts and wall times, never reproducible.

Kept apart from everything else in the report (``Report.wall``), and left out of virtual-clock
reports unless asked for, so that a seeded virtual run gives the same bytes anywhere.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from .records import RunData

__all__ = ("PhaseWall", "WallReport", "rate", "wall_report")


def rate(count: int, ns: int) -> float:
    """``count`` per second over ``ns`` nanoseconds (0 for an empty span), to 0.1."""
    return round(count * 1e9 / ns, 1) if ns > 0 else 0.0


class PhaseWall(msgspec.Struct, frozen=True, kw_only=True):
    """Wall-clock facts of one phase."""

    phase: str
    wall_ns: int
    actions_per_wall_second: float


class WallReport(msgspec.Struct, frozen=True, kw_only=True):
    """Host facts and wall-clock times: never reproducible, so kept apart."""

    python: str
    platform: str
    cpus: int
    max_rss_bytes: int
    runs: list[list[PhaseWall]]
    total_wall_ns: int
    scheduler: list[dict[str, int]]


def wall_report(runs: list[RunData]) -> WallReport:
    """Host facts and the wall-clock times of ``runs``."""
    return WallReport(
        python=sys.version.split()[0],
        platform=platform.platform(),
        cpus=os.cpu_count() or 1,
        max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        runs=[
            [
                PhaseWall(
                    phase=p.name,
                    wall_ns=p.wall_ns,
                    actions_per_wall_second=rate(p.recorder.actions, p.wall_ns),
                )
                for p in run.phases
            ]
            for run in runs
        ],
        total_wall_ns=sum(run.wall_ns for run in runs),
        scheduler=[run.scheduler for run in runs],
    )
