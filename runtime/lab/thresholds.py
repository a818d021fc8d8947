"""``--threshold`` checks, as k6 has them: pass/fail criteria on a run's report.

A threshold is ``[PHASE:]SUBJECT.METRIC OP VALUE[UNIT]``, e.g. ``SetVpRegisters.p99<5us``,
``exits.per_second>=100000`` or ``boot:phase.failed==0``:

* ``PHASE`` is ``boot`` or ``operations`` (default: the run's last phase);
* ``SUBJECT`` is an action type (``SetVpRegisters``), a workload (``vtl-pingpong``, ``boot``)
  or ``phase`` (the whole phase);
* ``METRIC`` of an action type or workload: ``count``, ``per_second``, ``mean``, ``p50``,
  ``p90``, ``p99``, ``p99.9``, ``max``, ``commits``, ``vmcs_writes`` (and ``unexpected`` for a
  workload); of ``phase``: ``operations``, ``actions``, ``per_second`` (operations),
  ``actions_per_second``, ``failed``, ``intercepts``, ``commits``, ``vmcs_writes``;
* ``OP`` is one of ``<``, ``<=``, ``>``, ``>=``, ``==``;
* latencies need a unit (``ns``, ``us``, ``ms``, ``s``); other metrics take a plain number.

Every threshold is checked on every run of the report (both with ``--compare-policies``); the
results are listed in the report, and ``tdvsm run`` exits with ``THRESHOLD_FAILED`` when one
fails. A subject the phase never saw fails: an unchecked threshold must not pass silently.
"""

from __future__ import annotations

import operator
import re
import typing
from typing import TYPE_CHECKING, Final, final

import protocol

from .report import ActionReport, ThresholdResult
from .workloads import describe

if TYPE_CHECKING:
    from collections.abc import Callable

    from .report import PhaseReport, Report, WorkloadReport

__all__ = ("THRESHOLD_FAILED", "Threshold", "ThresholdError", "check_thresholds", "parse_threshold")

#: Exit status of ``tdvsm run`` when a threshold fails (k6 uses the same).
THRESHOLD_FAILED: Final = 99

_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_UNITS: Final = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_LATENCY: Final = {"mean": "mean", "p50": "p50", "p90": "p90", "p99": "p99", "p99.9": "p999", "max": "max"}
_COUNTS: Final = ("count", "per_second", "commits", "vmcs_writes")
_PHASE_METRICS: Final = (
    "operations",
    "actions",
    "per_second",
    "actions_per_second",
    "failed",
    "intercepts",
    "commits",
    "vmcs_writes",
)
_PHASES: Final = ("boot", "operations")
_PATTERN: Final = re.compile(
    r"^\s*(?:(?P<phase>[a-z]+):)?(?P<subject>[A-Za-z][\w-]*)\.(?P<metric>[a-z_]+[0-9.]*)\s*"
    r"(?P<op><=|>=|==|<|>)\s*(?P<value>[-+0-9.eE_]+)\s*(?P<unit>[a-zµ/]*)\s*$"
)


class ThresholdError(ValueError):
    """Raised when a threshold expression cannot be parsed or names something unknown."""


def _action_names() -> frozenset[str]:
    return frozenset(cls.__name__ for cls in typing.get_args(protocol.Action))


@final
class Threshold:
    """One parsed threshold (see the module docstring for the syntax)."""

    __slots__ = ("expression", "limit", "metric", "op", "phase", "subject")

    def __init__(self, expression: str, phase: str | None, subject: str, metric: str, op: str, limit: float):
        self.expression = expression
        self.phase = phase
        self.subject = subject
        self.metric = metric
        self.op = op
        self.limit = limit

    def __repr__(self) -> str:
        return f"<Threshold {self.expression!r}>"

    def observe(self, phase: PhaseReport) -> float | None:
        """The metric's value in ``phase`` (ns for latencies), or None if the subject is absent."""
        if self.subject == "phase":
            value: float = {
                "operations": phase.operations,
                "actions": phase.actions,
                "per_second": phase.operations_per_second,
                "actions_per_second": phase.actions_per_second,
                "failed": phase.failed,
                "intercepts": phase.intercepts,
                "commits": phase.counters.commits,
                "vmcs_writes": phase.counters.vmcs_writes,
            }[self.metric]
            return value
        row: ActionReport | WorkloadReport | None = next(
            (a for a in phase.actions_by_type if a.action == self.subject), None
        ) or next((w for w in phase.workloads if w.workload == self.subject), None)
        if row is None:
            return None
        if self.metric in _LATENCY:
            latency: int = getattr(row.latency, _LATENCY[self.metric])
            return latency
        if self.metric == "count":
            return row.count if isinstance(row, ActionReport) else row.operations
        observed: float = getattr(row, self.metric)
        return observed

    def passes(self, observed: float) -> bool:
        """Whether ``observed`` meets the threshold."""
        return _OPERATORS[self.op](observed, self.limit)


