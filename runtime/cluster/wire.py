"""What crosses a Ray call: a shard's orders and its results, as msgspec bytes, and their merge.

Ray pickles whatever a call passes; tdvsm only ever passes ``bytes`` made here (and ints), so
no pickled object of ours is ever loaded on either side, and every message is checked against
its schema when decoded (RELIABILITY.md F7). ``merge_runs`` turns the results of every shard of
one experiment into the ``RunData`` a single runtime would have measured, which then gives the
report, plots, trace and ``compare`` input as a local run does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import msgspec

from ..lab.costs import CostModel
from ..lab.metrics import RecorderState, merge_recorders
from ..lab.records import Counters, ExperimentOptions, PhaseData, RunData
from ..lab.trace import VpTrace

if TYPE_CHECKING:
    from ..lab.cells import ShardReport

__all__ = (
    "PhaseResult",
    "ShardOrders",
    "ShardResult",
    "TraceState",
    "Loss",
    "decode",
    "encode",
    "merge_runs",
    "phase_result",
    "trace_state",
)

_T = TypeVar("_T")


class ShardOrders(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a shard runs: the experiment, its cost model, and its cells ``[first, stop)``."""

    shard: int
    options: ExperimentOptions
    costs: CostModel
    cells: tuple[int, int]


class PhaseResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One phase as one shard measured it.

    ``high_water_sum`` and ``partitions`` give the fleet's mean mailbox high-water mark exactly
    (the counters carry it rounded).
    """

    name: str
    recorder: RecorderState
    duration_ns: int
    wall_ns: int
    counters: Counters
    failed: int
    partition_failures: dict[int, str]
    high_water_sum: int
    partitions: int
    rate: float | None = None
    never_started: int = 0
    grace_ns: int | None = None


class TraceState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A sampled VP's trace (``VpTrace``), times relative to its run's origin."""

    partition: int
    vp_index: int
    events: list[tuple[int, int, str, str, int, int, int, int, int, int]]
    dropped: int


class ShardResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything one shard measured."""

    shard: int
    phases: list[PhaseResult]
    traces: list[TraceState]
    scheduler: dict[str, int]
    wall_ns: int


_encoder = msgspec.msgpack.Encoder()


def encode(message: ShardOrders | PhaseResult | ShardResult) -> bytes:
    """``message`` as msgpack bytes (what a Ray call carries)."""
    return _encoder.encode(message)


def decode(data: bytes, kind: type[_T]) -> _T:
    """The ``kind`` message in ``data``.

    Raises:
        TypeError: ``data`` is not bytes.
        msgspec.ValidationError: it is not a ``kind`` (``msgspec.DecodeError``: not msgpack).
    """
    if type(data) is not bytes:
        msg = f"expected msgpack bytes of a {kind.__name__}, got {type(data).__name__}"
        raise TypeError(msg)
    return msgspec.msgpack.decode(data, type=kind)


def phase_result(phase: PhaseData, high_water_sum: int, partitions: int) -> PhaseResult:
    """``phase`` as data, with the raw mailbox high-water sum over ``partitions`` partitions."""
    return PhaseResult(
        name=phase.name,
        recorder=phase.recorder.state(),
        duration_ns=phase.duration_ns,
        wall_ns=phase.wall_ns,
        counters=phase.counters,
        failed=phase.failed,
        partition_failures=dict(sorted(phase.partition_failures.items())),
        high_water_sum=high_water_sum,
        partitions=partitions,
        rate=phase.rate,
        never_started=phase.never_started,
        grace_ns=phase.grace_ns,
    )


def trace_state(trace: VpTrace, origin: int) -> TraceState:
    """``trace`` with its times made relative to ``origin``."""
    return TraceState(
        partition=trace.partition,
        vp_index=trace.vp_index,
        events=[(b - origin, e - origin, *rest) for b, e, *rest in trace.events],  # type: ignore[misc]
        dropped=trace.dropped,
    )


#: Counters that add up over shards (the high-water gauges do not).
_ADDED = tuple(f for f in Counters.__struct_fields__ if not f.startswith("mailbox_high_water"))


def _counters(parts: list[PhaseResult]) -> Counters:
    """The fleet's counters: the others added up, the high-water mark's max and exact mean."""
    partitions = sum(p.partitions for p in parts)
    high_sum = sum(p.high_water_sum for p in parts)
    added = {field: sum(getattr(p.counters, field) for p in parts) for field in _ADDED}
    return Counters(
        **added,
        mailbox_high_water_max=max((p.counters.mailbox_high_water_max for p in parts), default=0),
        mailbox_high_water_mean=round(high_sum / partitions, 3) if partitions else 0.0,
    )


class Loss(msgspec.Struct, frozen=True, kw_only=True):
    """A lost shard's partitions that left the run in ``phase`` (partition -> reason), with its ``vps``."""

    phase: str
    failures: dict[int, str]
    vps: int


def merge_runs(
    options: ExperimentOptions,
    results: list[ShardResult],
    *,
    losses: list[Loss] | None = None,
    shards: list[ShardReport] | None = None,
) -> RunData:
    """The run of the whole fleet from its shards' ``results``.

    ``losses`` add the partitions of lost shards to the failures of the phase they were lost
    in (the boot phase counts failed partitions, the operations phase failed VPs, as a local
    run does).
    """
    data = RunData(options)
    data.shards = shards
    for name in ("boot", "operations") if options.mix.weights else ("boot",):
        parts = [p for r in results for p in r.phases if p.name == name]
        failures = {pid: why for p in parts for pid, why in p.partition_failures.items()}
        failed = sum(p.failed for p in parts)
        for loss in losses or []:
            if loss.phase == name:
                failures.update(loss.failures)
                failed += len(loss.failures) if name == "boot" else loss.vps
        origin = min((p.recorder.origin for p in parts), default=0)
        phase = PhaseData(
            name,
            merge_recorders([p.recorder for p in parts], origin),
            max((p.duration_ns for p in parts), default=0),
            max((p.wall_ns for p in parts), default=0),
            _counters(parts),
            failed,
            dict(sorted(failures.items())),
        )
        if parts:  # open loop: the same target and grace on every shard
            phase.rate, phase.grace_ns = parts[0].rate, parts[0].grace_ns
            phase.never_started = sum(p.never_started for p in parts)
        data.phases.append(phase)
    for result in results:
        for state in result.traces:
            trace = VpTrace(state.partition, state.vp_index)
            trace.events = list(state.events)
            trace.dropped = state.dropped
            data.traces.append(trace)
    data.traces.sort(key=lambda t: (t.partition, t.vp_index))
    scheduler: dict[str, int] = {}
    for result in results:
        for key, value in result.scheduler.items():
            scheduler[key] = scheduler.get(key, 0) + value
    data.scheduler = scheduler
    data.wall_ns = max((r.wall_ns for r in results), default=0)
    return data
