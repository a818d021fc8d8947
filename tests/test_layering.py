"""Imports only point down the layer list runtime -> actors -> protocol (API.md "Layout and layering")."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "actors", "runtime")

#: Non-stdlib top-level modules each layer may import; None means anything (runtime is the top).
ALLOWED: dict[str, frozenset[str] | None] = {
    "protocol": frozenset({"protocol", "msgspec"}),
    "actors": frozenset({"actors", "protocol", "anyio", "msgspec"}),
    "runtime": None,
}
STDLIB = frozenset(sys.stdlib_module_names)


def _package_parts(path: str) -> list[str]:
    """The package a relative import in ``path`` starts from."""
    parts = list(Path(path).with_suffix("").parts)
    return parts[:-1]


def imported_modules(source: str, path: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, wherever it appears.

    Relative imports are resolved against ``path`` (relative to the repository root); one that
    climbs above the top-level package resolves to the name it would then denote. Calls of
    ``importlib.import_module``/``__import__`` with a literal name count as imports too.
    """
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                yield node.lineno, node.module
                continue
            base = _package_parts(path)
            base = base[: max(len(base) - (node.level - 1), 0)]
            if node.module is not None:
                yield node.lineno, ".".join([*base, node.module])
            elif base:
                for alias in node.names:
                    yield node.lineno, ".".join([*base, alias.name])
            else:  # "from .. import x" above the top package names the top-level module x
                for alias in node.names:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


#: runtime/'s rooms (API.md "Layout of runtime/"): each may import the engine (runtime's own
#: top-level modules) and the rooms listed here, nothing else of runtime/.
ROOMS: dict[str, frozenset[str]] = {
    "engine": frozenset(),
    "lab": frozenset({"lab"}),
    "sim": frozenset({"sim", "lab"}),
    "serve": frozenset({"serve", "lab"}),
    "cluster": frozenset({"cluster", "lab"}),
}
#: Modules that see every room (the dispatcher of the ``tdvsm`` command).
SEES_ALL = frozenset({"runtime.cli"})
#: Third-party packages only one room may import.
CONFINED: dict[str, str] = {"ray": "cluster"}


def _module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str | None:
    """The room of a runtime module (``engine`` for runtime's own modules), else None."""
    parts = module.split(".")
    if parts[0] != "runtime":
        return None
    if len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    return "engine"


def layering_violations(source: str, path: str) -> list[str]:
    """Every import in ``source`` (a file at ``path`` under ROOT) that its layer or room may not make."""
    layer = Path(path).parts[0]
    allowed = ALLOWED[layer]
    module = _module_name(path)
    room = room_of(module)
    problems = []
    for line, imported in imported_modules(source, path):
        top = imported.split(".")[0]
        where = f"{path}:{line}"
        if allowed is not None and top not in allowed and top not in STDLIB:
            problems.append(f"{where}: {layer} imports {imported}")
        confined = CONFINED.get(top)
        if confined is not None and room != confined:
            problems.append(f"{where}: only runtime/{confined}/ may import {top} ({imported})")
        target = room_of(imported)
        if room is None or target is None or module in SEES_ALL or target == "engine":
            continue
        if target not in ROOMS[room]:
            problems.append(f"{where}: runtime {room} imports {imported} (room {target})")
    return problems


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports at run time (``if TYPE_CHECKING:`` blocks excluded).

    ``sources`` maps repository-relative paths to their text. ``from package import name`` points
    at the submodule ``package.name`` when there is one, else at the package.
    """
    modules = {_module_name(path): path for path in sources}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, set())
        for imported in runtime_imports(sources[path], path):
            for candidate in imported:
                if candidate in modules and candidate != name:
                    edges.add(candidate)
                    break
    return graph


def runtime_imports(source: str, path: str) -> Iterator[tuple[str, ...]]:
    """Per import outside ``if TYPE_CHECKING:``, the names it may denote, most specific first."""
    tree = ast.parse(source, filename=path)
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            checking.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in checking or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        sub = ast.Module(body=[node], type_ignores=[])
        for _, name in imported_modules(ast.unparse(sub), path):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    yield f"{name}.{alias.name}", name
            else:
                yield (name,)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def _source_files() -> list[Path]:
    return sorted(file for package in PACKAGES for file in (ROOT / package).rglob("*.py"))


def _sources() -> dict[str, str]:
    return {file.relative_to(ROOT).as_posix(): file.read_text(encoding="utf-8") for file in _source_files()}


def test_every_layer_has_source_files() -> None:
    """The checker sees each package's modules (so an empty scan cannot pass silently)."""
    files = _source_files()
    for package in PACKAGES:
        assert any(file.relative_to(ROOT).parts[0] == package for file in files), package
        assert (ROOT / package / "__init__.py") in files
    assert (ROOT / "runtime" / "lab" / "__init__.py") in files


def test_no_import_points_up_the_layers() -> None:
    """No module imports a layer above it, a foreign package, or a room of runtime/ it may not see."""
    problems = [
        problem for path, source in _sources().items() for problem in layering_violations(source, path)
    ]
    assert problems == []


