"""Shards without Ray: ``ShardHost``s driven in this process, their results merged, against a local run.

The merge is where a sharded report could drift from a local one (timelines, histograms,
counters, failures, traces), so it is checked here on many shapes of experiment, quickly; the
Ray tests (test_ray.py) then check the same over real actors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest

from protocol import CR0_ET, CR0_PG, MovToCr, Msr, Rdmsr
from runtime.cluster.shard import ShardError, ShardHost
from runtime.cluster.wire import PhaseResult, ShardOrders, ShardResult, decode, encode, merge_runs
from runtime.lab.bench.p7_virtual import mixed_virtual_run
from runtime.lab.cells import Cells
from runtime.lab.costs import CostModel
from runtime.lab.experiment import run_experiment
from runtime.lab.report import build_report, encode_report
from runtime.lab.trace import trace_document
from runtime.lab.workloads import OPERATIONS, Guest, Program, Unexpected, resolve

if TYPE_CHECKING:
    import random

    from runtime.lab.records import ExperimentOptions, RunData


def _options(**changes: Any) -> ExperimentOptions:
    base = mixed_virtual_run(12, 600, 6)
    return msgspec.structs.replace(base, **{"seed": 7, "trace_vps": 5, **changes})


def _local(options: ExperimentOptions) -> RunData:
    return anyio.run(run_experiment, options, CostModel())


def sharded(options: ExperimentOptions, shards: int) -> RunData:
    """``options`` run as ``shards`` ShardHosts in this process, merged."""
    cells = Cells(options.partitions, options.vps, options.drivers)
    hosts = [
        ShardHost(encode(ShardOrders(shard=i, options=options, costs=CostModel(), cells=(r.start, r.stop))))
        for i, r in enumerate(cells.split(shards))
    ]
    boots = [decode(host.boot(), PhaseResult) for host in hosts]
    fleet = max(b.duration_ns for b in boots)
    results = [decode(host.operate(fleet), ShardResult) for host in hosts]
    return merge_runs(options, results)


CASES = {
    "closed loop, fewer drivers than partitions": _options(),
    "more drivers than partitions": _options(partitions=5, drivers=17),
    "open loop": _options(rate=2e6, ops=None, duration=0.0005),
    "duration": _options(ops=None, duration=0.0004),
    "eager": _options(commit_policy="eager"),
    "boot only": _options(workload="boot", mix=resolve("boot"), ops=None),
    "intercepts": _options(workload="intercept-storm", mix=resolve("intercept-storm")),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_report_is_the_local_report(case: str, shards: int) -> None:
    options = CASES[case]
    local = _local(options)
    merged = sharded(options, shards)
    assert merged.phases[-1].recorder.actions > 0
    assert encode_report(build_report([merged], CostModel())) == encode_report(
        build_report([local], CostModel())
    )
    assert trace_document(merged.traces, 0, "virtual") == trace_document(
        local.traces, local.origin, "virtual"
    )


def test_one_shard_and_three_give_the_same_report() -> None:
    options = _options(partitions=9, drivers=9, ops=900)
    one, three = sharded(options, 1), sharded(options, 3)
    assert encode_report(build_report([one], CostModel())) == encode_report(
        build_report([three], CostModel())
    )


def test_failures_and_unexpected_outcomes_merge_as_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partitions ended by a fatal condition (DOMAIN 7.2) in two shards, and unexpected outcomes
    in every shard: the same partitions, reasons, counts and examples as the local run."""
    workload = OPERATIONS["exits"]
    original = workload.episode

    def faulty(guest: Guest, rng: random.Random) -> Program[None]:
        if guest.partition in (1, 10):
            yield guest, MovToCr(cr=0, value=CR0_PG | CR0_ET)
            yield guest, Rdmsr(msr=Msr.APIC_BASE)  # VM entry fails: PartitionFailed
        if guest.partition % 3 == 0:
            msg = f"odd outcome on partition {guest.partition:02d}"
            raise Unexpected(msg)
        yield from original(guest, rng)

    monkeypatch.setattr(workload, "episode", faulty)
    options = _options(workload="exits", mix=resolve("exits"), ops=400)
    local, merged = _local(options), sharded(options, 3)
    ops = local.phases[-1]
    assert sorted(ops.partition_failures) == [1, 10]
    assert ops.recorder.unexpected_counts["exits"] > 3
    # The three smallest messages come from shards 0 and 1 (partitions 0-3 and 4-7).
    assert ops.recorder.unexpected["exits"] == [f"odd outcome on partition {p:02d}" for p in (0, 3, 6)]
    assert encode_report(build_report([merged], CostModel())) == encode_report(
        build_report([local], CostModel())
    )


def test_a_shard_refuses_calls_out_of_order() -> None:
    options = _options(partitions=2, drivers=2, ops=20)
    host = ShardHost(encode(ShardOrders(shard=0, options=options, costs=CostModel(), cells=(0, 2))))
    with pytest.raises(ShardError, match="operate\\(\\) before boot"):
        host.operate(0)
    host.boot()
    with pytest.raises(ShardError, match="boot\\(\\) called twice"):
        host.boot()
    with pytest.raises(ShardError, match="fleet_boot_ns must be an int"):
        host.operate(-1)
    decode(host.operate(0), ShardResult)


def test_orders_are_checked_when_decoded() -> None:
    with pytest.raises(msgspec.ValidationError):
        ShardHost(msgspec.msgpack.encode({"shard": 0, "options": {}, "costs": {}, "cells": [0, 1]}))
    with pytest.raises(TypeError, match="expected msgpack bytes"):
        decode("not bytes", ShardOrders)  # type: ignore[arg-type]


def _phase_result(high_water_sum: int, partitions: int, high_max: int, actions: int) -> PhaseResult:
    from runtime.lab.metrics import PhaseRecorder
    from runtime.lab.records import Counters

    counters = Counters(
        actions=actions,
        commits=2 * actions,
        staged_updates=3,
        mailbox_high_water_max=high_max,
        mailbox_high_water_mean=round(high_water_sum / partitions, 3),
    )
    return PhaseResult(
        name="boot",
        recorder=PhaseRecorder(0, 1000).state(),
        duration_ns=actions,
        wall_ns=1,
        counters=counters,
        failed=0,
        partition_failures={},
        high_water_sum=high_water_sum,
        partitions=partitions,
    )


def test_counters_merge_exactly() -> None:
    """Additive counters and gauges add up, the high-water max is the largest, and the mean is
    the fleet's exact one (2/7 = 0.286), not a mean of the shards' rounded means (0.333, 0.25)."""
    parts = [_phase_result(1, 3, 1, 10), _phase_result(1, 4, 2, 5)]
    results = [
        ShardResult(shard=i, phases=[p], traces=[], scheduler={"passes": i + 1}, wall_ns=9)
        for i, p in enumerate(parts)
    ]
    merged = merge_runs(_options(workload="boot", mix=resolve("boot"), ops=None), results)
    counters = merged.phases[0].counters
    assert (counters.actions, counters.commits, counters.staged_updates) == (15, 30, 6)
    assert (counters.mailbox_high_water_max, counters.mailbox_high_water_mean) == (2, 0.286)
    assert merged.phases[0].duration_ns == 10
    assert merged.scheduler == {"passes": 3}
