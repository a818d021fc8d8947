"""PNG plots of a report: latency CDFs per action type, throughput over time, batched vs eager.

Drawn with matplotlib's Agg backend (no display needed) from the report itself: the CDFs
from the HDR histograms it carries, the throughput from its timeline, so a plot can be redrawn
from a saved report (``plot_report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hdrh.histogram import HdrHistogram

from .metrics import recorded

if TYPE_CHECKING:
    from .report import PhaseReport, Report

__all__ = ("draw_report", "plot_comparison", "plot_report")


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


#: Bar colours of the batched/eager panel, by what the bar measures (the legend says which).
_GREEN: Final = "tab:green"
_BLUE: Final = "tab:blue"
_ORANGE: Final = "tab:orange"
_RED: Final = "tab:red"
_PURPLE: Final = "tab:purple"


def _cdf_plot(ax: Any, curves: list[tuple[str, int, list[tuple[int, int]]]], unit: str) -> None:
    """One step CDF per action type (wall-clock latencies: continuous, spread over decades)."""
    from matplotlib.ticker import NullFormatter

    positive = [value for _, _, buckets in curves for value, _ in buckets if value > 0]
    highest = max(positive, default=1) / 1000
    # A log axis when latencies span more than two decades, else linear.
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
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def _dot_plot(ax: Any, curves: list[tuple[str, int, list[tuple[int, int]]]], unit: str) -> None:
    """One row per action type, a dot per distinct latency sized by its share of the row.

    Virtual latencies are a few discrete modelled costs, shared by many action types: their
    CDFs would be steps on top of one another. Here each type keeps its own row; the share of
    every latency is printed beside its dot (when at least 1%), the p99 is a black tick.
    """
    span = max((value for _, _, buckets in curves for value, _ in buckets), default=1) / 1000
    for row, (_, count, buckets) in enumerate(reversed(curves)):
        xs = [value / 1000 for value, _ in buckets]
        shares = [n / count for _, n in buckets]
        ax.scatter(xs, [row] * len(xs), s=[20 + 380 * share for share in shares], alpha=0.6, zorder=3)
        last, below = -span, False
        for x, share in zip(xs, shares, strict=True):
            if share >= 0.01:
                # Labels of neighbouring dots alternate above and below, so they do not collide.
                below = not below if x - last < 0.06 * span else False
                last = x
                offset = (0, -14) if below else (0, 8)
                ax.annotate(
                    f"{share:.0%}",
                    (x, row),
                    xytext=offset,
                    textcoords="offset points",
                    ha="center",
                    fontsize=6,
                )
        seen, p99 = 0, xs[-1]
        for x, (_, n) in zip(xs, buckets, strict=True):
            seen += n
            if seen >= 0.99 * count:
                p99 = x
                break
        ax.plot([p99, p99], [row - 0.3, row + 0.3], color="black", linewidth=1.5, zorder=4)
    ax.set_yticks(range(len(curves)))
    ax.set_yticklabels([f"{name} ({count:,})" for name, count, _ in reversed(curves)], fontsize=7)
    ax.set_ylim(-0.7, len(curves) - 0.3)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"{unit}latency (us); dot area = share of the type's actions, black tick = p99")
    ax.grid(True, axis="x", alpha=0.3)


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
    """Draw ``report`` into ``path`` (PNG, SVG or PDF by its extension)."""
    import matplotlib.pyplot as plt

    fig = draw_report(report)
    fig.savefig(Path(path), dpi=110)
    plt.close(fig)


def draw_report(report: Report) -> Any:
    """The figure of ``report``: latency per action type, throughput, and batched vs eager.

    Virtual latencies get a dot plot (one row per action type), wall-clock ones CDFs.
    """
    import matplotlib as mpl  # slow import, only needed for --plot

    mpl.use("Agg")
    import matplotlib.pyplot as plt

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
    if report.clock == "virtual":
        _dot_plot(ax, curves, unit)
    else:
        _cdf_plot(ax, curves, unit)
    ax.set_title(f"Latency per action type ({phase.phase}, {run.commit_policy})")

    ax = axes[1]
    for r in report.runs:
        _throughput(ax, r.phases[-1], f"{r.commit_policy}")
    ax.set_xlabel(f"{unit}time since phase start (ms)")
    ax.set_ylabel(f"actions per {unit}second")
    ax.set_title(f"Throughput over time ({phase.phase} phase)")
    ax.set_ylim(bottom=0)
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _short(value)))
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
        colors = [_GREEN, _BLUE, _ORANGE, _RED, _PURPLE]
        bars = ax.bar(labels, [r if r > 0 else floor for r in ratios], color=colors)
        ax.set_yscale("log")
        line = ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
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
        from matplotlib.patches import Patch

        handles = [
            Patch(color=_GREEN, label="throughput (higher is better)"),
            Patch(color=_BLUE, label="commits (lower is better)"),
            Patch(color=_ORANGE, label="TDG.VP.RD, modelled (lower is better)"),
            Patch(color=_RED, label="TDG.VP.WR, modelled (lower is better)"),
            Patch(color=_PURPLE, label="modelled cost (lower is better)"),
            line,
        ]
        legend_labels = [str(h.get_label()) for h in handles[:-1]] + ["eager = 1"]
        ax.legend(handles, legend_labels, fontsize=7, loc="upper right")
    o = report.options
    fig.suptitle(
        f"tdvsm: {o.partitions} partitions x {o.vps} VPs, {o.mix.name}, clock {o.clock}, "
        f"backend {o.backend}, seed {o.seed}",
        fontsize=11,
    )
    return fig


def _histogram_buckets(encoded: str) -> list[tuple[int, int]]:
    return recorded(HdrHistogram.decode(encoded.encode("ascii")))


def plot_comparison(a: Report, b: Report, path: str | Path, names: tuple[str, str]) -> None:
    """Overlay the latency CDFs of two reports: one panel per action type and per operation.

    The last phase of the first run of each report; A is a solid line, B a dashed one in
    another colour, so equal distributions still show both.
    """
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    phase_a, phase_b = a.runs[0].phases[-1], b.runs[0].phases[-1]
    subjects: dict[str, list[str | None]] = {}
    for side, phase in enumerate((phase_a, phase_b)):
        for action in phase.actions_by_type:
            subjects.setdefault(action.action, [None, None])[side] = action.histogram
        for load in phase.workloads:
            subjects.setdefault(f"operation {load.workload}", [None, None])[side] = load.histogram
    titles = sorted(t for t in subjects if not t.startswith("operation ")) + sorted(
        t for t in subjects if t.startswith("operation ")
    )
    columns = 4
    rows = max(1, -(-len(titles) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.0 * rows + 0.8), squeeze=False, constrained_layout=True
    )
    for ax in axes.flat[len(titles) :]:
        ax.set_visible(False)
    for ax, title in zip(axes.flat, titles, strict=False):
        right = 0.0
        for side, (style, colour) in enumerate((("-", "tab:blue"), ("--", "tab:orange"))):
            encoded = subjects[title][side]
            if encoded is None:
                continue
            buckets = _histogram_buckets(encoded)
            if not buckets:
                continue
            xs, ys = _cdf(buckets, 0.0)
            right = max(right, xs[-1])
            count = sum(n for _, n in buckets)
            label = f"{'AB'[side]}: {names[side]} ({count:,})"
            ax.plot(xs, ys, linestyle=style, color=colour, linewidth=2.2 - side, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, right * 1.08 or 1.0)  # room for a step at the largest latency
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    unit = "virtual " if a.clock == b.clock == "virtual" else ""
    fig.supxlabel(f"{unit}latency (us)", fontsize=9)
    fig.supylabel("fraction of actions / operations", fontsize=9)
    fig.suptitle(
        f"tdvsm compare: latency CDFs, {phase_a.phase} phase - A {names[0]} (solid) vs B {names[1]} (dashed)",
        fontsize=11,
    )
    fig.savefig(Path(path), dpi=100)
    plt.close(fig)
