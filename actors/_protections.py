"""VTL protection flag rules (LIB ``validate_vtl_gpa_flags``, DOMAIN 3.6) and the immutable page table."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final, TypeVar, overload

T = TypeVar("T")

__all__ = ("NO_PROTECTIONS", "Protections", "validate_vtl_gpa_flags")

_R, _W, _KX, _UX = 0x1, 0x2, 0x4, 0x8
_SSS, _PW, _VPW, _ADJUSTABLE = 0x10, 0x20, 0x40, 0x8000


def validate_vtl_gpa_flags(flags: int, *, mbec: bool, sss: bool = False) -> bool:
    """True when ``flags`` is an acceptable HvMapGpaFlags value for a VTL protection.

    The SSS clause follows the code, not its comment (DOMAIN 3.6: it looks inverted); since
    supervisor shadow stacks are never enabled on CVMs, SSS passes whenever an execute bit does.
    """
    if flags & _ADJUSTABLE:
        return False
    kx, ux = bool(flags & _KX), bool(flags & _UX)
    if kx != ux and ((kx and not ux) or not mbec):
        return False
    if flags & (_W | _KX | _UX | _SSS | _PW | _VPW) and not flags & _R:
        return False
    return not (flags & _SSS and (not (kx or ux) or sss))


#: Pages per chunk of a ``Protections`` table (a ModifyVtlProtectionMask carries at most 510).
_CHUNK_BITS: Final = 9


class Protections(Mapping[int, int]):
    """VTL0's per-page protection flags where they differ from the default mask: immutable.

    The supervisor publishes a new table with every change (``with_changes``), so a
    ``PartitionView`` holding one never changes under a reader, and a VP's journal can replay
    an access against the table that was current then. Pages are kept in chunks of 512 GPNs:
    a change copies only the chunks it touches and the chunk index, never the whole table.
    """

    __slots__ = ("_chunks", "_len")

    def __init__(self, chunks: dict[int, dict[int, int]] | None = None, length: int = 0) -> None:
        self._chunks: dict[int, dict[int, int]] = chunks if chunks is not None else {}
        self._len = length

    def __repr__(self) -> str:
        return f"<Protections pages={self._len}>"

    def __getitem__(self, gpn: int) -> int:
        chunk = self._chunks.get(gpn >> _CHUNK_BITS)
        if chunk is None:
            raise KeyError(gpn)
        return chunk[gpn]

    @overload
    def get(self, gpn: int, /) -> int | None: ...
    @overload
    def get(self, gpn: int, default: int | T, /) -> int | T: ...

    def get(self, gpn: int, default: object = None, /) -> object:
        """The flags of ``gpn``, or ``default`` where it has the default mask."""
        chunk = self._chunks.get(gpn >> _CHUNK_BITS)
        return default if chunk is None else chunk.get(gpn, default)

    def __iter__(self) -> Iterator[int]:
        for chunk in self._chunks.values():
            yield from chunk

    def __len__(self) -> int:
        return self._len

    def with_changes(self, changes: Iterable[tuple[int, int | None]]) -> Protections:
        """A new table with each ``(gpn, flags)`` applied (``None``: back to the default mask)."""
        chunks = dict(self._chunks)
        copied: set[int] = set()
        length = self._len
        for gpn, flags in changes:
            key = gpn >> _CHUNK_BITS
            if key not in copied:
                copied.add(key)
                chunks[key] = dict(chunks.get(key, {}))
            chunk = chunks[key]
            if flags is None:
                if chunk.pop(gpn, None) is not None:
                    length -= 1
            else:
                if gpn not in chunk:
                    length += 1
                chunk[gpn] = flags
        for key in copied:
            if not chunks[key]:
                del chunks[key]
        return Protections(chunks, length)


#: The table with no page off the default mask.
NO_PROTECTIONS: Final = Protections()
