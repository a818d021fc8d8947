"""Fault points inside the synchronous core: where a simulation harness may inject a crash.

``FAULTS.hook`` is None in normal runs, so a fault point costs one attribute lookup. A
deterministic simulation (``runtime.sim``) sets it to a function that decides, from its seeded
plan, whether to raise at that point; the runtime clears it while it replays a VP's journal
after a crash. Points: ``"stage"`` (before each staged register write: element k of a
SetVpRegisters, or inside a context load), ``"commit"`` and ``"commit.applied"`` (before and
after a commit changes anything) and ``"controls"`` (before a control message, a context load,
is applied).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("FAULTS", "POINTS", "FaultHook")

#: Every fault point name.
POINTS: Final = ("stage", "commit", "commit.applied", "controls")


@final
class FaultHook:
    """Holds the function called at each fault point (None: no faults)."""

    __slots__ = ("hook",)

    def __init__(self) -> None:
        self.hook: Callable[[str], None] | None = None


#: The process's fault hook.
FAULTS: Final = FaultHook()
