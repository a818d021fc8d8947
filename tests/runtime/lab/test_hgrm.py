"""``--hgrm DIR``: one HdrHistogram percentile-distribution file per action type, as wrk2 writes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hdrh.histogram import HdrHistogram

from runtime.lab.hgrm import format_hgrm
from runtime.lab.metrics import new_histogram

from ._runs import phase, run

if TYPE_CHECKING:
    from pathlib import Path


def _rows(text: str) -> list[tuple[float, float, int]]:
    """(value, percentile, total count) of each data line, as the HdrHistogram plotter reads them."""
    rows = []
    for line in text.splitlines()[2:]:
        fields = line.split()
        if line.startswith("#") or len(fields) < 3:
            continue
        rows.append((float(fields[0]), float(fields[1]), int(fields[2])))
    return rows


def test_format_is_hdrhistograms_percentile_distribution() -> None:
    """Header, percentile lines walked to 1.0 with 1/(1-p), and the mean/max/buckets footer."""
    histogram = new_histogram()
    for ns in range(1_000, 101_000, 100):  # 1 us .. 100.9 us, 1,000 values
        histogram.record_value(ns)
    text = format_hgrm(histogram)
    lines = text.splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    assert lines[1] == ""
    rows = _rows(text)
    assert rows[0][1] == 0.0
    assert rows[-1][1] == 1.0
    assert rows[-1][2] == 1_000
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    data = [line.split() for line in lines[2:] if not line.startswith("#")]
    assert all(len(fields) == 4 for fields in data[:-1])
    assert len(data[-1]) == 3  # the 100% line has no 1/(1-p)
    # HdrHistogram's steps (as Java and wrk2 print them): halving the distance every 5 steps.
    levels = [round(p * 100, 3) for _, p, _ in rows[:14]]
    assert levels == [0, 10, 20, 30, 40, 50, 55, 60, 65, 70, 75, 77.5, 80, 82.5]
    median = next(value for value, p, _ in rows if p >= 0.5)
    assert median == histogram.get_value_at_percentile(50) / 1000  # microseconds
    assert lines[-3].startswith("#[Mean    =")
    assert f"Total count    = {1_000:12d}" in lines[-2]
    assert f"#[Max     = {histogram.get_max_value() / 1000:12.3f}" in lines[-2]
    deviation = float(lines[-3].split("StdDeviation   =")[1].rstrip("]"))
    assert deviation == round(histogram.get_stddev() / 1000, 3)  # scaled like the values
    assert lines[-1].startswith("#[Buckets =")


def test_hgrm_dir_holds_one_file_per_action_type(tmp_path: Path) -> None:
    """--hgrm: a file per action type and phase whose spectrum matches the report's percentiles."""
    out = tmp_path / "spectra"
    report = run(tmp_path, "--ops", "200", "--hgrm", str(out))
    names = sorted(path.name for path in out.iterdir())
    expected = sorted(
        f"{p.phase}-{a.action}.hgrm" for p in report.runs[0].phases for a in p.actions_by_type if a.count
    )
    assert names == expected
    ops = phase(report)
    for action in ops.actions_by_type:
        text = (out / f"operations-{action.action}.hgrm").read_text()
        rows = _rows(text)
        assert rows[-1][2] == action.count
        assert rows[-1][0] == action.latency.max / 1000
        p99 = next(value for value, p, _ in rows if p >= 0.99)
        assert p99 == action.latency.p99 / 1000
        decoded = HdrHistogram.decode(action.histogram.encode())
        assert text == format_hgrm(decoded)


def test_hgrm_with_compare_policies_prefixes_the_policy(tmp_path: Path) -> None:
    """With two runs, each file name starts with its commit policy."""
    out = tmp_path / "spectra"
    run(tmp_path, "--ops", "40", "--workload", "vtl-pingpong", "--compare-policies", "--hgrm", str(out))
    names = {path.name for path in out.iterdir()}
    assert "batched-operations-VtlCall.hgrm" in names
    assert "eager-operations-VtlCall.hgrm" in names
    assert all(name.startswith(("batched-", "eager-")) for name in names)
