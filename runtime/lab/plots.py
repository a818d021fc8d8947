"""PNG plots of a report: latency CDFs per action type, throughput over time, batched vs eager.

Drawn with matplotlib's Agg backend (no display needed) from the report itself: the CDFs
from the HDR histograms it carries, the throughput from its timeline, so a plot can be redrawn
from a saved report (``plot_report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from .metrics import recorded

if TYPE_CHECKING:
    from .report import PhaseReport, Report

__all__ = ("plot_report",)


def _cdf(buckets: list[tuple[int, int]], floor_us: float) -> tuple[list[float], list[float]]:
    """Step CDF through every recorded bucket (x in us; values below ``floor_us`` drawn there)."""
    total = sum(count for _, count in buckets)
    xs: list[float] = []
    ys: list[float] = []
    seen = 0
    for value, count in buckets:
        x = max(value / 1000, floor_us)
        xs.extend((x, x))
        ys.extend((seen / total, (seen + count) / total))
        seen += count
    return xs, ys


def _short(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _throughput(ax: Any, phase: PhaseReport, label: str) -> None:
    width = phase.timeline.bucket_ns
    counts = phase.timeline.counts
    times, rates = [], []
    for i, count in enumerate(counts):
        # The last bucket ends with the phase: divide by the part of it the phase covered.
        span = min(width, phase.duration_ns - i * width) if i == len(counts) - 1 else width
        if span > 0:
            times.append((i * width + span / 2) / 1e6)
            rates.append(count / (span / 1e9))
    ax.plot(times, rates, label=label, drawstyle="steps-mid")


def plot_report(report: Report, path: str | Path) -> None:
    """Draw ``report`` into a PNG at ``path``."""
    import matplotlib as mpl  # slow import, only needed for --plot

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    compare = report.comparison is not None
    unit = "virtual " if report.clock == "virtual" else ""
    columns = 3 if compare else 2
    fig, axes = plt.subplots(1, columns, figsize=(6.2 * columns, 5.2), constrained_layout=True)
    run = report.runs[0]
    phase = run.phases[-1]
    ax = axes[0]
    curves = [
        (action.action, action.count, recorded(HdrHistogram.decode(action.histogram.encode("ascii"))))
        for action in phase.actions_by_type
        if action.count
    ]
    positive = [value for _, _, buckets in curves for value, _ in buckets if value > 0]
    highest = max(positive, default=1) / 1000
    # A log axis when latencies span more than two decades (wall clock), else linear
    # (virtual latencies are a few discrete costs within one decade or so).
    log = bool(positive) and highest / (min(positive) / 1000) > 100
    floor_us = min(positive) / 2000 if log else 0.0
    for name, count, buckets in curves:
        xs, ys = _cdf(buckets, floor_us)
        ax.plot(xs, ys, label=f"{name} ({count:,})")
    if log:
        ax.set_xscale("log")
        ax.set_xlim(left=floor_us * 0.9)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{unit}latency (us, log scale; 0 drawn at the left edge)")
    else:
        ax.set_xlim(left=0, right=highest * 1.05)
        ax.set_xlabel(f"{unit}latency (us)")
    ax.set_ylabel("fraction of actions")
    ax.set_title(f"Latency CDF per action type ({phase.phase}, {run.commit_policy})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    for r in report.runs:
        _throughput(ax, r.phases[-1], f"{r.commit_policy}")
    ax.set_xlabel(f"{unit}time since phase start (ms)")
    ax.set_ylabel(f"actions per {unit}second")
    ax.set_title(f"Throughput over time ({phase.phase} phase)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    if compare:
        ax = axes[2]
        batched, eager = (r.phases[-1] for r in report.runs)
        labels = ["operations/s", "commits", "TDG.VP.RD", "TDG.VP.WR", "modelled\ncycles"]
        values = [
            (batched.operations_per_second, eager.operations_per_second),
            (batched.counters.commits, eager.counters.commits),
            (batched.counters.vmcs_reads, eager.counters.vmcs_reads),
            (batched.counters.vmcs_writes, eager.counters.vmcs_writes),
            (batched.modelled.total_cycles, eager.modelled.total_cycles),
        ]
        ratios: list[float] = [b / e if e else 0.0 for b, e in values]
        # A log axis: the TDCALL ratios are orders of magnitude below 1, throughput above it.
        # A zero ratio (batched never reads) has no bar; its label sits on the axis floor.
        floor = min([*(r for r in ratios if r > 0), 1.0]) / 4
        colors = ["tab:green", "tab:blue", "tab:orange", "tab:red", "tab:purple"]
        bars = ax.bar(labels, [r if r > 0 else floor for r in ratios], color=colors)
        ax.set_yscale("log")
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="eager = 1")
        for bar, ratio, (b, e) in zip(bars, ratios, values, strict=True):
            if ratio <= 0:
                bar.set_alpha(0.15)
            ax.annotate(
                f"{ratio:.3g}x\n{_short(b)} vs {_short(e)}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_ylabel("batched / eager (log scale)")
        ax.set_title("What batching buys (batched / eager)")
        ax.set_ylim(floor / 2, max([*ratios, 1.0]) * 8)
        ax.legend(fontsize=8, loc="upper right")
    o = report.options
    fig.suptitle(
        f"tdvsm: {o.partitions} partitions x {o.vps} VPs, {o.mix.name}, clock {o.clock}, "
        f"backend {o.backend}, seed {o.seed}",
        fontsize=11,
    )
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)
