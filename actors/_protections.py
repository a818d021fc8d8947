"""VTL protection flag rules (LIB ``validate_vtl_gpa_flags``, DOMAIN 3.6)."""

from __future__ import annotations

__all__ = ("validate_vtl_gpa_flags",)

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
