"""The invariants of DOMAIN section 5 and RELIABILITY B8, as pure checks of committed state.

``vp_violations`` checks one VP (items 1-6, 10 and VTL1's presence of 7); ``partition_violations``
the partition-wide items and their relation to each VP (7, 8, 9). Items about transitions (the
monotone parts of 7, 11, 12, the switch half of 13) need two states or an outcome: the
deterministic simulation (``runtime.sim``) checks those around every step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import CrInterceptControl, HvRegisterName as Reg, Vtl
from protocol._x86 import (
    CR0_GUEST_OWNED,
    CR0_NE,
    CR0_PG,
    CR4_MCE,
    CR4_VMXE,
    DEFAULT_CR0_GUEST_HOST_MASK,
    EFER_FFXSR,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SVME,
    SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING,
    SECONDARY_CONTROL_MODE_BASED_EXECUTE,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
    X64_EFER_VALID_MASK,
    cr4_allowed_bits,
    default_cr4_guest_host_mask,
)

from ._errors import InternalError
from ._protections import validate_vtl_gpa_flags
from ._registers import SHARED_NAMES
from ._tdx import NO_REGISTRATION, VmcsField, vmcs_image
from ._vsm import GuestVsmState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._state import VpState
    from ._vsm import PartitionState

__all__ = ("check_vp_invariants", "partition_violations", "vp_violations")


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
        # 4. CR guest/host masks: VTL1's are the defaults; CR4's always keeps MCE host-owned.
        if not vmcs[VmcsField.CR4_GUEST_HOST_MASK] & CR4_MCE:
            problems.append(f"{where}: the CR4 guest/host mask lost MCE")
        registration = state.staged_registration or state.registration
        if vtl == Vtl.VTL1:
            defaults = (DEFAULT_CR0_GUEST_HOST_MASK, default_cr4_guest_host_mask(vp.config.vmx_cr4_fixed1))
            if (vmcs[VmcsField.CR0_GUEST_HOST_MASK], vmcs[VmcsField.CR4_GUEST_HOST_MASK]) != defaults:
                problems.append(f"{where}: VTL1's CR guest/host masks are not the defaults")
            if registration != NO_REGISTRATION:
                problems.append(f"{where}: VTL1 has a CR-intercept registration")
        elif vp.vtl1 is not None:
            control = CrInterceptControl.from_bits(vp.vtl1.cr_intercept_control)
            if (not control.cr0_write and registration.cr0_mask) or (
                not control.cr4_write and registration.cr4_mask
            ):
                problems.append(f"{where}: a CR mask is registered without its CrInterceptControl bit")
            tables = control.gdtr_write or control.idtr_write or control.ldtr_write or control.tr_write
            if registration.descriptor_table_exiting != tables:
                problems.append(f"{where}: descriptor-table exiting differs from CrInterceptControl")
        # 5. secondary controls: VTL0 always has MBEC; VTL1 neither MBEC nor table exiting.
        secondary = vmcs[VmcsField.SECONDARY_PROCESSOR_CONTROLS]
        if vtl == Vtl.VTL0 and not secondary & SECONDARY_CONTROL_MODE_BASED_EXECUTE:
            problems.append(f"{where}: VTL0's secondary controls lost MBEC")
        if vtl == Vtl.VTL1 and secondary & (
            SECONDARY_CONTROL_MODE_BASED_EXECUTE | SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING
        ):
            problems.append(f"{where}: VTL1's secondary controls {secondary:#x} are not 0")
        # 10. shared registers have one copy per VP
        private = SHARED_NAMES & (state.regs.committed.keys() | state.regs.staged.keys())
        if private:
            problems.append(f"{where}: shared registers {sorted(map(hex, private))} in a private file")
    # 6. CrInterceptControl within the supported bits.
    if vp.vtl1 is not None and vp.vtl1.cr_intercept_control & ~CrInterceptControl.SUPPORTED:
        problems.append(f"vp {vp.index}: CrInterceptControl {vp.vtl1.cr_intercept_control:#x} unsupported")
    # 7 (per VP): VTL1 runs only where it exists. (Its entry reason is checked where it is
    # entered, item 13: a VP started with VTL1 enabled runs VTL1 first without a raise.)
    if vp.active_vtl == Vtl.VTL1 and vp.vtl1 is None:
        problems.append(f"vp {vp.index}: VTL1 is active but has no state")
    return problems


def partition_violations(state: PartitionState, vps: Sequence[VpState]) -> list[str]:
    """Every violated partition-wide invariant (DOMAIN 5 items 7, 8, 9), as readable lines."""
    problems: list[str] = []
    vtl1 = state.vtl1
    # 7. VTL1 on a VP implies the partition is Enabled and the VP's enable was called.
    if (state.guest_vsm == GuestVsmState.ENABLED) != (vtl1 is not None):
        problems.append(f"partition: guest_vsm {state.guest_vsm.name} but vtl1 state {vtl1 is not None}")
    for vp in vps:
        if vp.vtl1 is not None:
            if state.guest_vsm != GuestVsmState.ENABLED:
                problems.append(f"vp {vp.index}: VTL1 enabled but the partition is {state.guest_vsm.name}")
            if not state.vtl1_enable_called[vp.index]:
                problems.append(f"vp {vp.index}: VTL1 state but EnableVpVtl never succeeded for it")
            # 9. a VP's MBEC is off or the partition's
            if vp.vtl1.vp_mbec_enabled and not (vtl1 is not None and vtl1.mbec_enabled):
                problems.append(f"vp {vp.index}: MBEC enabled on a partition without MBEC")
    # 8. the default VTL0 protection has R and W; every page's flags are valid ones.
    if vtl1 is not None:
        if vtl1.vtl0_default_protections & 0x3 != 0x3:
            problems.append(
                f"partition: default VTL0 protection {vtl1.vtl0_default_protections:#x} lacks R/W"
            )
        for gpn, flags in state.protections.items():
            if not validate_vtl_gpa_flags(flags, mbec=vtl1.mbec_enabled):
                problems.append(f"partition: page {gpn:#x} has invalid protection {flags:#x}")
                break
    elif state.protections:
        problems.append("partition: page protections without VTL1")
    return problems


def check_vp_invariants(vp: VpState) -> None:
    """Raise ``InternalError`` listing every violated invariant of ``vp``."""
    problems = vp_violations(vp)
    if problems:
        raise InternalError("invariant violated: " + "; ".join(problems))
