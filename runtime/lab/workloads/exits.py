"""exits: VTL0 kernel instructions that exit to the paravisor and complete there.

The bulk of a busy guest's exits never involve VTL1: a context switch writes KERNEL_GS_BASE
and reads TSC_AUX, a TLB shootdown toggles CR4.PGE twice (a global flush), the APIC code reads
APIC_BASE, the syscall path reads LSTAR. One operation is one of those short sequences, each
an exit that the paravisor emulates and completes (no VTL switch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import Completed, MovToCr, Rdmsr, Wrmsr
from protocol._x86 import CR4_PGE, Msr

from ._guest import Unexpected

if TYPE_CHECKING:
    import random

    from protocol import Action

    from ._guest import Guest, Program

__all__ = ("NAME", "episode")

NAME: Final = "exits"


def episode(guest: Guest, rng: random.Random) -> Program[None]:
    """One context switch, global TLB flush, APIC_BASE read or LSTAR read."""
    pattern = rng.randrange(4)
    actions: list[Action]
    if pattern == 0:
        gs_base = 0xFFFF_8000_0000_0000 | (rng.getrandbits(20) << 12)
        actions = [Wrmsr(msr=Msr.KERNEL_GS_BASE, value=gs_base), Rdmsr(msr=Msr.TSC_AUX)]
    elif pattern == 1:
        actions = [MovToCr(cr=4, value=guest.cr4 ^ CR4_PGE), MovToCr(cr=4, value=guest.cr4)]
    elif pattern == 2:
        actions = [Rdmsr(msr=Msr.APIC_BASE)]
    else:
        actions = [Rdmsr(msr=Msr.LSTAR)]
    for action in actions:
        outcome = yield guest, action
        if type(outcome) is not Completed:
            msg = f"{type(action).__name__}: {outcome!r}"
            raise Unexpected(msg)
