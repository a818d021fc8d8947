"""Public helpers for tests and guest models: initial VP contexts a real guest would use.

The contexts here are what a 64-bit kernel or secure kernel hands to EnableVpVtl and
StartVirtualProcessor: flat CPL-0 segments (or a CPL-3 stack for user mode), paging on, EFER with
LME, LMA, NXE and SCE. EFER.LMA is supplied as a guest would; tdvsm derives it anyway.
"""

from __future__ import annotations

from typing import Final

from protocol import InitialVpContext
from protocol._x86 import (
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    DEFAULT_PAT,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    RFLAGS_RESERVED_1,
    segment,
    table,
)

__all__ = ("CODE64", "DATA64", "LONG_MODE_CR0", "LONG_MODE_CR4", "TSS64", "USER_DATA64", "long_mode_context")

#: Flat 64-bit code and data segments (DPL 0), a user-mode (DPL 3) stack segment and a TSS.
CODE64: Final = segment(selector=0x08, limit=0xFFFF_FFFF, attributes=0xA09B)
DATA64: Final = segment(selector=0x10, limit=0xFFFF_FFFF, attributes=0xC093)
USER_DATA64: Final = segment(selector=0x2B, limit=0xFFFF_FFFF, attributes=0xC0F3)
TSS64: Final = segment(selector=0x18, limit=0x67, attributes=0x8B)
#: CR0 and CR4 of a 64-bit kernel.
LONG_MODE_CR0: Final = CR0_PE | CR0_PG | CR0_NE | CR0_ET | CR0_WP
LONG_MODE_CR4: Final = CR4_PAE


def long_mode_context(rip: int = 0x1000, *, rsp: int = 0x8000, user: bool = False) -> InitialVpContext:
    """A 64-bit initial VP context; with ``user`` the stack segment has DPL 3 (CPL 3)."""
    return InitialVpContext(
        rip=rip,
        rsp=rsp,
        rflags=RFLAGS_RESERVED_1,
        cs=CODE64,
        ds=DATA64,
        es=DATA64,
        fs=DATA64,
        gs=DATA64,
        ss=USER_DATA64 if user else DATA64,
        tr=TSS64,
        ldtr=segment(attributes=0x82),
        idtr=table(base=0x2000, limit=0xFFF),
        gdtr=table(base=0x3000, limit=0x37),
        efer=EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE,
        cr0=LONG_MODE_CR0,
        cr3=0x10_0000,
        cr4=LONG_MODE_CR4,
        msr_cr_pat=DEFAULT_PAT,
    )
