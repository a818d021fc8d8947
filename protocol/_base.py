"""The base Struct of every protocol message and the integer bounds shared by their fields."""

from __future__ import annotations

import enum
from typing import Annotated, Final, TypeAlias

import msgspec

__all__ = ("DECIMAL_FIELDS", "U8", "U16", "U32", "U64", "U128", "Msg", "check_width", "hex_repr")

# msgspec.Meta bounds must fit in int64, so the upper bounds of wide fields are checked in
# __post_init__ with check_width (it runs on construction and on decode).
U8: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=0xFF)]
U16: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
U32: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]
# ``extra["bits"]`` tells the boundary checks (``_validate``) the width msgspec cannot hold.
U64: TypeAlias = Annotated[int, msgspec.Meta(ge=0, extra={"bits": 64})]
U128: TypeAlias = Annotated[int, msgspec.Meta(ge=0, extra={"bits": 128})]


def check_width(owner: str, field: str, value: int, bits: int) -> None:
    """Raise ValueError unless 0 <= value < 2**bits (a ValidationError when decoding)."""
    if not 0 <= value < (1 << bits):
        msg = f"{owner}.{field}={value:#x} is out of range for an unsigned {bits}-bit value"
        raise ValueError(msg)


#: Integer fields that count or index rather than hold a register value: shown in decimal.
DECIMAL_FIELDS: Final = frozenset(
    {
        "access_type",
        "entry_reason",
        "id",
        "instruction_length",
        "partition",
        "rep_count",
        "rep_start",
        "reps_completed",
        "target_vtl",
        "vector",
        "vp_index",
        "vmcs_writes",
        "vmcs_reads",
        "commits",
        "cr",
    }
)


def _shown(name: str, value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if type(value) is int:
        # A sentinel (HV_VP_INDEX_SELF is 0xFFFFFFFE) reads better in hex even where counts do not.
        return str(value) if name in DECIMAL_FIELDS and value < 1 << 31 else f"{value:#x}"
    if (
        isinstance(value, list | tuple)
        and value
        and all(type(v) is int or isinstance(v, enum.Enum) for v in value)
    ):
        inner = ", ".join(_shown(name, v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


def hex_repr(struct: msgspec.Struct) -> str:
    """``Name(field=value, ...)`` with register values in hex, counts and indices in decimal.

    Integers are hexadecimal unless their field is in ``DECIMAL_FIELDS`` (and below 2**31, so
    a sentinel such as HV_VP_INDEX_SELF stays hex); enum members show
    their name (``HvStatus.SUCCESS``), nested Structs their own repr.
    """
    fields = ", ".join(f"{name}={_shown(name, getattr(struct, name))}" for name in struct.__struct_fields__)
    return f"{type(struct).__name__}({fields})"


class Msg(msgspec.Struct, tag_field="type", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every protocol message; the wire tag (field ``type``) is the class name.

    The tag field is not ``kind`` because ``MemoryAccess.kind`` is part of the API. msgspec
    applies ``frozen`` and ``kw_only`` only to the class that declares them, so every subclass
    repeats both. The repr shows register values in hex (``hex_repr``).
    """

    def __repr__(self) -> str:
        return hex_repr(self)
