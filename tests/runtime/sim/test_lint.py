"""RELIABILITY A3: no hidden source of nondeterminism in the simulation core (runtime/sim/)."""

from __future__ import annotations

import ast
import pathlib
from typing import Final

import pytest

_SIM: Final = pathlib.Path(__file__).resolve().parents[3] / "runtime" / "sim"
#: The command-line shell reads the wall clock for its summary line and asks git for the commit;
#: neither reaches a seed (a seed's result is a function of its seed and step budget).
_SHELL: Final = {"commands.py"}
_CLOCKS: Final = {"time", "monotonic", "perf_counter", "perf_counter_ns", "time_ns", "monotonic_ns"}


def nondeterminism(source: str) -> list[str]:
    """Every use of a banned nondeterminism source in ``source``, as 'line: what'."""
    found: list[str] = []
    tree = ast.parse(source)
    sets: set[str] = set()
    for node in ast.walk(tree):  # names bound to sets anywhere in the module
        if isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if value is not None and _is_set(value, set()):
                sets.update(t.id for t in targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names]
            if "threading" in names or module == "threading":
                found.append(f"{line}: threading")
            if module in ("time", "random", "uuid", "secrets") and not (
                module == "random" and names == ["Random"]
            ):
                found.append(f"{line}: from {module} import {', '.join(names)}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, name = node.value.id, node.attr
            if owner == "time" and name in _CLOCKS:
                found.append(f"{line}: time.{name}")
            elif owner == "random" and name != "Random":
                found.append(f"{line}: random.{name} (the module's shared generator)")
            elif (owner, name) in (("uuid", "uuid4"), ("os", "urandom"), ("os", "getrandom")):
                found.append(f"{line}: {owner}.{name}")
            elif owner == "secrets":
                found.append(f"{line}: secrets.{name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "id":
            found.append(f"{line}: id()")
        elif isinstance(node, ast.For | ast.comprehension):
            if _is_set(node.iter, sets):
                found.append(f"{getattr(node.iter, 'lineno', line)}: iteration over a set")
    return found


def _is_set(node: ast.expr, sets: set[str]) -> bool:
    if isinstance(node, ast.Set | ast.SetComp):
        return True
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("set", "frozenset")
    ):
        return True
    return isinstance(node, ast.Name) and node.id in sets


def test_the_simulation_core_has_no_nondeterminism_source() -> None:
    """No wall clock, shared random generator, uuid4, urandom, id(), threading or set iteration."""
    files = sorted(p for p in _SIM.glob("*.py") if p.name not in _SHELL)
    assert len(files) >= 6
    problems = [f"{path.name}:{problem}" for path in files for problem in nondeterminism(path.read_text())]
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "import time\nt = time.perf_counter()\n",
        "import time\nt = time.monotonic()\n",
        "import random\nx = random.random()\n",
        "import random\nrandom.shuffle([1])\n",
        "from random import choice\n",
        "import uuid\nu = uuid.uuid4()\n",
        "import os\nb = os.urandom(4)\n",
        "x = id(object())\n",
        "import threading\n",
        "for x in {1, 2}:\n    pass\n",
        "s = set()\nfor x in s:\n    pass\n",
        "y = [x for x in frozenset((1, 2))]\n",
    ],
)
def test_the_lint_has_teeth(source: str) -> None:
    """Each banned construct is reported."""
    assert nondeterminism(source)


def test_the_lint_allows_what_is_deterministic() -> None:
    """Seeded generators, sorted sets, dicts and lists pass."""
    source = (
        "import random\nrng = random.Random(1)\ns = {1, 2}\nfor x in sorted(s):\n    pass\n"
        "d = {}\nfor k in d:\n    pass\nif 3 in s:\n    pass\n"
    )
    assert nondeterminism(source) == []
