"""vtl-pingpong: VTL0 calls into the secure kernel and back (VTL call/return storms).

What Windows' VTL0 kernel does for every secure call (HVCI code-integrity checks, Credential
Guard's LSAIso, secure pool requests): HvCallVtlCall into VTL1, and VTL1 answers with
HvCallVtlReturn. One operation is 1-3 round trips; half the returns are normal returns that
first write the return RAX/RCX into the VP assist page, half are fast returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import Vtl, VtlCall, VtlReturn, WriteVtlControl

from ._checks import expect_switch

if TYPE_CHECKING:
    import random

    from ._guest import Guest, Program

__all__ = ("NAME", "episode")

NAME: Final = "vtl-pingpong"


def episode(guest: Guest, rng: random.Random) -> Program[None]:
    """1-3 VTL call/return round trips."""
    for _ in range(rng.randint(1, 3)):
        expect_switch((yield guest, VtlCall()), Vtl.VTL1, "VtlCall")
        if rng.random() < 0.5:
            yield guest, WriteVtlControl(return_rax=0, return_rcx=rng.getrandbits(32))
            expect_switch((yield guest, VtlReturn()), Vtl.VTL0, "VtlReturn")
        else:
            expect_switch((yield guest, VtlReturn(fast=True)), Vtl.VTL0, "VtlReturn(fast)")
