"""RELIABILITY E1: every queue of the engine and the actors is bounded (a static check, with teeth)."""

from __future__ import annotations

import ast
import pathlib
from typing import Final

import pytest

_ROOT: Final = pathlib.Path(__file__).resolve().parents[2]
_SCANNED: Final = [*sorted((_ROOT / "actors").glob("*.py")), *sorted((_ROOT / "runtime").glob("*.py"))]

#: Each unbounded-looking queue the code creates, and what bounds it (file, function name).
_BOUNDED_BY: Final = {
    ("runtime/_mailbox.py", "put"): "Mailbox.put refuses the message past capacity with Busy",
    ("runtime/_scheduler.py", "__init__"): "the ready queue holds each cell at most once (VpCell.scheduled)",
    ("runtime/_scheduler.py", "run"): "the same ready queue, swapped at the start of a pass",
    ("runtime/_scheduler.py", "run_now"): "the same ready queue, swapped at the start of a pass",
    ("runtime/_supervision.py", "__init__"): "RestartHistory.admit keeps at most max_restarts times",
}


def unbounded_queues(source: str) -> list[tuple[str, int]]:
    """(function, line) of each deque() without maxlen and each memory stream of infinite size."""
    found: list[tuple[str, int]] = []
    tree = ast.parse(source)
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "deque" and not any(k.arg == "maxlen" for k in node.keywords) and len(node.args) < 2:
                found.append((function.name, node.lineno))
            if name in ("create_memory_object_stream", "open_memory_channel"):
                size = ast.unparse(node.args[0]) if node.args else "0"
                if "inf" in size:
                    found.append((function.name, node.lineno))
    return found


def test_every_unbounded_looking_queue_has_a_stated_bound() -> None:
    """No deque() without maxlen and no infinite memory stream unless _BOUNDED_BY says what bounds it."""
    seen = set()
    for path in _SCANNED:
        relative = path.relative_to(_ROOT).as_posix()
        for function, line in unbounded_queues(path.read_text()):
            assert (relative, function) in _BOUNDED_BY, f"{relative}:{line} ({function}): an unbounded queue"
            seen.add((relative, function))
    assert seen == set(_BOUNDED_BY)  # no stale entries


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    q = deque()\n", [("f", 2)]),
        ("def f():\n    q = collections.deque([])\n", [("f", 2)]),
        ("def f():\n    q = deque(maxlen=8)\n", []),
        ("def f():\n    a, b = anyio.create_memory_object_stream(math.inf)\n", [("f", 2)]),
        ("def f():\n    a, b = trio.open_memory_channel(float('inf'))\n", [("f", 2)]),
        ("def f():\n    a, b = anyio.create_memory_object_stream(16)\n", []),
    ],
)
def test_the_scan_finds_unbounded_queues(source: str, expected: list[tuple[str, int]]) -> None:
    """Teeth: the scan reports the constructs it is meant to ban."""
    assert unbounded_queues(source) == expected
