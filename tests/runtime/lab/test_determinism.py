"""A seeded virtual run gives the same bytes in another process, whatever the hash seed.

Runs in one process share their hash seed, so ordering something through a set of strings
goes unnoticed there; two processes with different ``PYTHONHASHSEED`` values catch it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

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
