"""Every example in examples/ runs to completion on both backends."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

#: A line each example must print: proof it reached its end, not just that it exited 0.
EXPECTED = {
    "seed_scenario.py": "VTL0 runs in long mode: EFER.LMA derived = 1",
    "vsm_boot.py": "VSM boot complete: VTL1 enabled on VP 0 and VP 1, both back in VTL0",
    "seed_intercept.py": "VTL0 resumed in long mode after the intercepted MOV CR0: EFER.LMA derived = 1",
    "asyncio_control_plane.py": "service stopped: its route and the mounted control plane shared one runtime",
    "remote_control_plane.py": "remote control plane: VSM up via tdvsm serve, events, pipeline, metrics",
}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(example: Path, backend: str) -> None:
    """The example exits 0 and prints its closing line."""
    done = subprocess.run(
        [sys.executable, str(example), backend], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert EXPECTED[example.name] in done.stdout


def test_every_example_has_an_expectation() -> None:
    """A new example cannot slip in without a checked closing line."""
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_imports_only_public_modules(example: Path) -> None:
    """Examples show what users write: no import of a private (underscore) module."""
    tree = ast.parse(example.read_text(encoding="utf-8"))
    modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert modules, "the example imports nothing?"
    private = [m for m in modules if m != "__future__" and any(p.startswith("_") for p in m.split("."))]
    assert private == []
