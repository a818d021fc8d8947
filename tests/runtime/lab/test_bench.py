"""``tdvsm bench --quick``: every figure is measured beside its floor and reported as a ratio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from runtime.cli import main
from runtime.lab.bench import BenchReport

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_quick_bench_reports_every_figure_as_a_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--quick measures P1 (both backends), P2, P3, P4 and P7, each with a ratio (no thresholds)."""
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--report", str(path)]) == 0
    report = msgspec.json.decode(path.read_bytes(), type=BenchReport)
    assert report.quick
    ids = [figure.id for figure in report.figures]
    # P3 is three ratios (PERFORMANCE.md): TDCALLs, modelled cycles per update, updates per second.
    assert ids == ["P1", "P1", "P2", "P3", "P3", "P3", "P4", "P4", "P4", "P7"]
    for figure in report.figures:
        assert figure.value > 0
        assert figure.ratio is not None
        assert figure.ratio > 0
        assert figure.met is not None
    p1 = [f for f in report.figures if f.id == "P1"]
    assert {f.name.rsplit(", ", 1)[1] for f in p1} == {"asyncio", "trio"}
    assert all(f.floor is not None and f.floor > 0 for f in p1)
    assert all(isinstance(f.detail["ratio_to_direct_call"], float) for f in p1)
    tdcalls, cycles, _ = (f for f in report.figures if f.id == "P3")
    assert tdcalls.unit == "TDCALLs"
    eager = float(tdcalls.detail["eager_vmcs_reads"]) + float(tdcalls.detail["eager_vmcs_writes"])
    assert tdcalls.floor == eager
    assert tdcalls.detail["batched_vmcs_reads"] == 0  # the write-back reads nothing (DOMAIN 7.1)
    assert 0 < tdcalls.ratio < 1
    assert cycles.unit == "cycles"
    assert cycles.ratio is not None
    assert 0 < cycles.ratio < 1
    p7 = next(f for f in report.figures if f.id == "P7")
    assert p7.detail["identical_reports"] == "yes"
    out = capsys.readouterr().out
    assert "ratio" in out
    assert "P7" in out


def test_bench_only_runs_the_named_figures(tmp_path: Path) -> None:
    """--only P4 measures the memory figures and nothing else."""
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "p4", "--report", str(path)]) == 0
    report = msgspec.json.decode(path.read_bytes(), type=BenchReport)
    assert {figure.id for figure in report.figures} == {"P4"}
    assert len(report.figures) == 3
