"""protections: VTL1 changes VTL0's access to a page, and VTL0 runs into it (GPA intercepts).

What kernel data protection and HVCI do to a Windows guest: VTL0 asks the secure kernel (a VTL
call) to make a page read-only; VTL1 applies HvCallModifyVtlProtectionMask and returns. When
VTL0 later writes the page, the access is refused and VTL1 receives a GPA intercept message in
SINT0 (entered with entry reason 2). Here VTL1 then lifts the protection again (all access),
frees the SINT0 slot (HvMessageTypeNone into its header, DOMAIN 7.3) and returns, and VTL0's
retried write completes. Each VP works on pages
of its own, so VPs of one partition never see each other's protections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    AccessKind,
    ClearMessageSlot,
    Completed,
    HvMapGpaFlags,
    Intercepted,
    MemoryAccess,
    ModifyVtlProtectionMask,
    Vtl,
    VtlCall,
    VtlReturn,
)

from ._checks import expect_success, expect_switch
from ._guest import Unexpected

if TYPE_CHECKING:
    import random

    from ._guest import Guest, Program

__all__ = ("NAME", "REQUIRES", "episode")

NAME: Final = "protections"
REQUIRES: Final = ("ModifyVtlProtectionMask", "Intercepted")
#: First guest page used, and how many pages each VP owns.
BASE_GPN: Final = 0x1000
PAGES_PER_VP: Final = 64
#: Read and execute (kernel and user), no write: what a read-only protection grants.
READ_EXECUTE: Final = HvMapGpaFlags(readable=True, kernel_executable=True, user_executable=True).bits


def episode(guest: Guest, rng: random.Random) -> Program[None]:
    """Protect one page, fault on it, lift the protection, retry."""
    gpn = BASE_GPN + guest.vp_index * PAGES_PER_VP + rng.randrange(PAGES_PER_VP)
    expect_switch((yield guest, VtlCall()), Vtl.VTL1, "VtlCall")
    protect = ModifyVtlProtectionMask(gpns=[gpn], map_flags=READ_EXECUTE)
    expect_success((yield guest, protect), "ModifyVtlProtectionMask(read-only)")
    expect_switch((yield guest, VtlReturn(fast=True)), Vtl.VTL0, "VtlReturn(fast)")
    write = MemoryAccess(gpa=gpn << 12, kind=AccessKind.WRITE)
    outcome = yield guest, write
    if type(outcome) is not Intercepted:
        msg = f"write to a read-only page was not intercepted: {outcome!r}"
        raise Unexpected(msg)
    lift = ModifyVtlProtectionMask(gpns=[gpn], map_flags=HvMapGpaFlags.ALL)
    expect_success((yield guest, lift), "ModifyVtlProtectionMask(all access)")
    yield guest, ClearMessageSlot()
    expect_switch((yield guest, VtlReturn(fast=True)), Vtl.VTL0, "VtlReturn(fast)")
    retried = yield guest, write
    if type(retried) is not Completed:
        msg = f"retried write did not complete: {retried!r}"
        raise Unexpected(msg)
