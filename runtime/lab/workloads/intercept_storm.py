"""intercept-storm: VTL0 writes that VTL1 intercepts, emulates and completes.

What HVCI/HyperGuard cost a Windows guest: the secure kernel registered CR0.WP/PE/PG and LSTAR
writes at boot, so when the VTL0 kernel toggles CR0.WP or rewrites LSTAR, the write exits, is
not applied, and arrives in VTL1's SINT0 slot as a register or MSR intercept message (VTL1 is
entered with entry reason 2). The secure kernel checks it, applies it to VTL0 with
HvCallSetVpRegisters (target VTL0: the value and RIP past the instruction), frees the SINT0
slot by writing HvMessageTypeNone into its header (EOM would not free it, DOMAIN 7.3), and
returns to VTL0 with a fast VtlReturn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    ClearMessageSlot,
    HvRegisterName as Reg,
    Intercepted,
    MovToCr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlReturn,
    Wrmsr,
)
from protocol._x86 import CR0_WP, U64_MASK, Msr

from ._checks import expect_success, expect_switch
from ._guest import Unexpected

if TYPE_CHECKING:
    import random

    from protocol import Action

    from ._guest import Guest, Program

__all__ = ("NAME", "REQUIRES", "episode")

NAME: Final = "intercept-storm"
#: Outcome types the runtime must produce for this workload to make sense.
REQUIRES: Final = ("Intercepted",)


def episode(guest: Guest, rng: random.Random) -> Program[None]:
    """One intercepted VTL0 write (CR0.WP toggle or LSTAR write), emulated by VTL1."""
    action: Action
    if rng.random() < 0.6:
        value = guest.cr0 ^ CR0_WP
        action = MovToCr(cr=0, value=value)
        register = Reg.CR0
    else:
        value = 0xFFFF_F800_0000_0000 | (rng.getrandbits(24) << 4)
        action = Wrmsr(msr=Msr.LSTAR, value=value)
        register = Reg.LSTAR
    outcome = yield guest, action
    if type(outcome) is not Intercepted:
        msg = f"{type(action).__name__} was not intercepted: {outcome!r}"
        raise Unexpected(msg)
    message = outcome.message
    rip = (message.rip + message.instruction_length) & U64_MASK
    emulate = SetVpRegisters(
        registers=[RegisterAssoc(name=register, value=value), RegisterAssoc(name=Reg.RIP, value=rip)],
        target_vtl=Vtl.VTL0,
    )
    expect_success((yield guest, emulate), f"emulate {type(action).__name__}")
    if register == Reg.CR0:
        guest.cr0 = value
    yield guest, ClearMessageSlot()
    expect_switch((yield guest, VtlReturn(fast=True)), Vtl.VTL0, "VtlReturn(fast)")
