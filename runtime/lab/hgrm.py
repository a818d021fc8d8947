"""Percentile spectra as HdrHistogram ``.hgrm`` files, the format wrk2 and the HdrHistogram plotters read.

``--hgrm DIR`` writes one file per action type of each phase and run:
``DIR/[POLICY-]PHASE-ACTION.hgrm`` (the policy prefix only with ``--compare-policies``). Each
file is HdrHistogram's percentile distribution (``outputPercentileDistribution``): a header,
one line per percentile step (value, percentile, total count, 1/(1-percentile)) at 5 ticks per
half distance (``percentile_steps``), and the mean, standard
deviation, maximum and bucket footer. Values are in microseconds (``UNIT``), which keeps 1 ns
resolution at the format's three decimals; choose "microseconds" in a plotter. Virtual-clock
files hold modelled latencies.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from hdrh.histogram import HdrHistogram

from .metrics import mean_and_deviation, recorded

if TYPE_CHECKING:
    from pathlib import Path

    from .report import Report

__all__ = ("TICKS_PER_HALF_DISTANCE", "UNIT", "format_hgrm", "percentile_steps", "write_hgrm")

#: Unit of the values in a file, and nanoseconds per unit.
UNIT: Final = ("us", 1_000)
#: Percentile steps per halving of the distance to 100% (HdrHistogram's usual 5).
TICKS_PER_HALF_DISTANCE: Final = 5


def percentile_steps(
    histogram: HdrHistogram, ticks: int = TICKS_PER_HALF_DISTANCE
) -> list[tuple[int, float, int]]:
    """(value, percentile level, total count to it) at each step, as HdrHistogram's iterator walks them.

    Steps start at 0% and halve their distance to 100% every ``ticks`` steps (0, 10, ..., 50,
    55, ..., 75, 77.5, ...), each reported at the first value whose cumulative count reaches
    it (several steps may share a value), then one last step at 100% (the maximum). This is
    Java's ``PercentileIterator`` (and the C library's wrk2 uses); hdrh's Python iterator
    drops the rounding of the half-distance exponent, so its steps (0, 10, 19, 27.1, ...)
    differ from everyone else's, hence this walk over ``metrics.recorded`` buckets.
    """
    buckets = recorded(histogram)
    total = sum(count for _, count in buckets)
    steps: list[tuple[int, float, int]] = []
    level = 0.0
    seen = 0
    for i, (value, count) in enumerate(buckets):
        seen += count
        while 100.0 * seen / total >= level:
            steps.append((value, level, seen))
            gap = 100.0 - level
            if gap <= 0:
                break
            level += 100.0 / (ticks * 2 ** (int(math.log(100.0 / gap) / math.log(2)) + 1))
            if seen == total and i == len(buckets) - 1:
                break  # the iterator is exhausted: only the final 100% step follows
    if buckets:
        steps.append((buckets[-1][0], 100.0, total))
    return steps


def format_hgrm(histogram: HdrHistogram) -> str:
    """``histogram`` (nanoseconds) as a percentile distribution file, values in microseconds."""
    scale = UNIT[1]
    lines = [f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}", ""]
    for value, level, count in percentile_steps(histogram):
        fraction = level / 100
        if fraction < 1:
            lines.append(f"{value / scale:12.3f} {fraction:2.12f} {count:10d} {1 / (1 - fraction):14.2f}")
        else:
            lines.append(f"{value / scale:12.3f} {fraction:2.12f} {count:10d}")
    mean, deviation = (v / scale for v in mean_and_deviation(histogram))
    lines.append(f"#[Mean    = {mean:12.3f}, StdDeviation   = {deviation:12.3f}]")
    maximum = histogram.get_max_value() / scale
    lines.append(f"#[Max     = {maximum:12.3f}, Total count    = {histogram.get_total_count():12d}]")
    lines.append(
        f"#[Buckets = {histogram.bucket_count:12d}, SubBuckets     = {histogram.sub_bucket_count:12d}]"
    )
    return "\n".join(lines) + "\n"


def write_hgrm(report: Report, directory: Path) -> list[Path]:
    """Write one ``.hgrm`` file per action type of every phase and run; return their paths."""
    written = []
    prefix = len(report.runs) > 1
    for run in report.runs:
        for phase in run.phases:
            for action in phase.actions_by_type:
                if not action.count:
                    continue
                histogram = HdrHistogram.decode(action.histogram.encode("ascii"))
                name = f"{phase.phase}-{action.action}.hgrm"
                path = directory / (f"{run.commit_policy}-{name}" if prefix else name)
                path.write_text(format_hgrm(histogram))
                written.append(path)
    return written
