"""``tdvsm compare A.json B.json``: two runs side by side with ratios, and their CDFs overlaid."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from runtime.cli import main
from runtime.lab.compare import render_comparison, tdcalls

from ._runs import phase, run

if TYPE_CHECKING:
    from pathlib import Path

    from runtime.lab.report import Report


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report, Path, Report]:
    """Two register-heavy runs of one seed, batched (A) and eager (B)."""
    tmp_path = tmp_path_factory.mktemp("compare")
    args = ("--ops", "60", "--workload", str(_mix(tmp_path)))
    a = run(tmp_path, *args, name="a.json")
    b = run(tmp_path, *args, "--commit-policy", "eager", name="b.json")
    return tmp_path / "a.json", a, tmp_path / "b.json", b


def _mix(tmp_path: Path) -> Path:
    path = tmp_path / "mix.toml"
    path.write_text("[weights]\nregister-storm = 2\nexits = 1\n")
    return path


def _row(text: str, block: str, label: str) -> list[str]:
    """The cells of ``label``'s row in the table whose header starts with ``block``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(block))
    row = next(line for line in lines[start + 1 :] if line.strip().startswith(label + " "))
    return row.split()[len(label.split()) :]


def _cells(a: int, b: int) -> list[str]:
    """A, B and B/A as compare prints small counts ('-' when A is 0: nothing to divide by)."""
    return [f"{a:,}", f"{b:,}", f"{b / a:.2f}x" if a else "-"]


def test_compare_prints_each_action_and_operation_with_ratios(
    reports: tuple[Path, Report, Path, Report], capsys: pytest.CaptureFixture[str]
) -> None:
    """Per action type and per operation: p50, p99, p99.9, per second, TDCALLs, commits; B/A."""
    path_a, a, path_b, b = reports
    assert main(["compare", str(path_a), str(path_b)]) == 0
    out = capsys.readouterr().out
    assert "differs: commit_policy 'batched' -> 'eager'" in out
    ops_a, ops_b = phase(a), phase(b)
    sets_a = next(x for x in ops_a.actions_by_type if x.action == "SetVpRegisters")
    sets_b = next(x for x in ops_b.actions_by_type if x.action == "SetVpRegisters")
    section = out[out.index("== operations phase") :]
    latency = _row(section, "latency", "SetVpRegisters")
    assert latency[3] == f"{sets_a.latency.p99 / 1000:.2f}"
    assert latency[4] == f"{sets_b.latency.p99 / 1000:.2f}"
    assert latency[5] == f"{sets_b.latency.p99 / sets_a.latency.p99:.2f}x"
    work = _row(section, "work", "SetVpRegisters")
    assert work[3:6] == _cells(tdcalls(sets_a), tdcalls(sets_b))
    assert work[6:9] == _cells(sets_a.commits, sets_b.commits)
    assert tdcalls(sets_b) > 0  # eager's write-through makes TDCALLs B/A shows against A
    storm_a = next(w for w in ops_a.workloads if w.workload == "register-storm")
    storm = _row(section, "latency", "op register-storm")
    assert storm[0] == f"{storm_a.latency.p50 / 1000:.2f}"
    assert sets_b.commits > sets_a.commits  # eager commits every register: what B/A > 1 shows
    phase_row = _row(section, "phase", "commits")
    assert phase_row == [
        f"{ops_a.counters.commits:,}",
        f"{ops_b.counters.commits:,}",
        f"{ops_b.counters.commits / ops_a.counters.commits:.2f}x",
    ]
    assert tdcalls(ops_a) == ops_a.counters.vmcs_writes + ops_a.counters.vmcs_reads
    assert max(len(line) for line in out.splitlines() if line.startswith("  ")) <= 100  # the tables


def test_compare_of_a_report_with_itself_is_all_ones(reports: tuple[Path, Report, Path, Report]) -> None:
    """A against itself: nothing differs and every ratio is 1.00x or '-' (A is zero)."""
    path_a, a, _, _ = reports
    text = render_comparison(a, a, str(path_a), str(path_a))
    assert "differs: nothing in the options" in text
    ratios = [
        cell
        for line in text.splitlines()
        for cell in line.split()
        if cell.endswith("x") and cell[0].isdigit()
    ]
    assert ratios
    assert set(ratios) == {"1.00x"}


def test_compare_plot_overlays_the_cdfs(reports: tuple[Path, Report, Path, Report], tmp_path: Path) -> None:
    """--plot: one panel per action type and operation (a grid four wide)."""
    path_a, a, path_b, _ = reports
    out = tmp_path / "cmp.png"
    assert main(["compare", str(path_a), str(path_b), "--plot", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    panels = len(phase(a).actions_by_type) + len(phase(a).workloads)
    rows = -(-panels // 4)
    assert width == 1680
    assert height == round((3.0 * rows + 0.8) * 100)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read report"),
        ("[1, 2]", "is not a tdvsm run report"),
        ('{"a": 1}', "is not a tdvsm run report"),
        ('{"schema": "tdvsm.report/1", "tool": "tdvsm"}', "has schema 'tdvsm.report/1'; this tdvsm reads"),
        ('{"schema": "tdvsm.report/2", "tool": "tdvsm"}', "is not a valid tdvsm.report/2 report"),
    ],
)
def test_compare_refuses_what_is_not_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    """A missing file or another JSON document: one line, exit 2."""
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    assert main(["compare", str(path), str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert expected in err[0]
