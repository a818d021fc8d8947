"""Workloads: guest models that drive VPs, one small module each.

Every module's docstring says which real guest behaviour it stands for. ``boot`` brings up
Guest VSM on a whole partition (DOMAIN S1 and S2) and always runs first; the *operation*
workloads each define ``episode(guest, rng)``, a guest program (a generator yielding
``(guest, action)`` and receiving outcomes, see ``_guest``) for one operation on one VP that
starts and ends in VTL0; ``mixed`` (or a user's TOML/JSON mix file) picks an operation workload
by weight for each operation. To add a workload, write a module with ``NAME``, a docstring and
``episode``, and list it in ``_OPERATION_MODULES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias, final

import msgspec

from . import boot, exits, intercept_storm, mixed, protections, register_storm, vtl_pingpong
from ._checks import recover
from ._guest import Driver, Guest, Program, Unexpected, drive, long_mode_context, run_inline
from .mixed import DEFAULT_WEIGHTS, MixError, MixFile, load_mix

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

__all__ = (
    "BOOT",
    "MIXED",
    "OPERATIONS",
    "Driver",
    "Guest",
    "Mix",
    "MixError",
    "MixFile",
    "Program",
    "Unexpected",
    "Workload",
    "boot_partition",
    "boot_program",
    "describe",
    "drive",
    "long_mode_context",
    "recover",
    "resolve",
    "run_inline",
)

Episode: TypeAlias = "Callable[[Guest, random.Random], Program[None]]"

BOOT: Final = boot.NAME
MIXED: Final = mixed.NAME
boot_partition = boot.boot_partition
boot_program = boot.boot_program


@final
class Workload:
    """One operation workload: its name, its guest model and what it stands for."""

    __slots__ = ("description", "episode", "name")

    def __init__(self, name: str, episode: Episode, description: str) -> None:
        self.name = name
        self.episode = episode
        self.description = description

    def __repr__(self) -> str:
        return f"<Workload {self.name}>"

    @property
    def summary(self) -> str:
        """The first line of the description, without the leading ``name:``."""
        first = self.description.strip().splitlines()[0]
        return first.split(":", 1)[1].strip() if ":" in first else first


_OPERATION_MODULES: Final = (exits, vtl_pingpong, register_storm, intercept_storm, protections)

#: Operation workloads by name.
OPERATIONS: Final[dict[str, Workload]] = {
    module.NAME: Workload(module.NAME, module.episode, module.__doc__ or "") for module in _OPERATION_MODULES
}


class Mix(msgspec.Struct, frozen=True, kw_only=True):
    """What a run's operation phase does: workload weights (empty for ``boot`` alone)."""

    name: str
    weights: dict[str, float]
    source: str = "built-in"


def describe() -> list[tuple[str, str]]:
    """(name, one-line summary) of every workload, ``boot`` first and ``mixed`` last."""
    rows = [(BOOT, _summary(boot.__doc__))]
    rows += [(name, workload.summary) for name, workload in OPERATIONS.items()]
    rows.append((MIXED, _summary(mixed.__doc__)))
    return rows


def _summary(doc: str | None) -> str:
    first = (doc or "").strip().splitlines()[0]
    return first.split(":", 1)[1].strip() if ":" in first else first


def resolve(workload: str) -> Mix:
    """The mix ``workload`` names: a workload name, or a path to a TOML/JSON mix file.

    Raises:
        MixError: an unknown name, or a bad mix file (one line).
    """
    if workload == BOOT:
        return Mix(name=BOOT, weights={})
    if workload == MIXED:
        return Mix(name=MIXED, weights={k: v for k, v in DEFAULT_WEIGHTS.items() if k in OPERATIONS})
    if workload in OPERATIONS:
        return Mix(name=workload, weights={workload: 1.0})
    path = Path(workload)
    if path.suffix.lower() in (".toml", ".json") or path.exists():
        mix = load_mix(path, frozenset(OPERATIONS))
        weights = {name: float(w) for name, w in sorted(mix.weights.items()) if w > 0}
        return Mix(name=mix.name, weights=weights, source=str(path))
    known = ", ".join(name for name, _ in describe())
    msg = f"unknown workload {workload!r} (known: {known}; or a .toml/.json mix file)"
    raise MixError(msg)
