"""The Ray backend on a real local Ray (2 CPUs, shared by the session: see conftest.py).

Few tests, each worth its start-up: a sharded run's report and trace equal a local run's (CLI);
1 shard and 3 shards give the same report; a shard's worker killed mid-run (SIGKILL of its
process) gives the documented outcome; the F7 refusal through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from runtime.cli import main
from runtime.lab.bench.p7_virtual import mixed_virtual_run
from runtime.lab.cells import Cells
from runtime.lab.costs import CostModel
from runtime.lab.report import Report, build_report

from .conftest import require_ray

if TYPE_CHECKING:
    from pathlib import Path

    from runtime.lab.records import ExperimentOptions

pytestmark = pytest.mark.timeout(240)

SMALL = ["--clock", "virtual", "--partitions", "16", "--vps", "4", "--drivers", "8", "--ops", "3000"]


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[dict[str, Any], bytes]:
    report, trace = tmp_path / f"{name}.json", tmp_path / f"{name}-trace.json"
    assert (
        main(["run", *SMALL, "--report", str(report), "--trace", str(trace), "--trace-vps", "6", *extra]) == 0
    )
    return json.loads(report.read_bytes()), trace.read_bytes()


@pytest.mark.usefixtures("local_ray")
def test_a_sharded_run_reports_what_the_local_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local, local_trace = _run(tmp_path, "local")
    sharded, sharded_trace = _run(tmp_path, "ray", "--backend", "ray", "--shards", "2")
    assert "ray 2." in capsys.readouterr().out
    # Only the backend and the shard fields differ.
    assert (local["options"].pop("backend"), sharded["options"].pop("backend")) == ("asyncio", "ray")
    assert local.pop("cluster") is None
    assert sharded.pop("cluster")["shards"] == 2
    shards = sharded["runs"][0].pop("shards")
    assert local["runs"][0].pop("shards") is None
    assert [(s["partitions"], s["status"]) for s in shards] == [([0, 8], "ok"), ([8, 16], "ok")]
    assert sharded == local
    assert sharded["runs"][0]["phases"][1]["actions"] > 3000
    assert sharded_trace == local_trace


def _options(**changes: Any) -> ExperimentOptions:
    base = mixed_virtual_run(12, 1500, 6, backend="ray")
    return msgspec.structs.replace(base, **{"seed": 3, **changes})


def _comparable(report: Report) -> dict[str, Any]:
    from runtime.cluster.bench import comparable

    return comparable(report)


@pytest.mark.usefixtures("local_ray")
def test_one_shard_and_three_shards_give_the_same_report() -> None:
    from runtime.cluster.coordinator import run_sharded

    options = _options()
    one = run_sharded(options, CostModel(), 1)
    three = run_sharded(options, CostModel(), 3)  # 3 shards share the 2 CPUs
    assert [s.partitions for s in three.shards or []] == [[0, 4], [4, 8], [8, 12]]
    assert _comparable(build_report([one], CostModel())) == _comparable(build_report([three], CostModel()))


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("phase", ["boot", "operations"])
def test_a_killed_shard_worker_is_lost_and_the_run_finishes(phase: str) -> None:
    """F8, the documented outcome: SIGKILL shard 1's worker process during ``phase``. The run
    finishes; shard 1 is ``lost`` in that phase with Ray's reason; its partitions are that
    phase's failed partitions and count as failed (partitions in boot, VPs in operations);
    the rest of the report is exactly what shard 0 measures on its own."""
    from runtime.cluster.coordinator import run_sharded
    from runtime.cluster.shard import ShardHost
    from runtime.cluster.wire import PhaseResult, ShardOrders, ShardResult, decode, encode

    # Long enough that the first progress poll (0.1 s) finds shard 1 still in the phase.
    options = _options(ops=60_000) if phase == "operations" else _options(partitions=3000, ops=600)
    killed: list[int] = []

    def kill_shard_1(now: str, done: list[float], pids: list[int]) -> None:
        if now == phase and not killed:
            os.kill(pids[1], signal.SIGKILL)
            killed.append(pids[1])

    run = run_sharded(options, CostModel(), 2, watch=kill_shard_1)
    assert killed
    assert build_report([run], CostModel()).deterministic is False  # the reason names a pid
    shards = run.shards or []
    assert [s.status for s in shards] == ["ok", "lost"]
    lost = shards[1]
    assert lost.lost_in == phase
    assert lost.reason is not None
    assert lost.reason.startswith(
        f"lost with shard 1: its Ray worker (pid {killed[0]}) died during the {phase} phase"
    )
    half = options.partitions // 2
    boot, ops = run.phases
    hit, spared = (boot, ops) if phase == "boot" else (ops, boot)
    assert sorted(hit.partition_failures) == list(range(half, options.partitions))
    assert set(hit.partition_failures.values()) == {lost.reason}
    assert hit.failed == (half if phase == "boot" else half * options.vps)
    assert spared.partition_failures == {}
    assert spared.failed == 0
    # Shard 0's share run alone, in this process, measures the same boot and operations.
    cells = Cells(options.partitions, options.vps, options.drivers).split(2)[0]
    host = ShardHost(
        encode(ShardOrders(shard=0, options=options, costs=CostModel(), cells=(cells.start, cells.stop)))
    )
    alone_boot = decode(host.boot(), PhaseResult)
    alone = decode(host.operate(boot.duration_ns), ShardResult)
    if phase == "boot":
        assert boot.recorder.state() == alone_boot.recorder
        assert boot.counters == alone_boot.counters
    else:
        assert boot.recorder.actions == 2 * alone_boot.recorder.actions  # both shards booted
    assert ops.recorder.state() == alone.phases[1].recorder
    assert ops.counters == alone.phases[1].counters


def test_a_non_loopback_address_without_token_auth_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """F7 through the command: refused before any connection is tried, exit 2, one line."""
    require_ray()
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["run", *SMALL, "--backend", "ray", "--address", "10.1.2.3:6379"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("tdvsm run: error: --address 10.1.2.3:6379: refused: host '10.1.2.3'")
    assert "RAY_AUTH_MODE=token" in err[0]
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert main(["run", *SMALL, "--backend", "ray"]) == 2
    assert "refused to start a local Ray with RAY_AUTH_MODE='disabled'" in capsys.readouterr().err


def test_more_shards_than_cells_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    require_ray()
    assert main(["run", *SMALL, "--backend", "ray", "--shards", "9"]) == 2
    err = capsys.readouterr().err
    assert "--shards 9: this experiment splits into 8 independent cells" in err
