"""Small ``tdvsm run`` invocations the lab tests share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from runtime.cli import main
from runtime.lab.report import PhaseReport, Report

if TYPE_CHECKING:
    from pathlib import Path

SMALL = ("--partitions", "4", "--vps", "2", "--drivers", "2", "--clock", "virtual", "--no-progress")


def run(tmp_path: Path, *args: str, name: str = "report.json", status: int = 0) -> Report:
    """Run ``tdvsm run`` with small sizes (exit status ``status``) and return its decoded report."""
    path = tmp_path / name
    assert main(["run", *SMALL, "--report", str(path), *args]) == status
    return msgspec.json.decode(path.read_bytes(), type=Report)


def phase(report: Report, name: str = "operations", run_index: int = 0) -> PhaseReport:
    """The phase called ``name`` of one run."""
    return next(p for p in report.runs[run_index].phases if p.phase == name)
