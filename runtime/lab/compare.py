"""``tdvsm compare A.json B.json``: two run reports side by side, with ratios B/A.

Runs are paired by position (the first run of A with the first of B, and so on: with
``--compare-policies`` a report holds batched then eager) and phases by name. Per phase, per
action type and per operation (workload), two tables: latency (p50, p99, p99.9) and work
(throughput, TDCALLs, commits), each metric as A, B and B/A. A ratio is ``-`` where A is zero
or a side has no such row. The phase totals and the options that differ come first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from .report import SCHEMA, PhaseReport, Report
from .usage import UsageError

if TYPE_CHECKING:
    from .report import ActionReport, WorkloadReport

__all__ = ("load_report", "render_comparison", "tdcalls")

_NAME: Final = 23


def load_report(path: str) -> Report:
    """Decode a ``tdvsm run --report`` file.

    Raises:
        UsageError: the file cannot be read or is not a tdvsm run report (one line).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        msg = f"cannot read report {path}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    try:
        header = msgspec.json.decode(data, type=_Header)
    except msgspec.DecodeError as exc:
        msg = f"{path} is not a tdvsm run report: {str(exc).splitlines()[0]}"
        raise UsageError(msg) from None
    if header.tool != "tdvsm" or not header.schema.startswith("tdvsm.report/"):
        msg = f"{path} is not a tdvsm run report (schema {header.schema!r})"
        raise UsageError(msg)
    if header.schema != SCHEMA:
        msg = f"{path} has schema {header.schema!r}; this tdvsm reads {SCHEMA!r}: rerun it with this version"
        raise UsageError(msg)
    try:
        return msgspec.json.decode(data, type=Report)
    except msgspec.DecodeError as exc:
        msg = f"{path} is not a valid {SCHEMA} report: {str(exc).splitlines()[0]}"
        raise UsageError(msg) from None


class _Header(msgspec.Struct):
    """What identifies a report, read before the rest."""

    schema: str = ""
    tool: str = ""


def tdcalls(row: ActionReport | WorkloadReport | PhaseReport) -> int:
    """Modelled TDCALLs of a row: its TDG.VP.RD plus TDG.VP.WR."""
    counted = row.counters if isinstance(row, PhaseReport) else row
    return counted.vmcs_reads + counted.vmcs_writes


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not a:
        return "-"
    ratio = b / a
    return f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.2f}x"


