"""The run report: its schema (msgspec Structs), how it is built from measurements, and its table.

The JSON report is ``Report`` encoded with sorted dictionary keys. All times are integer
nanoseconds (``time_unit``); with ``--clock virtual`` they are virtual (``runtime.costs``).
Everything outside ``Report.wall`` depends only on the options: with the virtual clock the
same seed and options give the same bytes, and ``wall`` (host facts and wall-clock times) is
left out unless asked for. README.md "Report schema" documents every field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import msgspec

from .cells import ClusterReport, ShardReport
from .costs import CostModel, CostParameter, action_kind, describe
from .metrics import LatencyStats, encode, latency_stats
from .records import RATE_HELD, Counters, ExperimentOptions, RunData
from .wall import WallReport, rate, wall_report

if TYPE_CHECKING:
    from .records import PhaseData

__all__ = (
    "SCHEMA",
    "ActionReport",
    "Comparison",
    "CostReport",
    "FailedPartition",
    "ModelledCost",
    "OpenLoopReport",
    "PhaseReport",
    "Report",
    "RunReport",
    "ThresholdResult",
    "TimelineReport",
    "WallReport",
    "WorkloadReport",
    "build_report",
    "encode_report",
)

SCHEMA: Final = "tdvsm.report/2"


class ActionReport(msgspec.Struct, frozen=True, kw_only=True):
    """One action type in one phase: how many, how fast, how long, with which outcomes."""

    action: str
    count: int
    per_second: float
    latency: LatencyStats
    outcomes: dict[str, int]
    histogram: str
    #: Commits and modelled TDG.VP.RD / TDG.VP.WR the VP did during actions of this type.
    commits: int = 0
    vmcs_reads: int = 0
    vmcs_writes: int = 0


class WorkloadReport(msgspec.Struct, frozen=True, kw_only=True):
    """One workload in one phase: its operations (each a short action sequence on one VP)."""

    workload: str
    operations: int
    per_second: float
    latency: LatencyStats
    unexpected: int
    unexpected_examples: list[str]
    histogram: str
    #: Commits and modelled TDG.VP.RD / TDG.VP.WR during this workload's operations.
    commits: int = 0
    vmcs_reads: int = 0
    vmcs_writes: int = 0


class OpenLoopReport(msgspec.Struct, frozen=True, kw_only=True):
    """Whether an open-loop phase held its target rate.

    ``held`` is false when the achieved rate is under ``RATE_HELD`` (95%) of the target.
    ``never_started`` counts operations due inside the duration that had not started when the
    grace period (``grace_ns`` past the duration) ran out.
    """

    target_per_second: float
    achieved_per_second: float
    ratio: float
    held: bool
    never_started: int
    grace_ns: int | None


class TimelineReport(msgspec.Struct, frozen=True, kw_only=True):
    """Actions completed per ``bucket_ns`` since the phase started."""

    bucket_ns: int
    counts: list[int]


class ModelledCost(msgspec.Struct, frozen=True, kw_only=True):
    """What the phase's actions cost under the cost model, by component (cycles).

    ``vmcs_reads``/``vmcs_writes`` are the modelled TDG.VP.RD/WR at ``tdcall_vp_rd``/``_wr``.
    """

    exits_and_hypercalls: int
    vtl_switches: int
    secure_intercepts: int
    vmcs_reads: int
    vmcs_writes: int
    commits: int
    total_cycles: int
    total_ns: int


class FailedPartition(msgspec.Struct, frozen=True, kw_only=True):
    """A partition a fatal condition ended during the phase (DOMAIN 7.2), and why."""

    partition: int
    reason: str


class PhaseReport(msgspec.Struct, frozen=True, kw_only=True):
    """One phase (``boot`` or ``operations``)."""

    phase: str
    duration_ns: int
    operations: int
    actions: int
    operations_per_second: float
    actions_per_second: float
    failed: int
    failed_partitions: list[FailedPartition]
    intercepts: int
    counters: Counters
    modelled: ModelledCost
    actions_by_type: list[ActionReport]
    workloads: list[WorkloadReport]
    timeline: TimelineReport
    open_loop: OpenLoopReport | None = None


class RunReport(msgspec.Struct, frozen=True, kw_only=True):
    """One run under one commit policy (``shards``: None unless the run was sharded)."""

    commit_policy: str
    phases: list[PhaseReport]
    traced_vps: list[str]
    shards: list[ShardReport] | None = None


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """Batched vs eager on the same seeded experiment: ratios batched / eager (last phase).

    ``tdcalls`` is the ratio of modelled TDG.VP.RD + TDG.VP.WR (DOMAIN 7.1).
    """

    phase: str
    operations_per_second: float
    actions_per_second: float
    commits: float
    vmcs_reads: float
    vmcs_writes: float
    tdcalls: float
    modelled_cycles: float
    p99_by_action: dict[str, float]


class CostReport(msgspec.Struct, frozen=True, kw_only=True):
    """The cost model in force; ``illustrative`` values rest on no measurement (see ``note``)."""

    source: str
    note: str
    parameters: list[CostParameter]


class ThresholdResult(msgspec.Struct, frozen=True, kw_only=True):
    """One ``--threshold`` check on one run: what was observed and whether it passed."""

    expression: str
    run: str
    phase: str
    observed: float | None
    passed: bool
    note: str = ""


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """The whole report of ``tdvsm run``."""

    schema: str
    tool: str
    time_unit: Literal["ns"]
    clock: str
    deterministic: bool
    options: ExperimentOptions
    cost_model: CostReport
    runs: list[RunReport]
    comparison: Comparison | None
    wall: WallReport | None
    #: Things a reader must not miss (an open-loop rate that was not held, ...).
    warnings: list[str] = []
    thresholds: list[ThresholdResult] = []
    cluster: ClusterReport | None = None


_COST_NOTE: Final = (
    "Virtual latencies are modelled, not measured. The defaults and the evidence behind each "
    "(the codes E1-E14, N1-N3 in 'basis') are in tdvsm's README 'Cost model' and in the "
    "runtime.lab.costs module; parameters with status 'illustrative' rest on no public measurement."
)
#: Where the defaults of the cost model are documented (shipped with the package).
DEFAULT_COST_SOURCE: Final = "tdvsm defaults, README 'Cost model'"


def _modelled(phase: PhaseData, costs: CostModel) -> ModelledCost:
    base = switches = intercepts = 0
    for (action, outcome), count in phase.recorder.outcomes.items():
        if outcome == "Intercepted":
            intercepts += count * costs.secure_intercept_delivery
        elif outcome == "VtlSwitched":
            switches += count * costs.vtl_switch
        else:
            base += count * costs.charge(action_kind(action), outcome, 0, 0, 0, 0)
    reads = costs.tdcalls(phase.counters.vmcs_reads, 0)
    writes = costs.tdcalls(0, phase.counters.vmcs_writes)
    commits = phase.counters.commits * costs.commit_fixed
    total = base + switches + intercepts + reads + writes + commits
    return ModelledCost(
        exits_and_hypercalls=base,
        vtl_switches=switches,
        secure_intercepts=intercepts,
        vmcs_reads=reads,
        vmcs_writes=writes,
        commits=commits,
        total_cycles=total,
        total_ns=costs.ns(total),
    )


def _phase(phase: PhaseData, costs: CostModel) -> PhaseReport:
    recorder = phase.recorder
    ns = phase.duration_ns
    outcomes: dict[str, dict[str, int]] = {}
    for (action, outcome), count in recorder.outcomes.items():
        outcomes.setdefault(action, {})[outcome] = count
    actions = [
        ActionReport(
            action=name,
            count=histogram.get_total_count(),
            per_second=rate(histogram.get_total_count(), ns),
            latency=latency_stats(histogram),
            outcomes=outcomes.get(name, {}),
            histogram=encode(histogram),
            commits=recorder.action_work.get(name, _NO_WORK)[0],
            vmcs_reads=recorder.action_work.get(name, _NO_WORK)[1],
            vmcs_writes=recorder.action_work.get(name, _NO_WORK)[2],
        )
        for name, histogram in sorted(recorder.histograms.items())
    ]
    workloads = [
        WorkloadReport(
            workload=name,
            operations=histogram.get_total_count(),
            per_second=rate(histogram.get_total_count(), ns),
            latency=latency_stats(histogram),
            unexpected=recorder.unexpected_counts.get(name, 0),
            unexpected_examples=recorder.unexpected.get(name, []),
            histogram=encode(histogram),
            commits=recorder.episode_work.get(name, _NO_WORK)[0],
            vmcs_reads=recorder.episode_work.get(name, _NO_WORK)[1],
            vmcs_writes=recorder.episode_work.get(name, _NO_WORK)[2],
        )
        for name, histogram in sorted(recorder.episodes.items())
    ]
    operations = recorder.episode_count
    intercepts = sum(c for (_, outcome), c in recorder.outcomes.items() if outcome == "Intercepted")
    return PhaseReport(
        phase=phase.name,
        duration_ns=ns,
        operations=operations,
        actions=recorder.actions,
        operations_per_second=rate(operations, ns),
        actions_per_second=rate(recorder.actions, ns),
        failed=phase.failed,
        failed_partitions=[
            FailedPartition(partition=pid, reason=reason)
            for pid, reason in sorted(phase.partition_failures.items())
        ],
        intercepts=intercepts,
        counters=phase.counters,
        modelled=_modelled(phase, costs),
        actions_by_type=actions,
        workloads=workloads,
        timeline=TimelineReport(bucket_ns=recorder.timeline.width, counts=list(recorder.timeline.counts)),
        open_loop=_open_loop(phase, rate(operations, ns)),
    )


_NO_WORK: Final = (0, 0, 0)


def _open_loop(phase: PhaseData, achieved: float) -> OpenLoopReport | None:
    if phase.rate is None:
        return None
    ratio = round(achieved / phase.rate, 3)
    return OpenLoopReport(
        target_per_second=phase.rate,
        achieved_per_second=achieved,
        ratio=ratio,
        held=achieved >= RATE_HELD * phase.rate,
        never_started=phase.never_started,
        grace_ns=phase.grace_ns,
    )


def _warnings(runs: list[RunReport]) -> list[str]:
    """What a reader must not miss, one sentence each."""
    warnings = []
    for run in runs:
        for phase in run.phases:
            loop = phase.open_loop
            if loop is not None and not loop.held:
                missed = f"; {loop.never_started:,} operations never started" if loop.never_started else ""
                warnings.append(
                    f"{run.commit_policy} {phase.phase}: open loop did not hold its rate: "
                    f"{loop.achieved_per_second:,.0f} of {loop.target_per_second:,.0f} operations/s "
                    f"({loop.ratio:.0%}){missed}; latencies count from the intended starts"
                )
    return warnings


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _compare(batched: RunReport, eager: RunReport) -> Comparison:
    b, e = batched.phases[-1], eager.phases[-1]
    eager_p99 = {a.action: a.latency.p99 for a in e.actions_by_type}
    return Comparison(
        phase=b.phase,
        operations_per_second=_ratio(b.operations_per_second, e.operations_per_second),
        actions_per_second=_ratio(b.actions_per_second, e.actions_per_second),
        commits=_ratio(b.counters.commits, e.counters.commits),
        vmcs_reads=_ratio(b.counters.vmcs_reads, e.counters.vmcs_reads),
        vmcs_writes=_ratio(b.counters.vmcs_writes, e.counters.vmcs_writes),
        tdcalls=_ratio(
            b.counters.vmcs_reads + b.counters.vmcs_writes, e.counters.vmcs_reads + e.counters.vmcs_writes
        ),
        modelled_cycles=_ratio(b.modelled.total_cycles, e.modelled.total_cycles),
        p99_by_action={
            a.action: _ratio(a.latency.p99, eager_p99[a.action])
            for a in b.actions_by_type
            if eager_p99.get(a.action)
        },
    )


def build_report(
    runs: list[RunData],
    costs: CostModel,
    *,
    cost_source: str = DEFAULT_COST_SOURCE,
    overridden: frozenset[str] = frozenset(),
    include_wall: bool | None = None,
    cluster: ClusterReport | None = None,
) -> Report:
    """The report of ``runs`` (one, or batched then eager when comparing policies).

    ``include_wall`` defaults to True with the real clock and False with the virtual one;
    ``cluster`` says where a sharded run ran.
    """
    options = runs[0].options
    virtual = options.clock == "virtual"
    # A lost shard's reason names its worker's pid: that report is not reproducible.
    lost = any(s.status == "lost" for r in runs for s in r.shards or [])
    if include_wall is None:
        include_wall = not virtual
    run_reports = [
        RunReport(
            commit_policy=run.options.commit_policy,
            phases=[_phase(phase, costs) for phase in run.phases],
            traced_vps=[f"partition {t.partition} vp {t.vp_index}" for t in run.traces],
            shards=run.shards,
        )
        for run in runs
    ]
    comparison = _compare(run_reports[0], run_reports[1]) if len(run_reports) == 2 else None
    return Report(
        schema=SCHEMA,
        tool="tdvsm",
        time_unit="ns",
        clock=options.clock,
        deterministic=virtual and not include_wall and not lost,
        options=options,
        cost_model=CostReport(source=cost_source, note=_COST_NOTE, parameters=describe(costs, overridden)),
        runs=run_reports,
        comparison=comparison,
        wall=wall_report(runs) if include_wall else None,
        warnings=_warnings(run_reports),
        cluster=cluster,
    )


def encode_report(report: Report) -> bytes:
    """The report as JSON with sorted dictionary keys (the same report gives the same bytes)."""
    return msgspec.json.format(msgspec.json.encode(report, order="deterministic"), indent=1) + b"\n"