def parse_threshold(expression: str) -> Threshold:
    """Parse one threshold expression.

    Raises:
        ThresholdError: bad syntax, an unknown phase, subject or metric, a latency without a
            unit, or a unit on a metric that is not a latency (one line saying which).
    """
    match = _PATTERN.match(expression)
    if match is None:
        msg = (
            f"--threshold {expression!r}: expected [PHASE:]SUBJECT.METRIC OP VALUE[UNIT], "
            "e.g. 'SetVpRegisters.p99<5us'"
        )
        raise ThresholdError(msg)
    phase, subject, metric = match["phase"], match["subject"], match["metric"]
    if phase is not None and phase not in _PHASES:
        msg = f"--threshold {expression!r}: unknown phase {phase!r} (known: {', '.join(_PHASES)})"
        raise ThresholdError(msg)
    workloads = {name for name, _ in describe()}
    if subject == "phase":
        metrics: tuple[str, ...] = _PHASE_METRICS
    elif subject in _action_names():
        metrics = (*_COUNTS, *_LATENCY)
    elif subject in workloads:
        metrics = (*_COUNTS, *_LATENCY, "unexpected")
    else:
        msg = (
            f"--threshold {expression!r}: unknown subject {subject!r} "
            "(an action type such as SetVpRegisters, a workload such as exits, or 'phase')"
        )
        raise ThresholdError(msg)
    if metric == "p999":
        metric = "p99.9"
    if metric not in metrics:
        msg = f"--threshold {expression!r}: {subject} has no metric {metric!r} (known: {', '.join(metrics)})"
        raise ThresholdError(msg)
    try:
        value = float(match["value"].replace("_", ""))
    except ValueError:
        msg = f"--threshold {expression!r}: {match['value']!r} is not a number"
        raise ThresholdError(msg) from None
    unit = match["unit"]
    if metric in _LATENCY and subject != "phase":
        if unit not in _UNITS:
            msg = f"--threshold {expression!r}: a latency needs a unit: ns, us, ms or s"
            raise ThresholdError(msg)
        value *= _UNITS[unit]
    elif unit not in ("", "/s") or (unit == "/s" and "per_second" not in metric):
        msg = f"--threshold {expression!r}: {metric} takes a plain number, not {unit!r}"
        raise ThresholdError(msg)
    return Threshold(expression.strip(), phase, subject, metric, match["op"], value)


def _shown(threshold: Threshold, value: float) -> str:
    if threshold.metric in _LATENCY and threshold.subject != "phase":
        return f"{value / 1000:,.3f} us"
    return f"{value:,.6g}"


def check_thresholds(report: Report, thresholds: list[Threshold]) -> list[ThresholdResult]:
    """Check every threshold on every run of ``report``."""
    results = []
    for run in report.runs:
        for threshold in thresholds:
            wanted = threshold.phase or run.phases[-1].phase
            phase = next((p for p in run.phases if p.phase == wanted), None)
            observed = threshold.observe(phase) if phase is not None else None
            if observed is None:
                where = (
                    f"no {wanted} phase" if phase is None else f"no {threshold.subject} in the {wanted} phase"
                )
                results.append(
                    ThresholdResult(
                        expression=threshold.expression,
                        run=run.commit_policy,
                        phase=wanted,
                        observed=None,
                        passed=False,
                        note=f"{where}: cannot be checked",
                    )
                )
                continue
            passed = threshold.passes(observed)
            results.append(
                ThresholdResult(
                    expression=threshold.expression,
                    run=run.commit_policy,
                    phase=wanted,
                    observed=observed,
                    passed=passed,
                    note=f"observed {_shown(threshold, observed)}",
                )
            )
    return results
