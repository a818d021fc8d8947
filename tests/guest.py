"""Helpers for tests: initial contexts and a runtime with invariant checks on."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from protocol import InitialVpContext
from protocol._x86 import (
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
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
from runtime import Partition, Runtime, open_runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Flat 64-bit code and data segments, CPL 0.
CODE64 = segment(selector=0x08, limit=0xFFFF_FFFF, attributes=0xA09B)
DATA64 = segment(selector=0x10, limit=0xFFFF_FFFF, attributes=0xC093)
TSS64 = segment(selector=0x18, limit=0x67, attributes=0x8B)


def long_mode_context(rip: int = 0x1000, *, user: bool = False) -> InitialVpContext:
    """A 64-bit initial context (EFER=LME|LMA|NXE|SCE, CR0=PE|PG|NE|ET, CR4.PAE).

    With ``user`` the stack segment has DPL 3, so the guest runs at CPL 3.
    """
    ss = segment(selector=0x2B, limit=0xFFFF_FFFF, attributes=0xC0F3) if user else DATA64
    return InitialVpContext(
        rip=rip,
        rsp=0x8000,
        rflags=RFLAGS_RESERVED_1,
        cs=CODE64,
        ds=DATA64,
        es=DATA64,
        fs=DATA64,
        gs=DATA64,
        ss=ss,
        tr=TSS64,
        ldtr=segment(attributes=0x82),
        idtr=table(base=0x2000, limit=0xFFF),
        gdtr=table(base=0x3000, limit=0x37),
        efer=EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE,
        cr0=CR0_PE | CR0_PG | CR0_NE | CR0_ET,
        cr3=0x10_0000,
        cr4=CR4_PAE,
        msr_cr_pat=DEFAULT_PAT,
    )


@asynccontextmanager
async def checked_runtime(**options: object) -> AsyncIterator[Runtime]:
    """``open_runtime`` with every invariant checked after every step."""
    async with open_runtime(seed=1, check_invariants=True, **options) as rt:  # type: ignore[arg-type]
        yield rt


async def new_partition(rt: Runtime, **config: object) -> Partition:
    """A 4-VP partition unless told otherwise."""
    config.setdefault("vp_count", 4)
    return await rt.create_partition(**config)
