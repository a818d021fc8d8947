"""``--threshold``: k6-style pass/fail checks that set the exit status and are listed in the report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from runtime.cli import main
from runtime.lab.thresholds import THRESHOLD_FAILED, ThresholdError, parse_threshold

from ._runs import SMALL, phase, run

if TYPE_CHECKING:
    from pathlib import Path


def test_passing_and_failing_thresholds_are_listed_and_set_the_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One threshold that holds and one that does not: exit 99, both in the report and the table."""
    probe = phase(run(tmp_path, "--ops", "50", "--workload", "vtl-pingpong", name="probe.json"))
    call = next(a for a in probe.actions_by_type if a.action == "VtlCall")
    p99_us = call.latency.p99 / 1000
    capsys.readouterr()
    report = run(
        tmp_path,
        "--ops",
        "50",
        "--workload",
        "vtl-pingpong",
        "--threshold",
        f"VtlCall.p99<={p99_us + 0.01:.2f}us",
        "--threshold",
        f"VtlCall.p99<{p99_us - 0.01:.2f}us",
        "--threshold",
        "vtl-pingpong.count==50",
        status=THRESHOLD_FAILED,
    )
    results = {t.expression: t for t in report.thresholds}
    assert len(results) == 3
    assert results[f"VtlCall.p99<={p99_us + 0.01:.2f}us"].passed
    failed = results[f"VtlCall.p99<{p99_us - 0.01:.2f}us"]
    assert not failed.passed
    assert failed.observed == call.latency.p99
    assert failed.phase == "operations"
    assert failed.run == "batched"
    assert results["vtl-pingpong.count==50"].passed
    captured = capsys.readouterr()
    assert "thresholds: 2 passed, 1 failed" in captured.out
    assert f"FAIL VtlCall.p99<{p99_us - 0.01:.2f}us" in captured.out
    assert "1 of 3 threshold checks failed" in captured.err


def test_thresholds_that_all_pass_exit_0(tmp_path: Path) -> None:
    """Phase-wide and boot-phase subjects; all hold, so the status is 0."""
    report = run(
        tmp_path,
        "--ops",
        "30",
        "--threshold",
        "boot:phase.failed==0",
        "--threshold",
        "phase.operations>=30",
        "--threshold",
        "boot:EnablePartitionVtl.count==4",
    )
    assert [t.passed for t in report.thresholds] == [True, True, True]
    assert report.thresholds[0].phase == "boot"


def test_a_subject_the_run_never_saw_fails(tmp_path: Path) -> None:
    """A valid action type absent from the phase cannot be checked, so it fails (no silent pass)."""
    report = run(
        tmp_path,
        "--ops",
        "10",
        "--workload",
        "exits",
        "--threshold",
        "Xsetbv.p99<1ms",
        status=THRESHOLD_FAILED,
    )
    (result,) = report.thresholds
    assert not result.passed
    assert result.observed is None
    assert "no Xsetbv in the operations phase" in result.note


def test_every_run_is_checked_with_compare_policies(tmp_path: Path) -> None:
    """--compare-policies: each threshold is checked on the batched and on the eager run."""
    report = run(
        tmp_path,
        "--ops",
        "20",
        "--workload",
        "register-storm",
        "--compare-policies",
        "--threshold",
        "SetVpRegisters.commits<=1000",
    )
    assert [t.run for t in report.thresholds] == ["batched", "eager"]
    assert all(t.observed is not None for t in report.thresholds)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("p99<5us", "expected [PHASE:]SUBJECT.METRIC OP VALUE[UNIT]"),
        ("SetVpRegisters.p99<5", "a latency needs a unit"),
        ("SetVpRegisters.p99~5us", "expected"),
        ("Quantum.p99<5us", "unknown subject 'Quantum'"),
        ("SetVpRegisters.p42<5us", "has no metric 'p42'"),
        ("exits.count<5ms", "takes a plain number"),
        ("shutdown:phase.failed==0", "unknown phase 'shutdown'"),
    ],
)
def test_bad_thresholds_are_usage_errors(
    capsys: pytest.CaptureFixture[str], expression: str, expected: str
) -> None:
    """A bad threshold is one line and exit 2, before anything runs."""
    with pytest.raises(ThresholdError, match="--threshold"):
        parse_threshold(expression)
    assert main(["run", *SMALL, "--threshold", expression]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert expected in line


@pytest.mark.parametrize(
    ("expression", "metric", "limit"),
    [
        ("SetVpRegisters.p99<5us", "p99", 5_000),
        ("SetVpRegisters.p99.9 <= 2ms", "p99.9", 2_000_000),
        ("SetVpRegisters.p999<1s", "p99.9", 1e9),
        ("exits.per_second>=1e5/s", "per_second", 1e5),
        ("Rdmsr.max<250ns", "max", 250),
    ],
)
def test_threshold_units_and_spellings(expression: str, metric: str, limit: float) -> None:
    """Latency units scale to nanoseconds; p999 is p99.9; a rate may say /s."""
    threshold = parse_threshold(expression)
    assert threshold.metric == metric
    assert threshold.limit == limit
