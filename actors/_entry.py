"""VM-entry guest-state checks: what TDG.VP.ENTER's VM entry verifies of a VTL (DOMAIN 7.2).

OpenHCL derives LMA with no PAE guard and writes other state unchecked, so a VTL's committed
state can be one the processor refuses. The next VM entry of that VTL then fails with
BAD_GUEST_STATE and TDX ``handle_vm_enter_failed`` calls ``fatal_error``: with
``panic = 'abort'`` the whole partition is lost. ``entry_failures`` is a pure function of one
VTL's committed state that runs the eight checks of DOMAIN 7.2 (Intel SDM Vol. 3C, "Checks on
the Guest State Area") and names every one that fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import HvRegisterName as Reg
from protocol._x86 import (
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_PCIDE,
    CR4_VMXE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
    is_canonical,
)

from ._tdx import VmcsField

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("CHECKS", "entry_failures", "rip_failure")

#: The checks by number, with the names failures are reported under.
CHECKS: Final[dict[int, str]] = {
    1: "IA-32e mode guest vs CR0.PG, CR4.PAE, CR4.PCIDE",
    2: "EFER.LMA and EFER.LME",
    3: "CR0 and CR4 fixed bits",
    4: "RFLAGS",
    5: "RIP",
    6: "CS and TR in IA-32e mode",
    7: "EFER and PAT reserved bits",
    8: "CR3 physical-address width",
}
#: IA32_VMX_CR0_FIXED0/FIXED1 the model reports: NE must be 1 (unrestricted guest: PE and PG may
#: be 0); bits 63:32 must be 0.
CR0_FIXED0: Final = CR0_NE
CR0_FIXED1: Final = 0xFFFF_FFFF
#: IA32_VMX_CR4_FIXED0: VMXE must be 1 (FIXED1 is the partition's ``vmx_cr4_fixed1``).
CR4_FIXED0: Final = CR4_VMXE
#: IA32_EFER bits that exist on Intel processors: SCE, LME, LMA, NXE; all others are reserved.
EFER_INTEL_BITS: Final = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE
#: RFLAGS bits that must be 0 (63:22, 15, 5, 3), the one that must be 1, and VM (bit 17).
RFLAGS_MUST_BE_ZERO: Final = ~((1 << 22) - 1) & ((1 << 64) - 1) | (1 << 15) | (1 << 5) | (1 << 3)
RFLAGS_MUST_BE_ONE: Final = 1 << 1
RFLAGS_VM: Final = 1 << 17
_PAT_TYPES: Final = frozenset({0, 1, 4, 5, 6, 7})
_ATTR_L: Final = 1 << 13
_ATTR_D: Final = 1 << 14
_TSS_BUSY_64: Final = 11
_CS_ATTRIBUTES: Final = 0x4816
_TR_ATTRIBUTES: Final = 0x4822
#: Linear-address width of a TDX host processor (LA57-capable): RIP canonical at 57 bits.
LINEAR_ADDRESS_BITS: Final = 57


def _fail(problems: list[str], number: int, detail: str) -> None:
    problems.append(f"check {number} ({CHECKS[number]}): {detail}")


def rip_failure(rip: int, rip64: bool) -> str | None:
    """Check 5 alone: RIP bits 63:32 are 0 unless IA-32e mode with CS.L = 1 (``rip64``), where RIP
    must be canonical instead."""
    if rip64:
        if is_canonical(rip, LINEAR_ADDRESS_BITS):
            return None
        return f"check 5 ({CHECKS[5]}): RIP {rip:#x} is not canonical in 64-bit mode"
    if rip >> 32:
        return f"check 5 ({CHECKS[5]}): RIP {rip:#x} has bits 63:32 set outside 64-bit mode"
    return None


def rip64_mode(vmcs: Mapping[int, int]) -> bool:
    """IA-32e mode guest with CS.L = 1: the mode in which RIP may use 64 bits."""
    ia32e = bool(vmcs[VmcsField.ENTRY_CONTROLS] & VMX_ENTRY_CONTROL_LONG_MODE_GUEST)
    return ia32e and bool(vmcs[_CS_ATTRIBUTES] & _ATTR_L)


def entry_failures(
    read: Callable[[int], int], vmcs: Mapping[int, int], vmx_cr4_fixed1: int, physical_address_bits: int
) -> list[str]:
    """Every failed guest-state check of one VTL, from its committed registers (``read``: RIP and
    RFLAGS, which TDG.VP.ENTER loads) and its VMCS image; empty when VM entry succeeds."""
    problems: list[str] = []
    ia32e = bool(vmcs[VmcsField.ENTRY_CONTROLS] & VMX_ENTRY_CONTROL_LONG_MODE_GUEST)
    cr0 = vmcs[VmcsField.GUEST_CR0]
    cr4 = vmcs[VmcsField.GUEST_CR4]
    efer = vmcs[VmcsField.GUEST_EFER]
    # 1.
    if ia32e and not (cr0 & CR0_PG and cr4 & CR4_PAE):
        _fail(
            problems,
            1,
            f"IA-32e mode guest = 1 needs CR0.PG = 1 and CR4.PAE = 1 (CR0 {cr0:#x}, CR4 {cr4:#x})",
        )
    if not ia32e and cr4 & CR4_PCIDE:
        _fail(problems, 1, f"IA-32e mode guest = 0 needs CR4.PCIDE = 0 (CR4 {cr4:#x})")
    # 2.
    if bool(efer & EFER_LMA) != ia32e:
        _fail(problems, 2, f"EFER.LMA = {int(bool(efer & EFER_LMA))} but IA-32e mode guest = {int(ia32e)}")
    if cr0 & CR0_PG and bool(efer & EFER_LME) != bool(efer & EFER_LMA):
        _fail(problems, 2, f"CR0.PG = 1 needs EFER.LME = EFER.LMA (EFER {efer:#x})")
    # 3.
    if cr0 & CR0_PG and not cr0 & CR0_PE:
        _fail(problems, 3, f"CR0.PG = 1 needs CR0.PE = 1 (CR0 {cr0:#x})")
    if cr0 & CR0_FIXED0 != CR0_FIXED0 or cr0 & ~CR0_FIXED1:
        _fail(problems, 3, f"CR0 {cr0:#x} outside IA32_VMX_CR0_FIXED0/FIXED1")
    if cr4 & CR4_FIXED0 != CR4_FIXED0 or cr4 & ~vmx_cr4_fixed1:
        _fail(problems, 3, f"CR4 {cr4:#x} outside IA32_VMX_CR4_FIXED0/FIXED1")
    # 4.
    rflags = read(Reg.RFLAGS)
    if rflags & RFLAGS_MUST_BE_ZERO or not rflags & RFLAGS_MUST_BE_ONE:
        _fail(problems, 4, f"RFLAGS {rflags:#x}: bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1")
    if rflags & RFLAGS_VM and (ia32e or not cr0 & CR0_PE):
        _fail(problems, 4, f"RFLAGS.VM = 1 in IA-32e mode or with CR0.PE = 0 (RFLAGS {rflags:#x})")
    # 5.
    rip = rip_failure(read(Reg.RIP), rip64_mode(vmcs))
    if rip is not None:
        problems.append(rip)
    # 6.
    if ia32e:
        cs = vmcs[_CS_ATTRIBUTES]
        if cs & _ATTR_L and cs & _ATTR_D:
            _fail(problems, 6, f"CS.L = 1 and CS.D = 1 in IA-32e mode (CS attributes {cs:#x})")
        tr_type = vmcs[_TR_ATTRIBUTES] & 0xF
        if tr_type != _TSS_BUSY_64:
            _fail(problems, 6, f"TR type {tr_type} in IA-32e mode, must be 11 (busy 64-bit TSS)")
    # 7.
    if efer & ~EFER_INTEL_BITS:
        _fail(problems, 7, f"EFER {efer:#x} sets reserved bits {efer & ~EFER_INTEL_BITS:#x}")
    pat = vmcs[VmcsField.GUEST_PAT]
    bad = [i for i in range(8) if (pat >> (8 * i)) & 0xFF not in _PAT_TYPES]
    if bad:
        _fail(problems, 7, f"PAT {pat:#x}: entries {bad} are not 0, 1, 4, 5, 6 or 7")
    # 8.
    cr3 = vmcs[VmcsField.GUEST_CR3]
    if cr3 >> physical_address_bits:
        _fail(
            problems,
            8,
            f"CR3 {cr3:#x} sets bits above the {physical_address_bits}-bit physical-address width",
        )
    return problems
