"""``tdvsm bench``: every figure is a ratio against a floor of the same run; --quick passes no verdict."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from typing import TYPE_CHECKING

import anyio
import msgspec
import pytest

from runtime.cli import main
from runtime.lab.bench import BenchReport, Figure, loops, peers
from runtime.lab.bench._figure import TABLE_WIDTH, render_table
from runtime.lab.bench.floors import interleaved

if TYPE_CHECKING:
    from pathlib import Path


def test_quick_bench_is_a_smoke_run_of_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--quick measures P1 (both backends), P2, P3, P4, P5 and P7 beside their floors, with no verdict."""
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--report", str(path)]) == 0
    report = msgspec.json.decode(path.read_bytes(), type=BenchReport)
    assert report.quick
    ids = [figure.id for figure in report.figures]
    # P2 shows its tail (issue 13): 1,000 drivers beside 100, p99/p99.9, RSS under load.
    # P3 is three ratios (PERFORMANCE.md): TDCALLs, modelled cycles per update, updates per second.
    # P5 is a round trip and a batched throughput per server backend (runtime/serve/bench.py).
    assert ids == [
        "P1",
        "P1",
        *["P2"] * 7,  # 2 driver counts x (throughput, p99, p99.9), and peak RSS under load
        "P3",
        "P3",
        "P3",
        "P4",
        "P4",
        "P4",
        "P5",
        "P5",
        "P5",
        "P5",
        "P6",
        "P7",
        "P8",
    ]
    # P6 comes from runtime/cluster through the dispatcher, measured when the ray extra is there.
    p6 = next(f for f in report.figures if f.id == "P6")
    assert p6.met is None
    if importlib.util.find_spec("ray") is None:
        assert "not measured" in p6.name
    else:
        assert p6.detail["reports_equal_local"] == "yes"
    for figure in report.figures:
        if figure.id == "P6" and importlib.util.find_spec("ray") is None:
            continue
        assert figure.value > 0
        assert figure.floor is not None
        assert figure.floor > 0, figure.name
        assert figure.ratio == pytest.approx(figure.value / figure.floor, rel=0.01)
        assert figure.met is None  # a smoke run passes no verdict
    p8 = next(f for f in report.figures if f.id == "P8")
    assert float(p8.detail["longest_pass_us"]) > 0
    assert int(p8.detail["ticks"]) > 0
    p1 = [f for f in report.figures if f.id == "P1"]
    assert {f.name.rsplit(", ", 1)[1] for f in p1} == {"asyncio", "trio"}
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
    p5 = [f for f in report.figures if f.id == "P5"]
    assert [(f.unit, f.name.rsplit(", ", 1)[1]) for f in p5] == [
        ("us", "asyncio"),
        ("actions/s", "asyncio"),
        ("us", "trio"),
        ("actions/s", "trio"),
    ]
    p7 = next(f for f in report.figures if f.id == "P7")
    assert p7.detail["identical_reports"] == "yes"
    assert "asyncio" in p7.floor_name
    out = capsys.readouterr().out
    assert out.startswith("smoke run (--quick)")
    assert not re.search(r" (NO|yes)$", out, re.MULTILINE)


def test_bench_table_fits_in_100_columns_with_units() -> None:
    """Every line is at most 100 columns; values and floors carry their unit; floors are named."""
    figures = [
        Figure(
            id="P1",
            name="vp.execute(Rdmsr) p50, asyncio",
            value=9.11,
            unit="us",
            floor=6.94,
            floor_name="raw asyncio Queue+Future ask",
            ratio=1.31,
            target="<=1.5x, <peers",
            met=True,
        ),
        Figure(
            id="P3",
            name="a figure whose name is much longer than the column gives it",
            value=509_278,
            unit="updates/s",
            floor=358_260,
            floor_name="eager policy",
            ratio=1.42,
            target="a target that does not fit either",
            met=False,
        ),
        Figure(
            id="P4",
            name="RSS of 10,000x4 idle VPs",
            value=0.102,
            unit="GiB",
            floor=0.3,
            floor_name="raw asyncio actors",
            ratio=0.34,
            target="<=1.5 GiB",
            met=True,
        ),
    ]
    table = render_table(figures)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= TABLE_WIDTH
    assert "9.11 us" in table
    assert "6.94 us" in table
    assert "509k updates/s" in table  # too long: 3 significant digits rather than an overflow
    assert "7.93M TDCALLs" in render_table(
        [msgspec.structs.replace(figures[1], value=7_932_800, unit="TDCALLs")]
    )
    assert "0.102 GiB" in table
    assert re.search(r"P3 .*~", table)  # truncation is marked
    assert "raw asyncio Queue+Future ask" in table
    assert re.search(r" NO$", table, re.MULTILINE)
    assert not table.startswith("smoke run")
    assert render_table(figures, quick=True).startswith("smoke run (--quick)")


