"""Measurements, the cost model, clocks, the report, the table and the trace document."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import msgspec
import pytest
from hdrh.histogram import HdrHistogram

from protocol import Completed, Intercepted, InterceptMessage
from runtime._clock import VirtualClock
from runtime.lab.bench.p7_virtual import mixed_virtual_run
from runtime.lab.costs import PARAMETERS, ActionKind, CostModel, CostModelError, load_cost_model
from runtime.lab.experiment import ExperimentOptions, run_experiment
from runtime.lab.metrics import (
    TIMELINE_BUCKETS,
    PhaseRecorder,
    Timeline,
    encode,
    latency_stats,
    merge_encoded,
    new_histogram,
)
from runtime.lab.report import Report, build_report, encode_report
from runtime.lab.tables import render_table
from runtime.lab.trace import VpTrace, trace_document
from runtime.lab.workloads import resolve

if TYPE_CHECKING:
    from pathlib import Path


def test_timeline_coarsens_and_keeps_every_event() -> None:
    """A timeline never holds more than TIMELINE_BUCKETS buckets and loses no event."""
    timeline = Timeline(10)
    for t in range(0, 100_000, 7):
        timeline.add(t)
    assert len(timeline.counts) <= TIMELINE_BUCKETS
    assert sum(timeline.counts) == len(range(0, 100_000, 7))
    assert timeline.width % 10 == 0
    assert timeline.width > 10


def test_latency_stats_match_hdrhistogram() -> None:
    """Percentiles and max equal hdrh's own answers; the mean is within a bucket's width."""
    histogram = new_histogram()
    for i in range(1, 20_000):
        histogram.record_value((i * 7919) % 1_000_003)
    stats = latency_stats(histogram)
    assert stats.count == 19_999
    for field, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        assert getattr(stats, field) == histogram.get_value_at_percentile(p)
    assert stats.max == histogram.get_max_value()
    assert stats.mean == pytest.approx(histogram.get_mean_value(), rel=1e-3)


def test_histograms_from_shards_merge() -> None:
    """Encoded histograms of two shards merge into one holding every value."""
    a, b = new_histogram(), new_histogram()
    for v in range(1, 1001):
        a.record_value(v)
        b.record_value(v * 1000)
    merged = merge_encoded([encode(a), encode(b)])
    assert merged.get_total_count() == 2000
    assert merged.get_max_value() == b.get_max_value()
    assert isinstance(HdrHistogram.decode(encode(merged).encode()), HdrHistogram)


def test_recorder_counts_the_same_whenever_it_drains() -> None:
    """Many distinct latencies (drained mid-way) give the histogram direct recording gives."""
    recorder = PhaseRecorder(0, 1_000)
    direct = new_histogram()
    for i in range(10_000):
        recorder.record("Rdmsr", "Completed", i * 13, i)
        direct.record_value(i * 13)
    histogram = recorder.histograms["Rdmsr"]
    assert histogram.get_total_count() == 10_000
    assert latency_stats(histogram) == latency_stats(direct)
    assert recorder.outcomes == {("Rdmsr", "Completed"): 10_000}


def test_unexpected_examples_do_not_depend_on_order() -> None:
    """The kept examples are the three smallest distinct messages, whatever came first."""
    one, two = PhaseRecorder(0, 1), PhaseRecorder(0, 1)
    for what in ("d", "a", "c", "b", "a"):
        one.note_unexpected("w", what)
    for what in ("b", "a", "a", "d", "c"):
        two.note_unexpected("w", what)
    assert one.unexpected == two.unexpected == {"w": ["a", "b", "c"]}
    assert one.unexpected_counts == {"w": 5}


@pytest.mark.parametrize(
    ("kind", "outcome", "switches", "reads", "writes", "expected"),
    [
        (ActionKind.INSTRUCTION, "Intercepted", 0, 1, 0, 9_000 + 1_200),
        (ActionKind.HYPERCALL, "VtlSwitched", 1, 42, 40, 8_500 + 82 * 1_200),
        (ActionKind.HYPERCALL, "HypercallResult", 0, 0, 2, 4_000 + 500 + 4_000 + 2_400),
        (ActionKind.INSTRUCTION, "Completed", 0, 0, 0, 4_000 + 4_000),
        (ActionKind.INSTRUCTION, "InterceptDropped", 0, 0, 0, 4_000 + 4_000),
        (ActionKind.INSTRUCTION, "InterceptPosted", 0, 0, 0, 4_000 + 4_000),
        (ActionKind.NO_EXIT, "Completed", 0, 0, 3, 3_600),
    ],
)
def test_cost_model_charges_what_an_action_did(
    kind: ActionKind, outcome: str, switches: int, reads: int, writes: int, expected: int
) -> None:
    """COSTS.md section 3 defaults: intercept, switch, hypercall, exit, no exit, plus every
    TDG.VP.RD at tdcall_vp_rd and TDG.VP.WR at tdcall_vp_wr (DOMAIN 7.1)."""
    assert CostModel().charge(kind, outcome, switches, 1, reads, writes) == expected
    costs = CostModel(tdcall_vp_rd=100, tdcall_vp_wr=10)
    base = costs.charge(kind, outcome, switches, 1, 0, 0)
    assert costs.charge(kind, outcome, switches, 1, reads, writes) == base + 100 * reads + 10 * writes


def test_every_parameter_has_a_status() -> None:
    """Each CostModel field is described (status, used, basis), and most used ones are illustrative."""
    fields = set(msgspec.structs.asdict(CostModel()))
    assert fields == set(PARAMETERS)
    statuses = {status for status, _, _ in PARAMETERS.values()}
    assert statuses <= {"sourced", "proxy", "illustrative"}
    assert PARAMETERS["vtl_switch"][0] == "illustrative"


def test_cost_files_in_json_and_toml(tmp_path: Path) -> None:
    """A JSON and a TOML cost file override the same parameter; bad content raises CostModelError."""
    (tmp_path / "c.json").write_text(json.dumps({"vtl_switch": 100, "ghz": 1.0}))
    (tmp_path / "c.toml").write_text("vtl_switch = 100\nghz = 1.0\n")
    for name in ("c.json", "c.toml"):
        model, overridden = load_cost_model(tmp_path / name)
        assert model.vtl_switch == 100
        assert model.ns(100) == 100
        assert overridden == {"vtl_switch", "ghz"}
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(CostModelError, match="expected a table"):
        load_cost_model(tmp_path / "list.json")
    with pytest.raises(CostModelError, match="cannot read"):
        load_cost_model(tmp_path / "absent.toml")


async def test_virtual_clock_jumps_and_never_goes_back() -> None:
    """wait_until jumps forward without sleeping; advance ignores negative amounts."""
    clock = VirtualClock(100)
    with anyio.fail_after(1):
        await clock.wait_until(10**15)
    assert clock.now() == 10**15
    await clock.wait_until(5)
    assert clock.advance(-3) == 10**15
    assert clock.advance(7) == 10**15 + 7


def _options(**changes: object) -> ExperimentOptions:
    base = mixed_virtual_run(3, 60, 2)
    return msgspec.structs.replace(base, **{"vps": 2, "seed": 5, "trace_vps": 2, **changes})


def test_report_round_trips_and_sorts_its_keys() -> None:
    """encode_report decodes back to an equal Report; dictionaries come out in sorted key order."""
    data = anyio.run(run_experiment, _options(), CostModel())
    report = build_report([data], CostModel())
    encoded = encode_report(report)
    assert msgspec.json.decode(encoded, type=Report) == report
    raw = json.loads(encoded)
    for phase in raw["runs"][0]["phases"]:
        for action in phase["actions_by_type"]:
            assert list(action["outcomes"]) == sorted(action["outcomes"])
    assert raw["schema"] == "tdvsm.report/2"
    assert raw["time_unit"] == "ns"


def test_table_of_a_comparison_has_the_ratio_block() -> None:
    """render_table prints both runs and the batched/eager ratios."""
    batched = anyio.run(
        run_experiment, _options(workload="register-storm", mix=resolve("register-storm")), CostModel()
    )
    eager = anyio.run(
        run_experiment,
        _options(workload="register-storm", mix=resolve("register-storm"), commit_policy="eager"),
        CostModel(),
    )
    report = build_report([batched, eager], CostModel())
    assert report.comparison is not None
    assert report.comparison.vmcs_writes < 1
    table = render_table(report)
    assert "== commit policy batched" in table
    assert "== commit policy eager" in table
    assert "batched/eager" in table
    assert "illustrative" in table


def test_trace_slices_never_overlap_and_mark_intercepts() -> None:
    """A VP's slices start when the previous one ended; intercepts and VTL switches are marked."""
    trace = VpTrace(7, 1)
    message = InterceptMessage(
        message_type=0x8001_0006, vp_index=1, instruction_length=3, access_type=1, rip=0, rflags=2
    )
    trace.action("MovToCr", Intercepted(message=message), 0, 5_000, 0, 1, 1, 1, 2)
    trace.action("Wrmsr", Completed(), 1_000, 9_000, 1, 1, 0, 0, 0)  # intended start before the VP was free
    document = trace_document([trace], 0, "virtual")
    slices = [e for e in document["traceEvents"] if e["ph"] == "X"]
    assert [(s["ts"], s["dur"]) for s in slices] == [(0.0, 5.0), (5.0, 4.0)]
    names = {e["name"] for e in document["traceEvents"]}
    assert {"secure intercept", "VTL0 -> VTL1", "commit", "process_name", "thread_name"} <= names
    assert document["otherData"] == {"clock": "virtual", "vps": 1, "dropped_actions": 0}


