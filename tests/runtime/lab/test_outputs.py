"""Output paths are checked before a run starts: one line, exit 2, nothing measured, nothing written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.lab.outputs import JSON, check_directory, check_file
from runtime.lab.usage import UsageError

#: A full-size run: if any of these got as far as running it, the test would take seconds.
BIG = ("run", "--partitions", "300", "--clock", "virtual", "--ops", "200000", "--no-progress")
#: A directory nobody may create files in, not even root (sysfs).
UNWRITABLE_DIR = Path("/sys/kernel")


def refused(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run ``tdvsm`` expecting a prompt usage error; return its single stderr line."""
    start = time.perf_counter()
    assert main(args) == 2
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert captured.out == ""  # no table: nothing ran
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert elapsed < 5, "the run started before the path was checked"
    return lines[0]


@pytest.mark.skipif(not UNWRITABLE_DIR.is_dir(), reason="needs Linux sysfs")
def test_unwritable_report_file_is_refused_before_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    """--report in a directory that refuses new files: refused, even for root (a write is tried)."""
    line = refused(capsys, [*BIG, "--report", str(UNWRITABLE_DIR / "report.json")])
    assert line.startswith("tdvsm run: error: --report /sys/kernel/report.json: cannot write the file")


def test_report_naming_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--report DIR: a directory is not a report file."""
    line = refused(capsys, [*BIG, "--report", str(tmp_path)])
    assert "is a directory" in line
    assert ".json" in line


def test_plot_with_an_unknown_extension_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--plot out.xyz: matplotlib cannot write .xyz, so the run must not start."""
    line = refused(capsys, [*BIG, "--plot", str(tmp_path / "out.xyz")])
    assert "extension '.xyz'" in line
    assert ".png, .svg or .pdf" in line
    assert not (tmp_path / "out.xyz").exists()


def test_plot_naming_a_directory_is_refused_not_renamed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--plot DIR used to write DIR.png and print DIR; now it is refused and nothing is written."""
    target = tmp_path / "plots"
    target.mkdir()
    line = refused(capsys, [*BIG, "--plot", str(target)])
    assert "is a directory" in line
    assert not (tmp_path / "plots.png").exists()


def test_plot_without_an_extension_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--plot run (no extension) would silently become run.png: refused."""
    line = refused(capsys, [*BIG, "--plot", str(tmp_path / "run")])
    assert "no extension" in line


@pytest.mark.parametrize(
    ("option", "name", "expected"),
    [
        ("--trace", "trace.txt", "extension '.txt'"),
        ("--report", "report.csv", "extension '.csv'"),
        ("--report", "missing/report.json", "does not exist"),
    ],
)
def test_other_bad_output_paths_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, name: str, expected: str
) -> None:
    """--trace and --report: the extension and the directory are checked too."""
    line = refused(capsys, [*BIG, option, str(tmp_path / name)])
    assert expected in line
    assert option in line


def test_hgrm_naming_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--hgrm takes a directory; an existing file is refused."""
    existing = tmp_path / "a.json"
    existing.write_text("{}")
    line = refused(capsys, [*BIG, "--hgrm", str(existing)])
    assert "is a file" in line
    assert existing.read_text() == "{}"


def test_bench_report_path_is_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tdvsm bench --report DIR is refused before any figure is measured."""
    line = refused(capsys, ["bench", "--report", str(tmp_path)])
    assert line.startswith("tdvsm bench: error: --report")


def test_compare_plot_path_is_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tdvsm compare --plot out.xyz is refused before the reports are even read."""
    line = refused(capsys, ["compare", "a.json", "b.json", "--plot", str(tmp_path / "out.xyz")])
    assert "--plot" in line


def test_checks_leave_no_file_behind(tmp_path: Path) -> None:
    """A checked new file is not left behind; an existing one is untouched; a new directory is made."""
    new = tmp_path / "new.json"
    assert check_file(str(new), "--report", JSON) == new
    assert not new.exists()
    old = tmp_path / "old.json"
    old.write_text("keep")
    assert check_file(str(old), "--report", JSON) == old
    assert old.read_text() == "keep"
    made = check_directory(str(tmp_path / "spectra"), "--hgrm")
    assert made is not None
    assert made.is_dir()
    assert list(made.iterdir()) == []
    with pytest.raises(UsageError, match="does not exist"):
        check_directory(str(tmp_path / "a" / "b"), "--hgrm")
