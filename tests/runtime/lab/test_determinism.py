"""A seeded virtual run gives the same bytes in another process, and along either execution path.

Runs in one process share their hash seed, so ordering something through a set of strings
goes unnoticed there; two processes with different ``PYTHONHASHSEED`` values catch it. The
guest programs of a virtual run execute in-line in the scheduler; driven through the mailboxes
instead, they must give the very same report.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import msgspec
import pytest

from runtime.lab.costs import CostModel
from runtime.lab.experiment import ExperimentOptions, run_experiment
from runtime.lab.report import build_report, encode_report
from runtime.lab.trace import trace_document
from runtime.lab.workloads import resolve

if TYPE_CHECKING:
    from pathlib import Path

_RUN = "import sys; from runtime.cli import main; sys.exit(main(sys.argv[1:]))"


def _report(tmp_path: Path, hash_seed: str) -> tuple[bytes, bytes]:
    report, trace = tmp_path / f"r{hash_seed}.json", tmp_path / f"t{hash_seed}.json"
    args = ["run", "--partitions", "6", "--vps", "3", "--clock", "virtual", "--ops", "400", "--seed", "11"]
    args += ["--no-progress", "--report", str(report), "--trace", str(trace), "--trace-vps", "3"]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return report.read_bytes(), trace.read_bytes()


def test_same_seed_same_bytes_under_two_hash_seeds(tmp_path: Path) -> None:
    """PYTHONHASHSEED 1 and 2: the same report and trace bytes; the report is not trivially small."""
    first, second = _report(tmp_path, "1"), _report(tmp_path, "2")
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert b'"deterministic": true' in first[0]
    assert first[0].count(b'"action":') > 10


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"workload": "mixed", "ops": None, "duration": 0.0004, "rate": 2e6},  # open loop, flooded
        {"workload": "boot", "mix": resolve("boot"), "ops": None},
        {"commit_policy": "eager", "backend": "trio"},
    ],
    ids=["mixed", "open-loop", "boot", "eager-trio"],
)
def test_inline_guest_programs_give_the_driven_report_byte_for_byte(changes: dict[str, object]) -> None:
    """The same seeded virtual run, guest programs in-line vs through the mailboxes: same bytes
    (report and trace), and the in-line run really took no mailbox path."""
    options = msgspec.structs.replace(
        ExperimentOptions(
            partitions=5,
            vps=3,
            workload="mixed",
            mix=resolve("mixed"),
            duration=None,
            ops=300,
            drivers=4,
            rate=None,
            backend="asyncio",
            clock="virtual",
            commit_policy="batched",
            seed=3,
            trace_vps=3,
        ),
        **changes,
    )
    results = {}
    for inline in (False, True):
        data = anyio.run(
            functools.partial(run_experiment, options, CostModel(), inline=inline), backend=options.backend
        )
        trace = json.dumps(trace_document(data.traces, data.origin, "virtual"), sort_keys=True)
        results[inline] = (encode_report(build_report([data], CostModel())), trace, data.scheduler)
    (driven, driven_trace, driven_stats), (inline, inline_trace, inline_stats) = results[False], results[True]
    assert inline == driven
    assert inline_trace == driven_trace
    assert b'"actions_by_type"' in inline
    # The same scheduler steps, but in-line ones ran in the caller's passes (run_now), not in
    # the runner task's: no event-loop round trip per action.
    assert inline_stats["steps"] == driven_stats["steps"]
    assert driven_stats["inline_passes"] == 0
    runner_passes = inline_stats["passes"] - inline_stats["inline_passes"]
    assert runner_passes < driven_stats["passes"] / 10, (inline_stats, driven_stats)


def test_inline_refuses_the_real_clock() -> None:
    """In-line programs have no wall-clock latency of their own to measure: refused."""
    options = ExperimentOptions(
        partitions=1,
        vps=1,
        workload="boot",
        mix=resolve("boot"),
        duration=None,
        ops=None,
        drivers=1,
        rate=None,
        backend="asyncio",
        clock="real",
        commit_policy="batched",
        seed=1,
        trace_vps=0,
    )
    with pytest.raises(ValueError, match="need the virtual clock"):
        anyio.run(functools.partial(run_experiment, options, CostModel(), inline=True))
