"""mixed: a weighted mix of the operation workloads, like a busy VBS-enabled Windows guest.

Each operation picks one workload by weight. The default mix is mostly paravisor-handled
VTL0 exits, then secure calls (vtl-pingpong), intercepted CR0/LSTAR writes, VTL1 register
emulation bursts and page protection changes. A user defines another mix in a TOML or JSON
file, decoded with msgspec into ``MixFile``::

    name = "hvci-heavy"                 # optional
    description = "..."                 # optional
    [weights]                           # workload name -> relative weight (>= 0)
    exits = 4
    intercept-storm = 3
    vtl-pingpong = 1
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

import msgspec

__all__ = ("DEFAULT_WEIGHTS", "NAME", "MixError", "MixFile", "load_mix")

NAME: Final = "mixed"

#: The default mix (workloads the runtime cannot run yet are dropped from it).
DEFAULT_WEIGHTS: Final = {
    "exits": 50.0,
    "vtl-pingpong": 20.0,
    "intercept-storm": 15.0,
    "register-storm": 10.0,
    "protections": 5.0,
}

Weight = Annotated[float, msgspec.Meta(ge=0, le=1e9)]


class MixFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A user-defined mix: workload name -> relative weight."""

    weights: dict[str, Weight]
    name: str = "custom"
    description: str = ""


class MixError(ValueError):
    """Raised when a mix file cannot be read or does not describe a usable mix."""


_decode_json: Final = msgspec.json.Decoder(MixFile)


def load_mix(path: str | Path, known: frozenset[str]) -> MixFile:
    """Read and check a mix file (``.json`` is JSON, anything else TOML).

    Raises:
        MixError: one line saying what is wrong (unreadable file, syntax error with its
            position, wrong type at a path, unknown workload, no positive weight).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read workload file {path}: {exc.strerror or exc}"
        raise MixError(msg) from exc
    is_json = path.suffix.lower() == ".json"
    try:
        mix = _decode_json.decode(data) if is_json else msgspec.toml.decode(data, type=MixFile)
    except msgspec.ValidationError as exc:
        msg = f"bad workload file {path}: {exc}"
        raise MixError(msg) from exc
    except msgspec.DecodeError as exc:
        kind = "JSON" if is_json else "TOML"
        msg = f"workload file {path} is not valid {kind}: {str(exc).splitlines()[0]}"
        raise MixError(msg) from exc
    unknown = sorted(set(mix.weights) - known)
    if unknown:
        msg = f"bad workload file {path}: unknown workload {unknown[0]!r} (known: {', '.join(sorted(known))})"
        raise MixError(msg)
    if not any(weight > 0 for weight in mix.weights.values()):
        msg = f"bad workload file {path}: no workload has a positive weight"
        raise MixError(msg)
    return mix