def _compact(value: float) -> str:
    """At most 7 characters: 99,999 then 123k then 1.23M."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e5:
        return f"{value / 1e3:.0f}k"
    return f"{value:,.0f}"


def _us(ns: int | None) -> str:
    if ns is None:
        return "-"
    us = ns / 1000
    return _compact(us) if us >= 1000 else f"{us:.2f}"


def _n(value: float | None) -> str:
    return "-" if value is None else _compact(value)


def _options_line(name: str, path: str, report: Report) -> str:
    o = report.options
    return (
        f"{name} = {path}: {o.partitions} x {o.vps} VPs, workload {o.mix.name}, clock {o.clock}, "
        f"{o.commit_policy}, backend {o.backend}, seed {o.seed}"
    )


def _differences(a: Report, b: Report) -> list[str]:
    left, right = msgspec.structs.asdict(a.options), msgspec.structs.asdict(b.options)
    return [f"{key} {left[key]!r} -> {right[key]!r}" for key in left if left[key] != right.get(key)]


def _rows(
    phase_a: PhaseReport | None, phase_b: PhaseReport | None
) -> list[tuple[str, ActionReport | WorkloadReport | None, ActionReport | WorkloadReport | None]]:
    """(label, row of A, row of B) for every action type, then every workload, of either side."""
    actions_a = {a.action: a for a in phase_a.actions_by_type} if phase_a else {}
    actions_b = {a.action: a for a in phase_b.actions_by_type} if phase_b else {}
    loads_a = {w.workload: w for w in phase_a.workloads} if phase_a else {}
    loads_b = {w.workload: w for w in phase_b.workloads} if phase_b else {}
    rows: list[tuple[str, ActionReport | WorkloadReport | None, ActionReport | WorkloadReport | None]] = [
        (name, actions_a.get(name), actions_b.get(name))
        for name in sorted(actions_a.keys() | actions_b.keys())
    ]
    rows += [
        (f"op {name}", loads_a.get(name), loads_b.get(name))
        for name in sorted(loads_a.keys() | loads_b.keys())
    ]
    return rows


def _cells(a: float | None, b: float | None) -> str:
    return f"{_n(a):>9}{_n(b):>9}{_ratio(a, b):>7}"


def _latency_cells(a: int | None, b: int | None) -> str:
    return f"{_us(a):>9}{_us(b):>9}{_ratio(a, b):>7}"


def _phase_block(
    lines: list[str], name: str, a: PhaseReport | None, b: PhaseReport | None, unit: str
) -> None:
    lines.append(f"== {name}")
    totals = (
        ("operations per second", lambda p: p.operations_per_second),
        ("actions per second", lambda p: p.actions_per_second),
        ("commits", lambda p: p.counters.commits),
        ("TDCALLs (modelled)", tdcalls),
        ("modelled cycles", lambda p: p.modelled.total_cycles),
    )
    lines.append(f"  {'phase':<{_NAME}}{'A':>18}{'B':>18}{'B/A':>8}")
    for label, get in totals:
        x = get(a) if a is not None else None
        y = get(b) if b is not None else None
        shown = ("-" if v is None else f"{v:,.0f}" for v in (x, y))
        lines.append(f"  {label:<{_NAME}}{next(shown):>18}{next(shown):>18}{_ratio(x, y):>8}")
    rows = _rows(a, b)
    head = "".join(f"{m + ' A':>9}{m + ' B':>9}{'B/A':>7}" for m in ("p50", "p99", "p99.9"))
    lines.append(f"  {'latency, ' + unit + 'us':<{_NAME}}{head}")
    for label, x, y in rows:
        cells = "".join(
            _latency_cells(
                getattr(x.latency, field) if x is not None else None,
                getattr(y.latency, field) if y is not None else None,
            )
            for field in ("p50", "p99", "p999")
        )
        lines.append(f"  {label[:_NAME]:<{_NAME}}{cells}")
    head = "".join(f"{m + ' A':>9}{m + ' B':>9}{'B/A':>7}" for m in ("per s", "TDCALL", "commit"))
    lines.append(f"  {'work':<{_NAME}}{head}")
    for label, x, y in rows:
        cells = (
            _cells(x.per_second if x else None, y.per_second if y else None)
            + _cells(tdcalls(x) if x else None, tdcalls(y) if y else None)
            + _cells(x.commits if x else None, y.commits if y else None)
        )
        lines.append(f"  {label[:_NAME]:<{_NAME}}{cells}")


def render_comparison(a: Report, b: Report, path_a: str, path_b: str) -> str:
    """The side-by-side text of two reports."""
    lines = [_options_line("A", path_a, a), _options_line("B", path_b, b)]
    differences = _differences(a, b)
    lines.append("differs: " + ("; ".join(differences) if differences else "nothing in the options"))
    if a.clock != b.clock:
        lines.append("warning: A and B use different clocks; their latencies are not comparable")
    unit = "virtual " if a.clock == b.clock == "virtual" else ""
    for i, (run_a, run_b) in enumerate(zip(a.runs, b.runs, strict=False)):
        phases = [p.phase for p in run_a.phases]
        phases += [p.phase for p in run_b.phases if p.phase not in phases]
        for name in phases:
            x = next((p for p in run_a.phases if p.phase == name), None)
            y = next((p for p in run_b.phases if p.phase == name), None)
            lines.append("")
            title = f"{name} phase, run {i + 1}: A {run_a.commit_policy}, B {run_b.commit_policy}"
            _phase_block(lines, title, x, y, unit)
    if len(a.runs) != len(b.runs):
        lines.append("")
        paired = min(len(a.runs), len(b.runs))
        lines.append(f"note: A has {len(a.runs)} run(s), B {len(b.runs)}: only the first {paired} are paired")
    lines.append("")
    lines.append("ratios are B/A; latencies from the reports' HDR percentiles (3 significant digits)")
    return "\n".join(lines)
