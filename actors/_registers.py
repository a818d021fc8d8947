"""Register files: the per-VP shared registers and the per-VTL private ones, with staging.

DOMAIN 1.3: GPRs (except RSP), CR2, DR0-DR3, XFEM (and DR6 where the platform shares it) have
one copy per VP; everything else has one copy per VTL. A file stores only values that differ
from the TDX reset state, so an idle VP costs little memory.

Every write is *staged*: reads see the staged value at once (what the guest observes), and a
commit moves staged values into the committed file in one step.
"""

from __future__ import annotations

from typing import Final

from protocol import HvRegisterName as Reg
from protocol._x86 import (
    APIC_BASE_DEFAULT,
    DEFAULT_PAT,
    RESET_CR0,
    RESET_CR4,
    RESET_CS,
    RESET_DATA_SEGMENT,
    RESET_EFER,
    RESET_LDTR,
    RESET_RFLAGS,
    RESET_RIP,
    RESET_TABLE,
    RESET_TR,
)

__all__ = ("PRIVATE_RESET", "SHARED_NAMES", "SHARED_RESET", "RegisterFile")

SHARED_NAMES: Final = frozenset(
    {
        Reg.RAX,
        Reg.RCX,
        Reg.RDX,
        Reg.RBX,
        Reg.RBP,
        Reg.RSI,
        Reg.RDI,
        Reg.R8,
        Reg.R9,
        Reg.R10,
        Reg.R11,
        Reg.R12,
        Reg.R13,
        Reg.R14,
        Reg.R15,
        Reg.CR2,
        Reg.DR0,
        Reg.DR1,
        Reg.DR2,
        Reg.DR3,
        Reg.XFEM,
    }
)

#: Shared registers at reset (XCR0 has x87 set).
SHARED_RESET: Final[dict[int, int]] = {name: int(name == Reg.XFEM) for name in SHARED_NAMES}

#: Private registers at TDX reset (vmm_core ``Registers::at_reset``, EFER.NXE forced on).
PRIVATE_RESET: Final[dict[int, int]] = {
    Reg.RIP: RESET_RIP,
    Reg.RSP: 0,
    Reg.RFLAGS: RESET_RFLAGS,
    Reg.CR0: RESET_CR0,
    Reg.CR3: 0,
    Reg.CR4: RESET_CR4,
    Reg.CR8: 0,
    Reg.EFER: RESET_EFER,
    Reg.PAT: DEFAULT_PAT,
    Reg.DR6: 0xFFFF_0FF0,
    Reg.DR7: 0x400,
    Reg.CS: RESET_CS,
    Reg.DS: RESET_DATA_SEGMENT,
    Reg.ES: RESET_DATA_SEGMENT,
    Reg.FS: RESET_DATA_SEGMENT,
    Reg.GS: RESET_DATA_SEGMENT,
    Reg.SS: RESET_DATA_SEGMENT,
    Reg.LDTR: RESET_LDTR,
    Reg.TR: RESET_TR,
    Reg.GDTR: RESET_TABLE,
    Reg.IDTR: RESET_TABLE,
    Reg.SYSENTER_CS: 0,
    Reg.SYSENTER_EIP: 0,
    Reg.SYSENTER_ESP: 0,
    Reg.KERNEL_GS_BASE: 0,
    Reg.STAR: 0,
    Reg.LSTAR: 0,
    Reg.CSTAR: 0,
    Reg.SFMASK: 0,
    Reg.TSC_AUX: 0,
    Reg.XSS: 0,  # IA32_XSS: private per VTL (TdxPrivateRegs.msr_xss), WRMSR only
    Reg.APIC_BASE: APIC_BASE_DEFAULT,
    Reg.VP_ASSIST_PAGE: 0,
    Reg.SCONTROL: 0,
    Reg.SVERSION: 1,
    Reg.SIFP: 0,
    Reg.SIPP: 0,
    Reg.EOM: 0,
    Reg.VSM_VINA: 0,
    **{Reg.SINT0 + i: 0x1_0000 for i in range(16)},  # every SINT starts masked
    **{Reg.STIMER0_CONFIG + i: 0 for i in range(8)},
}


class RegisterFile:
    """One sparse register file with a staged overlay.

    ``committed`` holds values that differ from ``reset``; ``staged`` holds accepted writes
    that no commit has applied yet. Invariant: a name is never in both with the same value
    after ``commit``.
    """

    __slots__ = ("committed", "reset", "staged")

    def __init__(self, reset: dict[int, int]) -> None:
        self.reset = reset
        self.committed: dict[int, int] = {}
        self.staged: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<RegisterFile committed={len(self.committed)} staged={len(self.staged)}>"

    def read(self, name: int) -> int:
        """The value a guest observes: staged if any, else committed, else reset."""
        staged = self.staged
        if name in staged:
            return staged[name]
        committed = self.committed
        if name in committed:
            return committed[name]
        return self.reset[name]

    def read_committed(self, name: int) -> int:
        """The committed value, ignoring staged writes."""
        committed = self.committed
        if name in committed:
            return committed[name]
        return self.reset[name]

    def commit(self) -> dict[int, int]:
        """Apply every staged write; return the names whose committed value changed, old values."""
        staged = self.staged
        if not staged:
            return {}
        changed: dict[int, int] = {}
        committed = self.committed
        reset = self.reset
        for name, value in staged.items():
            old = committed.get(name, reset[name])
            if old != value:
                changed[name] = old
                if value == reset[name]:
                    committed.pop(name, None)
                else:
                    committed[name] = value
        self.staged = {}
        return changed