def test_no_import_cycle() -> None:
    """The run-time import graph of protocol/, actors/ and runtime/ has no cycle."""
    graph = import_graph(_sources())
    assert "runtime.lab.commands" in graph["runtime.cli"]  # the graph sees real edges
    assert import_cycles(graph) == []


# ---- Self-test of the checker --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("protocol/_fake.py", "from runtime import x\n"),
        ("protocol/_fake.py", "import actors\n"),
        ("protocol/_fake.py", "import actors._vp as vp\n"),
        ("protocol/_fake.py", "import anyio\n"),
        ("protocol/_fake.py", "def f():\n    import runtime._host\n"),
        ("protocol/_fake.py", "from .. import runtime\n"),
        ("protocol/_fake.py", "from ..actors import VpActor\n"),
        ("protocol/sub/_fake.py", "from ...runtime import open_runtime\n"),
        ("actors/_fake.py", "from runtime import open_runtime\n"),
        (
            "actors/_fake.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runtime import Vp\n",
        ),
        ("actors/_fake.py", "import trio\n"),
        ("actors/_fake.py", "import importlib\nm = importlib.import_module('runtime')\n"),
        ("actors/_fake.py", "m = __import__('runtime._host')\n"),
        ("actors/_fake.py", "from ..runtime._host import Vp\n"),
        ("runtime/_fake.py", "from .lab import experiment\n"),
        ("runtime/_host.py", "def f():\n    from runtime.lab.report import Report\n"),
        ("runtime/_fake.py", "from runtime.serve import create_app\n"),
        ("runtime/lab/_fake.py", "from ..sim import campaign\n"),
        ("runtime/lab/bench/_fake.py", "from ...serve import create_app\n"),
        ("runtime/lab/_fake.py", "import runtime.cluster\n"),
        ("runtime/sim/_fake.py", "from ..serve import app\n"),
        ("runtime/serve/_fake.py", "from runtime.cluster import shard\n"),
        ("runtime/cluster/_fake.py", "from runtime.sim import run_seed\n"),
        ("runtime/lab/_fake.py", "import ray\n"),
        ("runtime/_fake.py", "def f():\n    import ray.util\n"),
    ],
)
def test_checker_flags_an_upward_or_foreign_import(path: str, source: str) -> None:
    """The checker reports a synthetic upward (or not-allowed) import in a lower layer."""
    assert len(layering_violations(source, path)) == 1


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("protocol/_fake.py", "from ._base import Msg\nimport msgspec\nimport enum\n"),
        ("protocol/__init__.py", "from __future__ import annotations\nfrom . import _wire\n"),
        ("actors/_fake.py", "from protocol import Vtl\nfrom protocol._x86 import CR0_PE\nimport anyio\n"),
        ("actors/_fake.py", "from ._state import VpState\nfrom . import _tdx\nimport msgspec\n"),
        (
            "runtime/_fake.py",
            "import trio\nimport sniffio\nfrom actors import VpActor\nfrom protocol import Vtl\n",
        ),
        (
            "runtime/lab/_fake.py",
            "from .._host import open_runtime\nfrom . import report\nfrom .bench import x\n",
        ),
        ("runtime/sim/_fake.py", "from ..lab.workloads import resolve\nfrom .. import testing\n"),
        ("runtime/serve/_fake.py", "from runtime.lab.report import Report\nfrom ._app import create_app\n"),
        ("runtime/cluster/_fake.py", "import ray\nfrom ..lab import experiment\n"),
        ("runtime/cli.py", "from .lab import commands\nfrom .sim import commands\nfrom .serve import x\n"),
    ],
)
def test_checker_accepts_downward_imports(path: str, source: str) -> None:
    """Imports of the own package, lower layers, allowed libraries and the stdlib are not flagged."""
    assert layering_violations(source, path) == []


def test_relative_imports_resolve_against_the_file() -> None:
    """Relative imports are resolved to absolute names from the importing file's package."""
    found = [
        name for _, name in imported_modules("from ._wire import x\nfrom . import _hv\n", "protocol/_a.py")
    ]
    assert found == ["protocol._wire", "protocol._hv"]
    found = [name for _, name in imported_modules("from . import _hv\n", "protocol/__init__.py")]
    assert found == ["protocol._hv"]


def test_checker_finds_an_import_cycle() -> None:
    """A two-module cycle, a lazy (function-level) one and a longer one are all reported."""
    sources = {
        "runtime/lab/a.py": "from . import b\n",
        "runtime/lab/b.py": "def f():\n    from .a import x\n",
        "runtime/lab/c.py": "from .d import y\n",
        "runtime/lab/d.py": "import runtime.lab.e\n",
        "runtime/lab/e.py": "from runtime.lab import f, c\n",
        "runtime/lab/f.py": "from . import a\n",
    }
    assert import_cycles(import_graph(sources)) == [
        ["runtime.lab.a", "runtime.lab.b"],
        ["runtime.lab.c", "runtime.lab.d", "runtime.lab.e"],
    ]


def test_checker_ignores_type_checking_imports() -> None:
    """Imports under ``if TYPE_CHECKING:`` are for the type checker only: no cycle."""
    sources = {
        "runtime/lab/a.py": "from . import b\n",
        "runtime/lab/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
    }
    assert import_cycles(import_graph(sources)) == []
