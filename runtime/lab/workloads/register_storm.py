"""register-storm: VTL1 changes VTL0's state through SetVpRegisters (the seed document's path).

What a secure kernel does when it emulates VTL0 for a while, e.g. HyperGuard letting the VTL0
kernel patch protected text: VTL0 calls into VTL1; VTL1 reads VTL0's RIP and CR0
(HvCallGetVpRegisters, target VTL0), then for each emulated step writes CR0 with WP cleared,
then set again, each time advancing RIP (HvCallSetVpRegisters, target VTL0: every CR0 write
re-derives VTL0's execution mode and VMCS CR fields), and returns. Between a VtlCall and the
return, none of those writes needs to reach the VMCS until VTL0 runs again: this is the
workload where batched commits differ most from OpenHCL's one commit per register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    GetVpRegisters,
    HvRegisterName as Reg,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
)
from protocol._x86 import CR0_WP, U64_MASK

from ._checks import expect_success, expect_switch

if TYPE_CHECKING:
    import random

    from ._guest import Guest, Program

__all__ = ("NAME", "episode")

NAME: Final = "register-storm"
#: Modelled length of the emulated instruction (a MOV to CR0).
STEP: Final = 3


def episode(guest: Guest, rng: random.Random) -> Program[None]:
    """One VTL1 emulation burst of 2-8 register writes to VTL0."""
    expect_switch((yield guest, VtlCall()), Vtl.VTL1, "VtlCall")
    read = yield guest, GetVpRegisters(names=[Reg.RIP, Reg.CR0], target_vtl=Vtl.VTL0)
    rip, cr0 = expect_success(read, "GetVpRegisters(VTL0 RIP, CR0)").values
    for _ in range(rng.randint(1, 4)):
        for value in (cr0 & ~CR0_WP, cr0):  # WP off, then back on: the original CR0 again
            rip = (rip + STEP) & U64_MASK
            registers = [RegisterAssoc(name=Reg.CR0, value=value), RegisterAssoc(name=Reg.RIP, value=rip)]
            result = yield guest, SetVpRegisters(registers=registers, target_vtl=Vtl.VTL0)
            expect_success(result, "SetVpRegisters(VTL0 CR0, RIP)")
    expect_switch((yield guest, VtlReturn(fast=True)), Vtl.VTL0, "VtlReturn(fast)")
