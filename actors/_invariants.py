"""The invariants of DOMAIN section 5 (items 1-3, 10) and RELIABILITY B8, as a pure check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import HvRegisterName as Reg, Vtl
from protocol._x86 import (
    CR0_GUEST_OWNED,
    CR0_NE,
    CR0_PG,
    CR4_MCE,
    CR4_VMXE,
    EFER_FFXSR,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SVME,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
    X64_EFER_VALID_MASK,
    cr4_allowed_bits,
)

from ._errors import InternalError
from ._registers import SHARED_NAMES
from ._tdx import VmcsField, vmcs_image

if TYPE_CHECKING:
    from ._state import VpState

__all__ = ("check_vp_invariants", "vp_violations")


def vp_violations(vp: VpState) -> list[str]:
    """Every violated invariant of the committed state of one VP, as readable lines."""
    problems: list[str] = []
    vtls = [Vtl.VTL0, Vtl.VTL1] if vp.vtl1 is not None else [Vtl.VTL0]
    for vtl in vtls:
        state = vp.vtls[vtl]
        read = state.regs.read_committed
        vmcs = state.vmcs.full()
        where = f"vp {vp.index} {vtl.name}"
        efer, cr0, cr4 = read(Reg.EFER), read(Reg.CR0), read(Reg.CR4)
        lma = bool(efer & EFER_LMA)
        # 1. long mode
        if lma != bool(efer & EFER_LME and cr0 & CR0_PG):
            problems.append(f"{where}: EFER.LMA={lma:d} but LME={efer >> 8 & 1} PG={cr0 >> 31 & 1}")
        if bool(vmcs[VmcsField.ENTRY_CONTROLS] & VMX_ENTRY_CONTROL_LONG_MODE_GUEST) != lma:
            problems.append(f"{where}: entry control bit 9 differs from EFER.LMA={lma:d}")
        # 2. EFER cache == VMCS and valid
        if vmcs[VmcsField.GUEST_EFER] != efer:
            problems.append(f"{where}: cached EFER {efer:#x} != VMCS {vmcs[VmcsField.GUEST_EFER]:#x}")
        if not efer & EFER_NXE or efer & (EFER_SVME | EFER_FFXSR) or efer & ~X64_EFER_VALID_MASK:
            problems.append(f"{where}: EFER {efer:#x} is not a valid TDX EFER")
        # 3. virtual CR0/CR4
        if (vmcs[VmcsField.GUEST_CR0] ^ cr0) & CR0_GUEST_OWNED:
            problems.append(f"{where}: physical CR0 guest-owned bits differ from the shadow")
        if vmcs[VmcsField.CR0_READ_SHADOW] != cr0 or vmcs[VmcsField.CR4_READ_SHADOW] != cr4:
            problems.append(f"{where}: a CR read shadow differs from the register value")
        if not vmcs[VmcsField.GUEST_CR0] & CR0_NE:
            problems.append(f"{where}: physical CR0.NE is clear")
        if vmcs[VmcsField.GUEST_CR4] & (CR4_MCE | CR4_VMXE) != CR4_MCE | CR4_VMXE:
            problems.append(f"{where}: physical CR4 lost MCE or VMXE")
        if cr4 & ~cr4_allowed_bits(vp.config.vmx_cr4_fixed1):
            problems.append(f"{where}: CR4 {cr4:#x} has bits outside the allowed set")
        # B8: the derived state is a pure function of the committed state.
        expected = vmcs_image(vtl, read, state.registration, vp.config.vmx_cr4_fixed1)
        if expected != vmcs:
            fields = sorted(f for f in expected if expected[f] != vmcs.get(f))
            problems.append(f"{where}: VMCS fields {[hex(f) for f in fields]} differ from a recompute")
        # 10. shared registers have one copy per VP
        private = SHARED_NAMES & (state.regs.committed.keys() | state.regs.staged.keys())
        if private:
            problems.append(f"{where}: shared registers {sorted(map(hex, private))} in a private file")
    return problems


def check_vp_invariants(vp: VpState) -> None:
    """Raise ``InternalError`` listing every violated invariant of ``vp``."""
    problems = vp_violations(vp)
    if problems:
        raise InternalError("invariant violated: " + "; ".join(problems))
