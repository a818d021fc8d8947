"""Register access and value rules of HvCallGetVpRegisters / HvCallSetVpRegisters (pure).

DOMAIN 3.1 (who may touch which register), 3.2 (value validation, then apply), 3.5 (VP secure
config), 3.7 (PendingEvent0) and the quirks of Appendix B items 1-4. For each element the order
is: access rule, value validation, apply; the first failure is the element's status. Applying
an element follows OpenHCL's accessor for it, TDCALLs included (DOMAIN 7.1, ``actors._tdcalls``):
the ``registers()`` group goes through ``registers_roundtrip``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import CrInterceptControl, HvRegisterName as Reg, HvStatus, VsmVpSecureVtlConfig, Vtl
from protocol._x86 import (
    CR0_ET,
    U64_MASK,
)

from ._tdcalls import (
    CR_INTERCEPT_REGISTRATION,
    REGISTERS,
    SET_REGISTERS,
    SET_REGISTERS_GROUP,
    get_register_tdcalls,
    set_register_tdcalls,
    set_registers_writes,
)
from ._tdx import CrRegistration
from ._validation import VALIDATORS, validate_cr0
from ._vsm import GuestVsmState, PartitionView, WriteVsmPartitionConfig

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._state import VpState

__all__ = ("get_vp_register", "registers_roundtrip", "set_vp_register")

_GPRS: Final = frozenset(Reg.RAX + i for i in range(16))
#: Architectural registers: only a strictly higher VTL may access them.
_ARCH: Final = _GPRS | {
    Reg.RIP,
    Reg.RFLAGS,
    Reg.CR0,
    Reg.CR2,
    Reg.CR3,
    Reg.CR4,
    Reg.CR8,
    Reg.XFEM,
    Reg.DR0,
    Reg.DR1,
    Reg.DR2,
    Reg.DR3,
    Reg.DR7,
    Reg.ES,
    Reg.CS,
    Reg.SS,
    Reg.DS,
    Reg.FS,
    Reg.GS,
    Reg.LDTR,
    Reg.TR,
    Reg.IDTR,
    Reg.GDTR,
    Reg.EFER,
    Reg.KERNEL_GS_BASE,
    Reg.PAT,
    Reg.SYSENTER_CS,
    Reg.SYSENTER_EIP,
    Reg.SYSENTER_ESP,
    Reg.STAR,
    Reg.LSTAR,
    Reg.CSTAR,
    Reg.SFMASK,
    Reg.TSC_AUX,
}
#: Architectural registers a higher VTL may set (applied through the staged register file).
_ARCH_SETTABLE: Final = frozenset(
    {
        Reg.RSP,
        Reg.RIP,
        Reg.RFLAGS,
        Reg.CR0,
        Reg.CR4,
        Reg.CR8,
        Reg.DR3,
        Reg.DR7,
        Reg.LDTR,
        Reg.IDTR,
        Reg.GDTR,
        Reg.EFER,
        Reg.PAT,
        Reg.SYSENTER_CS,
        Reg.SYSENTER_EIP,
        Reg.SYSENTER_ESP,
        Reg.STAR,
        Reg.LSTAR,
        Reg.CSTAR,
        Reg.SFMASK,
        Reg.TSC_AUX,
    }
)
_SYNIC: Final = frozenset(
    {Reg.SINT0 + i for i in range(16)}
    | {Reg.SCONTROL, Reg.SVERSION, Reg.SIFP, Reg.SIPP, Reg.EOM}
    | {Reg.STIMER0_CONFIG + i for i in range(8)}
)
_VSM_STATUS: Final = frozenset({Reg.VSM_VP_STATUS, Reg.VSM_PARTITION_STATUS, Reg.VSM_CAPABILITIES})
_CR_INTERCEPT: Final = frozenset(
    {
        Reg.CR_INTERCEPT_CONTROL,
        Reg.CR_INTERCEPT_CR0_MASK,
        Reg.CR_INTERCEPT_CR4_MASK,
        Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK,
    }
)
#: Registers with no hypercall support at all: InvalidParameter for get and set.
_UNSUPPORTED: Final = frozenset(
    {
        Reg.DR6,
        Reg.INTERMEDIATE_CR3,
        Reg.INTERMEDIATE_CR8,
        Reg.GUEST_VSM_PARTITION_CONFIG,
        Reg.VSM_VP_WAIT_FOR_TLB_LOCK,
        *(Reg.VSM_VP_SECURE_CONFIG_VTL1 + i for i in range(14)),
    }
)
#: Value-validated on set, then refused as unsupported (Appendix B item 3); not gettable.
_VALIDATE_ONLY: Final = frozenset(
    {
        Reg.INTERMEDIATE_CR0,
        Reg.INTERMEDIATE_CR4,
        Reg.XSS,
        Reg.PL0_SSP,
        Reg.PL1_SSP,
        Reg.PL2_SSP,
        Reg.PL3_SSP,
        Reg.INTERRUPT_SSP_TABLE_ADDR,
    }
)
#: Architectural registers that are value-validated on set, then refused.
_ARCH_VALIDATE_ONLY: Final = frozenset({Reg.FS, Reg.GS, Reg.KERNEL_GS_BASE})
VSM_CODE_PAGE_OFFSETS_VALUE: Final = 0x2_600F
_WIDE: Final = frozenset(
    {Reg.ES, Reg.CS, Reg.SS, Reg.DS, Reg.FS, Reg.GS, Reg.LDTR, Reg.TR, Reg.GDTR, Reg.IDTR, Reg.PENDING_EVENT0}
)

_OK = HvStatus.SUCCESS
_DENIED = HvStatus.ACCESS_DENIED
_PARAM = HvStatus.INVALID_PARAMETER
_VALUE = HvStatus.INVALID_REGISTER_VALUE


def _access_rule(
    vp: VpState, view: PartitionView, caller: Vtl, target: Vtl, name: int, access_vsm: bool
) -> HvStatus:
    """validate_register_access plus the per-register target rules (DOMAIN 3.1)."""
    if name in _ARCH:
        if target >= caller:
            return _DENIED
        if name == Reg.TSC_AUX and not vp.config.tsc_aux:
            return _PARAM
        return _OK
    if name == Reg.PENDING_EVENT0:
        return _PARAM if target >= caller else _OK
    if name == Reg.VSM_VINA:
        return _PARAM if target == Vtl.VTL0 else _OK
    if name in _CR_INTERCEPT:
        return _DENIED if target != Vtl.VTL1 else _OK
    if name == Reg.VSM_PARTITION_CONFIG:
        if target != Vtl.VTL1:
            return _PARAM
        return _DENIED if caller == Vtl.VTL0 and not access_vsm else _OK
    if name in _VSM_STATUS:
        return _DENIED if caller == Vtl.VTL0 and not access_vsm else _OK
    return _OK


# ---- get ----------------------------------------------------------------------------------------


def get_vp_register(
    vp: VpState, view: PartitionView, caller: Vtl, target: Vtl, name: int
) -> tuple[HvStatus, int]:
    """One element of HvCallGetVpRegisters: (status, value)."""
    status = _access_rule(vp, view, caller, target, name, vp.config.access_vsm)
    if status:
        return status, 0
    if name in _ARCH or name in _SYNIC or name in (Reg.APIC_BASE, Reg.VP_ASSIST_PAGE, Reg.VSM_VINA):
        if vp.eager:
            vp.count_tdcalls(target, get_register_tdcalls(name), 0)
        return _OK, vp.read(target, name)
    vtl1 = view.vtl1
    if name == Reg.VSM_CODE_PAGE_OFFSETS:
        return _OK, VSM_CODE_PAGE_OFFSETS_VALUE
    if name == Reg.VSM_CAPABILITIES:
        return _OK, 0x2_0002 | int(vp.config.dr6_shared)
    if name == Reg.VSM_PARTITION_STATUS:
        if view.guest_vsm == GuestVsmState.NOT_PLATFORM_SUPPORTED:
            return _OK, 0x1
        if view.guest_vsm == GuestVsmState.NOT_GUEST_ENABLED or vtl1 is None:
            return _OK, 0x1_0001
        mbec_set = 0b11 if vtl1.mbec_enabled else 0
        return _OK, 0b11 | (1 << 16) | (mbec_set << 20)
    if name == Reg.VSM_VP_STATUS:
        enabled = 0b11 if vp.vtl1 is not None else 0b01
        mbec = vp.vtl1 is not None and vp.vtl1.vp_mbec_enabled
        return _OK, int(caller) | (int(mbec) << 4) | (enabled << 16)
    if name == Reg.VSM_PARTITION_CONFIG:
        if view.guest_vsm != GuestVsmState.ENABLED or vtl1 is None:
            return _OK, 0
        return _OK, (
            int(vtl1.protections_enabled)
            | (vtl1.vtl0_default_protections << 1)
            | (int(vtl1.zero_memory_on_reset) << 5)
            | (int(vtl1.deny_lower_vtl_startup) << 6)
        )
    if name == Reg.VSM_VP_SECURE_CONFIG_VTL0:
        if target <= Vtl.VTL0:
            return _DENIED, 0
        mbec = vtl1 is not None and vtl1.mbec_enabled
        locked = vp.vtl1 is not None and vp.vtl1.tlb_locked
        return _OK, int(mbec) | (int(locked) << 1)
    if name in _CR_INTERCEPT:
        state = vp.vtl1
        if state is None:
            return HvStatus.INVALID_VTL_STATE, 0
        values: dict[int, int] = {
            Reg.CR_INTERCEPT_CONTROL: state.cr_intercept_control,
            Reg.CR_INTERCEPT_CR0_MASK: state.cr0_mask,
            Reg.CR_INTERCEPT_CR4_MASK: state.cr4_mask,
            Reg.CR_INTERCEPT_IA32_MISC_ENABLE_MASK: state.misc_enable_mask,
        }
        return _OK, values[name]
    # PendingEvent0 (write-only), the validate-only and unsupported registers, unknown names.
    return _PARAM, 0


# ---- set ----------------------------------------------------------------------------------------


def registers_roundtrip(
    vp: VpState, vtl: int, values: Iterable[tuple[int, int]], extra: tuple[int, int] = (0, 0)
) -> None:
    """OpenHCL's ``registers()`` then ``set_registers()`` on ``vtl`` with ``values`` replaced.

    The path of SetVpRegisters for the ``registers()`` group, of a normal VtlReturn and of a
    context load (DOMAIN 7.1): 42 TDG.VP.RD + 40 TDG.VP.WR plus one per change (counted under
    the eager policy, with ``extra`` (RD, WR) on top). ``write_cr0`` forces ET, so a CR0 that
    lost ET to a MOV to CR0 gets it back here, guest-visibly, under both policies.
    """
    new = dict(values)
    old_cr0, old_cr4, old_efer = vp.read(vtl, _CR0), vp.read(vtl, _CR4), vp.read(vtl, _EFER)
    cr0 = new.get(_CR0, old_cr0)
    if vp.eager:
        writes = set_registers_writes(
            old_cr0, old_cr4, old_efer, cr0, new.get(_CR4, old_cr4), new.get(_EFER, old_efer)
        )
        vp.count_tdcalls(vtl, REGISTERS[0] + SET_REGISTERS[0] + extra[0], writes + extra[1])
    if not cr0 & CR0_ET:
        new[_CR0] = cr0 | CR0_ET
    vp.set_registers(vtl, new.items())


# Plain ints for the hot paths: an IntEnum member lookup costs ~0.1 us each time.
_CR0: Final = int(Reg.CR0)
_CR4: Final = int(Reg.CR4)
_CR8: Final = int(Reg.CR8)
_EFER: Final = int(Reg.EFER)


def set_vp_register(
    vp: VpState, view: PartitionView, caller: Vtl, target: Vtl, name: int, value: int
) -> HvStatus | WriteVsmPartitionConfig:
    """One element of HvCallSetVpRegisters: a status, or a request for the supervisor."""
    status = _access_rule(vp, view, caller, target, name, vp.config.access_vsm)
    if status:
        return status
    if name not in _WIDE:
        value &= U64_MASK
    validator = VALIDATORS.get(name)
    if validator is not None and not validator(vp, target, value):
        return _VALUE
    if name in SET_REGISTERS_GROUP:
        if name == _CR0:
            value = validate_cr0(value) or 0  # validated above: never None here
        elif name == _CR8:
            # DOMAIN 7.4: set_registers stores TPR = CR8 << 4 (a 32-bit APIC register) and
            # registers() returns TPR >> 4, so CR8 keeps its low 28 bits.
            value = ((value << 4) & 0xFFFF_FFFF) >> 4
        if vp.eager or (name != _CR0 and not vp.read(target, _CR0) & CR0_ET):
            registers_roundtrip(vp, target, ((name, value),))
        else:
            # Batched, and CR0 keeps ET: set_registers changes nothing but this register.
            vp.stage(target, name, value)
        return _OK
    if name in _ARCH_SETTABLE:
        if vp.eager:
            vp.count_tdcalls(target, *set_register_tdcalls(name))
        vp.stage(target, name, value)
        return _OK
    if name in _SYNIC:
        if name == Reg.SVERSION:
            return _PARAM
        # EOM does nothing to the message slot (HV1 set_eom, DOMAIN 7.3): the guest frees it
        # by writing HvMessageTypeNone into the header (ClearMessageSlot).
        vp.stage(target, name, value)
        return _OK
    if name == Reg.VP_ASSIST_PAGE:
        vp.stage(target, name, value)
        return _OK
    if name == Reg.APIC_BASE:
        return _OK if value == vp.read(target, Reg.APIC_BASE) else _PARAM
    if name == Reg.VSM_VINA:
        if value >> 11:
            return _PARAM
        vp.stage(target, name, value)
        return _OK
    if name == Reg.PENDING_EVENT0:
        if target != Vtl.VTL0 or vp.vtl1 is None:
            return _DENIED
        vp.vtl1.pending_event = value if value & 1 else None
        return _OK
    if name == Reg.VSM_PARTITION_CONFIG:
        return WriteVsmPartitionConfig(vp_index=vp.index, value=value)
    if name == Reg.VSM_VP_SECURE_CONFIG_VTL0:
        return _set_vp_secure_config(vp, view, target, value)
    if name in _CR_INTERCEPT:
        return _set_cr_intercept(vp, name, value)
    # Not settable: other architectural registers, the validate-only ones, status registers,
    # VsmCodePageOffsets, unsupported and unknown names.
    return _PARAM


def _set_vp_secure_config(vp: VpState, view: PartitionView, target: Vtl, value: int) -> HvStatus:
    """DOMAIN 3.5: the requesting VTL is the hypercall's target VTL (Appendix B item 6)."""
    if target <= Vtl.VTL0:
        return _DENIED
    config = VsmVpSecureVtlConfig.from_bits(value)
    if config.supervisor_shadow_stack_enabled or config.hardware_hvpt_enabled:
        return _VALUE
    vtl1 = view.vtl1
    if view.guest_vsm != GuestVsmState.ENABLED or vtl1 is None:
        return HvStatus.INVALID_VTL_STATE
    if config.mbec_enabled != vtl1.mbec_enabled:
        return _VALUE
    state = vp.vtl1
    if state is None:
        return HvStatus.INVALID_VTL_STATE
    state.tlb_locked = config.tlb_locked
    state.vp_mbec_enabled = config.mbec_enabled
    return _OK


