"""The base Struct of every protocol message and the integer bounds shared by their fields."""

from __future__ import annotations

from typing import Annotated, TypeAlias

import msgspec

__all__ = ("U8", "U16", "U32", "U64", "U128", "Msg", "check_width")

# msgspec.Meta bounds must fit in int64, so the upper bounds of wide fields are checked in
# __post_init__ with check_width (it runs on construction and on decode).
U8: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=0xFF)]
U16: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
U32: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]
U64: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
U128: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]


def check_width(owner: str, field: str, value: int, bits: int) -> None:
    """Raise ValueError unless 0 <= value < 2**bits (a ValidationError when decoding)."""
    if not 0 <= value < (1 << bits):
        msg = f"{owner}.{field}={value:#x} is out of range for an unsigned {bits}-bit value"
        raise ValueError(msg)


class Msg(msgspec.Struct, tag_field="type", frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every protocol message; the wire tag (field ``type``) is the class name.

    The tag field is not ``kind`` because ``MemoryAccess.kind`` is part of the API. msgspec
    applies ``frozen`` and ``kw_only`` only to the class that declares them, so every subclass
    repeats both.
    """
