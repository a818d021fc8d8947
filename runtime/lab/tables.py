"""The end-of-run table: the report, as text people read in a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import PhaseReport, Report

__all__ = ("render_table",)


def _us(ns: int) -> str:
    us = ns / 1000
    if us >= 100_000:
        return f"{us / 1000:,.0f}ms"
    if us >= 100:
        return f"{us:,.0f}"
    return f"{us:.2f}"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _phase(lines: list[str], phase: PhaseReport, unit: str) -> None:
    seconds = phase.duration_ns / 1e9
    lines.append(
        f"phase {phase.phase}: {seconds:.6g} {unit}s, {_n(phase.operations)} operations "
        f"({_n(phase.operations_per_second)}/s), {_n(phase.actions)} actions "
        f"({_n(phase.actions_per_second)}/s)"
    )
    header = (
        f"  {'action':<24}{'count':>10}{'per s':>12}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}{'max':>10}"
    )
    lines.append(header + f"   latency in {unit}us")
    for a in phase.actions_by_type:
        lat = a.latency
        lines.append(
            f"  {a.action:<24}{_n(a.count):>10}{_n(a.per_second):>12}{_us(lat.p50):>10}{_us(lat.p90):>10}"
            f"{_us(lat.p99):>10}{_us(lat.p999):>10}{_us(lat.max):>10}"
        )
    lines.append(f"  {'operation (workload)':<24}{'count':>10}{'per s':>12}{'p50':>10}{'p90':>10}{'p99':>10}")
    for w in phase.workloads:
        lat = w.latency
        note = f"   {w.unexpected} unexpected" if w.unexpected else ""
        lines.append(
            f"  {w.workload:<24}{_n(w.operations):>10}{_n(w.per_second):>12}{_us(lat.p50):>10}"
            f"{_us(lat.p90):>10}{_us(lat.p99):>10}{note}"
        )
        lines.extend(f"      e.g. {example[:150]}" for example in w.unexpected_examples[:1])
    c = phase.counters
    lines.append(
        f"  VTL switches {_n(c.vtl_switches)}, secure intercepts {_n(phase.intercepts)}, "
        f"commits {_n(c.commits)}, modelled TDG.VP.RD {_n(c.vmcs_reads)}, TDG.VP.WR {_n(c.vmcs_writes)}, "
        f"mailbox high water {c.mailbox_high_water_max}"
        + (f", failed {phase.failed}" if phase.failed else "")
    )
    if phase.failed_partitions:
        lines.append(f"  partitions ended by a fatal error (DOMAIN 7.2): {len(phase.failed_partitions)}")
        lines.extend(f"      {f.reason[:200]}" for f in phase.failed_partitions[:3])


def render_table(report: Report) -> str:
    """The human summary of ``report``."""
    o = report.options
    loop = (
        f"open loop at {o.rate:,g} ops/s over {o.drivers} drivers"
        if o.rate
        else f"closed loop, {o.drivers} drivers"
    )
    unit = "virtual " if report.clock == "virtual" else ""
    lines = [
        f"tdvsm run: {o.partitions} partitions x {o.vps} VPs, workload {o.mix.name}, {loop}, "
        f"clock {o.clock}, backend {o.backend}, seed {o.seed}"
    ]
    if o.mix.weights and len(o.mix.weights) > 1:
        lines.append("mix: " + ", ".join(f"{k} {v:g}" for k, v in o.mix.weights.items()))
    for run in report.runs:
        lines.append("")
        lines.append(f"== commit policy {run.commit_policy}")
        for phase in run.phases:
            _phase(lines, phase, unit)
    comparison = report.comparison
    if comparison is not None:
        b, e = (run.phases[-1] for run in report.runs)
        lines.append("")
        lines.append(f"== batched vs eager ({comparison.phase} phase)")
        lines.append(f"  {'':<26}{'batched':>14}{'eager':>14}{'batched/eager':>15}")
        rows = [
            ("operations per second", b.operations_per_second, e.operations_per_second),
            ("actions per second", b.actions_per_second, e.actions_per_second),
            ("commits", b.counters.commits, e.counters.commits),
            ("modelled TDG.VP.RD", b.counters.vmcs_reads, e.counters.vmcs_reads),
            ("modelled TDG.VP.WR", b.counters.vmcs_writes, e.counters.vmcs_writes),
            (
                "modelled TDCALLs",
                b.counters.vmcs_reads + b.counters.vmcs_writes,
                e.counters.vmcs_reads + e.counters.vmcs_writes,
            ),
            ("modelled cycles", b.modelled.total_cycles, e.modelled.total_cycles),
        ]
        for label, x, y in rows:
            ratio = f"{x / y:.3g}x" if y else "-"
            lines.append(f"  {label:<26}{_n(x):>14}{_n(y):>14}{ratio:>15}")
    if report.thresholds:
        failed = sum(1 for t in report.thresholds if not t.passed)
        lines.append("")
        lines.append(f"thresholds: {len(report.thresholds) - failed} passed, {failed} failed")
        for t in report.thresholds:
            mark = "ok  " if t.passed else "FAIL"
            lines.append(f"  {mark} {t.expression:<34} {t.run} {t.phase}: {t.note}")
    if report.warnings:
        lines.append("")
        lines.extend(f"warning: {warning}" for warning in report.warnings)
    illustrative = sum(1 for p in report.cost_model.parameters if p.used and p.status == "illustrative")
    used = sum(1 for p in report.cost_model.parameters if p.used)
    lines.append("")
    if report.clock == "virtual":
        lines.append(
            f"virtual time: modelled latencies ({report.cost_model.source}); "
            f"{illustrative} of the {used} parameters used are illustrative, not measured (see the report)"
        )
    else:
        lines.append(
            "latencies are wall-clock time of the simulator on this host (--clock virtual models TDX costs)"
        )
    return "\n".join(lines)