def test_report_and_footer_cite_only_shipped_documents(capsys: pytest.CaptureFixture[str]) -> None:
    """No path outside the repository (shared/spec, COSTS.md) in a report or the table; the README
    section they cite exists and holds every evidence code the parameters name."""
    import re
    from pathlib import Path

    report = build_report([anyio.run(run_experiment, _options(), CostModel())], CostModel())
    text = encode_report(report).decode() + render_table(report)
    for outside in ("shared/spec", "COSTS.md", "../"):
        assert outside not in text
    assert "README 'Cost model'" in report.cost_model.note
    assert "README 'Cost model'" in render_table(report).splitlines()[-1]
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    section = readme.split("## Cost model", 1)[1].split("\n## ", 1)[0]
    codes = {code for p in report.cost_model.parameters for code in re.findall(r"\b[EN]\d+'?", p.basis)}
    assert codes
    for code in codes:
        assert f"| {code}" in section or f", {code}" in section, code


def test_report_counts_restarts_after_crashes_inside_the_simulator() -> None:
    """A crash inside a step (here in a commit) shows in the phase counters as a restart."""
    from runtime.testing import crash_at

    with crash_at("commit", nth=50):
        data = anyio.run(run_experiment, _options(), CostModel())
    report = build_report([data], CostModel())
    counters = [phase.counters for phase in report.runs[0].phases]
    assert sum(c.restarts for c in counters) == 1
    assert all(c.failed_partitions == 0 for c in counters)


async def test_report_counters_count_failed_partitions() -> None:
    """G5: a partition that failed shows in the counters an experiment report is built from."""
    from runtime import open_runtime
    from runtime.lab.records import collect_counters

    async with open_runtime() as rt:
        failed = await rt.create_partition(vp_count=2)
        await rt.create_partition(vp_count=2)
        rt._scheduler.fail_partition(failed._cells, "VM entry failed (a test)")
        counters = collect_counters(rt)
    assert counters.failed_partitions == 1