def test_bench_refuses_check_with_quick(capsys: pytest.CaptureFixture[str]) -> None:
    """--check --quick: a smoke run passes no verdict, so asking it for one is a usage error."""
    assert main(["bench", "--quick", "--check"]) == 2
    assert "no verdict" in capsys.readouterr().err


def test_bench_only_runs_the_named_figures(tmp_path: Path) -> None:
    """--only P4 measures the memory figures and nothing else."""
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "p4", "--report", str(path)]) == 0
    report = msgspec.json.decode(path.read_bytes(), type=BenchReport)
    assert {figure.id for figure in report.figures} == {"P4"}
    assert len(report.figures) == 3


def test_peers_without_any_peer_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--peers with none of thespian, pykka, xoscar installed names the extra to install."""
    monkeypatch.setattr(peers, "installed", list)
    monkeypatch.setattr("runtime.lab.bench.installed", list)
    assert main(["bench", "--quick", "--peers", "--only", "P1"]) == 2
    assert "pip install -e '.[peers]'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_each_installed_peer_answers_like_the_floor(name: str) -> None:
    """Each peer's ask returns handler(message), alternated with others by ``interleaved``."""
    pytest.importorskip(name)

    async def ask_twice() -> list[list[int]]:
        async with peers.peer_ask(name) as ask:
            assert await ask(41) == 42
            return await interleaved([ask], 20)

    samples = anyio.run(ask_twice, backend="asyncio")
    assert len(samples[0]) == 20
    assert all(ns > 0 for ns in samples[0])


def test_quick_bench_with_peers_measures_them_beside_p1(tmp_path: Path) -> None:
    """--peers: one row per installed peer per backend it runs on, each as a ratio to the floor."""
    found = peers.installed()
    if not found:
        pytest.skip("the peers extra is not installed")
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--peers", "--only", "P1", "--report", str(path)]) == 0
    report = msgspec.json.decode(path.read_bytes(), type=BenchReport)
    rows = [f.name.strip() for f in report.figures]
    for name in found:
        assert f"peer {name} p50, asyncio" in rows
        assert (f"peer {name} p50, trio" in rows) == (peers.PEERS[name] == "any")
    ours = next(f for f in report.figures if f.name == "vp.execute(Rdmsr) p50, asyncio")
    assert "ratio_to_fastest_peer" in ours.detail
    assert ours.target.endswith("<peers")


def test_loop_uvloop_without_uvloop_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--loop uvloop without the extra names it; an unknown loop is refused too; nothing runs."""
    monkeypatch.setattr(loops, "uvloop_installed", lambda: False)
    assert main(["bench", "--quick", "--only", "P1", "--loop", "uvloop"]) == 2
    assert "pip install -e '.[uvloop]'" in capsys.readouterr().err
    assert main(["bench", "--quick", "--only", "P1", "--loop", "tokio"]) == 2
    assert "unknown event loop 'tokio'" in capsys.readouterr().err
    assert loops.asyncio_name() == "asyncio"


def test_quick_bench_on_uvloop_runs_the_runtime_and_its_floors_there(tmp_path: Path) -> None:
    """--loop uvloop: P1's asyncio half and P2 run on uvloop (and say so); trio's half is trio's."""
    pytest.importorskip("uvloop")
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--only", "P1,P2", "--loop", "uvloop", "--report", str(path)]) == 0
    report = msgspec.json.decode(path.read_bytes(), type=BenchReport)
    assert report.loop == "uvloop"
    names = [figure.name for figure in report.figures]
    assert names[:2] == ["vp.execute(Rdmsr) p50, uvloop", "vp.execute(Rdmsr) p50, trio"]
    assert names[2].endswith("drivers, uvloop")
    assert "raw uvloop Queue+Future ask" in report.figures[0].floor_name

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    try:
        loops.use_loop("uvloop")
        assert loops.run_asyncio(loop_module).startswith("uvloop")
    finally:
        loops.use_loop("asyncio")
    assert loops.run_asyncio(loop_module) == "asyncio.unix_events"
    # The next run is back on asyncio's loop (the default is set again).
    assert main(["bench", "--quick", "--only", "P4", "--report", str(path)]) == 0
    assert msgspec.json.decode(path.read_bytes(), type=BenchReport).loop == "asyncio"
