"""The plots: virtual latencies as a dot plot with a row per action type; bar colours explained."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import matplotlib.pyplot as plt
import msgspec

from runtime.lab.costs import CostModel
from runtime.lab.experiment import ExperimentOptions, run_experiment
from runtime.lab.plots import draw_report
from runtime.lab.report import Report, build_report
from runtime.lab.workloads import resolve

if TYPE_CHECKING:
    from runtime.lab.records import ClockName, PolicyName


def _report(clock: ClockName, policies: tuple[PolicyName, ...] = ("batched",)) -> Report:
    base = ExperimentOptions(
        partitions=3,
        vps=2,
        workload="mixed",
        mix=resolve("mixed"),
        duration=None,
        ops=150,
        drivers=2,
        rate=None,
        backend="asyncio",
        clock=clock,
        commit_policy="batched",
        seed=2,
        trace_vps=0,
    )
    runs = [
        anyio.run(run_experiment, msgspec.structs.replace(base, commit_policy=p), CostModel())
        for p in policies
    ]
    return build_report(runs, CostModel())


def test_virtual_latencies_get_one_row_per_action_type() -> None:
    """Virtual time: the first panel has a labelled row per action type, a dot per distinct
    latency (not CDF lines that would hide one another), and a p99 tick per row."""
    report = _report("virtual")
    phase = report.runs[0].phases[-1]
    fig = draw_report(report)
    try:
        ax = fig.axes[0]
        labels = [tick.get_text() for tick in ax.get_yticklabels()]
        expected = [f"{a.action} ({a.count:,})" for a in reversed(phase.actions_by_type)]
        assert labels == expected
        dots = ax.collections
        assert len(dots) == len(phase.actions_by_type)  # one scatter per row
        for row, collection in enumerate(dots):
            ys = {round(y, 6) for _, y in collection.get_offsets()}
            assert ys == {row}  # every dot of a type sits on its own row
        assert len(ax.lines) == len(phase.actions_by_type)  # the p99 ticks
        assert "dot area" in ax.get_xlabel()
    finally:
        plt.close(fig)


def test_wall_clock_latencies_keep_cdfs() -> None:
    """Real clock: continuous latencies over decades stay step CDFs, one line per action type."""
    report = _report("real")
    fig = draw_report(report)
    try:
        ax = fig.axes[0]
        assert ax.get_ylabel() == "fraction of actions"
        assert len(ax.get_lines()) == len(report.runs[0].phases[-1].actions_by_type)
    finally:
        plt.close(fig)


def test_batching_bars_have_a_colour_legend() -> None:
    """--compare-policies: the bar panel's legend says what each colour measures."""
    fig = draw_report(_report("virtual", ("batched", "eager")))
    try:
        bars = fig.axes[2]
        texts = [text.get_text() for text in bars.get_legend().get_texts()]
        assert texts == [
            "throughput (higher is better)",
            "commits (lower is better)",
            "TDG.VP.RD, modelled (lower is better)",
            "TDG.VP.WR, modelled (lower is better)",
            "modelled cost (lower is better)",
            "eager = 1",
        ]
        legend = [handle.get_facecolor()[:3] for handle in bars.get_legend().legend_handles[:5]]
        colours = [patch.get_facecolor()[:3] for patch in bars.patches]  # a zero ratio's bar is faded
        assert colours == legend  # bar i has the colour the legend gives its measure
        assert len(set(colours)) == 5
    finally:
        plt.close(fig)
