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


def layering_violations(source: str, path: str) -> list[str]:
    """Every import in ``source`` (a file at ``path`` under ROOT) that its layer may not make."""
    layer = Path(path).parts[0]
    allowed = ALLOWED[layer]
    if allowed is None:
        return []
    problems = []
    for line, module in imported_modules(source, path):
        top = module.split(".")[0]
        if top not in allowed and top not in STDLIB:
            problems.append(f"{path}:{line}: {layer} imports {module}")
    return problems


def _source_files() -> list[Path]:
    return sorted(file for package in PACKAGES for file in (ROOT / package).rglob("*.py"))


def test_every_layer_has_source_files() -> None:
    """The checker sees each package's modules (so an empty scan cannot pass silently)."""
    files = _source_files()
    for package in PACKAGES:
        assert any(file.relative_to(ROOT).parts[0] == package for file in files), package
        assert (ROOT / package / "__init__.py") in files


def test_no_import_points_up_the_layers() -> None:
    """No module in protocol/, actors/ or runtime/ imports a layer above it or a foreign package."""
    problems = [
        problem
        for file in _source_files()
        for problem in layering_violations(
            file.read_text(encoding="utf-8"), file.relative_to(ROOT).as_posix()
        )
    ]
    assert problems == []


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