def _set_cr_intercept(vp: VpState, name: int, value: int) -> HvStatus:
    """CrInterceptControl registers VTL0's VMCS with the masks current now (DOMAIN 3.8)."""
    state = vp.vtl1
    if state is None:
        return HvStatus.INVALID_VTL_STATE
    if name == Reg.CR_INTERCEPT_CONTROL:
        if value & ~CrInterceptControl.SUPPORTED:
            return _VALUE
        control = CrInterceptControl.from_bits(value)
        # TDX cr_intercept_registration writes VTL0's VMCS (DOMAIN 7.1).
        vp.count_tdcalls(Vtl.VTL0, *CR_INTERCEPT_REGISTRATION)
        vp.stage_registration(
            CrRegistration(
                cr0_mask=state.cr0_mask if control.cr0_write else 0,
                cr4_mask=state.cr4_mask if control.cr4_write else 0,
                descriptor_table_exiting=(
                    control.gdtr_write or control.idtr_write or control.ldtr_write or control.tr_write
                ),
                intercept_s_cet=control.msr_scet_write,
                intercept_pls_ssp=control.msr_pls_ssp_write,
            )
        )
        state.cr_intercept_control = value
    elif name == Reg.CR_INTERCEPT_CR0_MASK:
        state.cr0_mask = value
    elif name == Reg.CR_INTERCEPT_CR4_MASK:
        state.cr4_mask = value
    else:
        state.misc_enable_mask = value
    return _OK
