"""Exiting guest instructions handled in the paravisor: MOV to CR, WRMSR, RDMSR (DOMAIN 3.8, 3.9).

A refused instruction injects #GP(0) and changes nothing; a completed one advances RIP by its
length. Secure intercepts into VTL1 are decided by ``_intercepts`` before anything is written.
"""

from __future__ import annotations

from typing import Final

from protocol import Completed, ExceptionInjected, MovToCr, Rdmsr, Vtl, WriteVtlControl, Wrmsr
from protocol import HvRegisterName as Reg
from protocol._x86 import CR0_CD, CR0_NW, CR0_PE, CR0_PG, U64_MASK, ExceptionVector, Msr, is_canonical

from ._access import validate_context_value, validate_cr4, validate_efer
from ._state import VpState

__all__ = ("INSTRUCTION_LENGTH", "mov_to_cr", "rdmsr", "write_vtl_control", "wrmsr")

_GP0: Final = ExceptionInjected(vector=ExceptionVector.GP, error_code=0)

#: Modelled instruction lengths (the intercept header's instruction_length).
INSTRUCTION_LENGTH: Final = {"mov_cr": 3, "msr": 2, "xsetbv": 3, "table": 3}

#: MSRs backed by a register of the active VTL.
_MSR_REGISTERS: Final[dict[int, int]] = {
    Msr.EFER: Reg.EFER,
    Msr.STAR: Reg.STAR,
    Msr.LSTAR: Reg.LSTAR,
    Msr.CSTAR: Reg.CSTAR,
    Msr.SFMASK: Reg.SFMASK,
    Msr.SYSENTER_CS: Reg.SYSENTER_CS,
    Msr.SYSENTER_EIP: Reg.SYSENTER_EIP,
    Msr.SYSENTER_ESP: Reg.SYSENTER_ESP,
    Msr.KERNEL_GS_BASE: Reg.KERNEL_GS_BASE,
    Msr.TSC_AUX: Reg.TSC_AUX,
    Msr.PAT: Reg.PAT,
    Msr.APIC_BASE: Reg.APIC_BASE,
    Msr.HV_VP_ASSIST_PAGE: Reg.VP_ASSIST_PAGE,
    Msr.HV_SCONTROL: Reg.SCONTROL,
    Msr.HV_SVERSION: Reg.SVERSION,
    Msr.HV_SIEFP: Reg.SIFP,
    Msr.HV_SIMP: Reg.SIPP,
    Msr.HV_EOM: Reg.EOM,
    **{Msr.HV_SINT0 + i: Reg.SINT0 + i for i in range(16)},
}
_CANONICAL_MSRS: Final = frozenset(
    {Msr.LSTAR, Msr.CSTAR, Msr.SYSENTER_EIP, Msr.SYSENTER_ESP, Msr.KERNEL_GS_BASE}
)
_SEGMENT_BASE_MSRS: Final = {Msr.FS_BASE: Reg.FS, Msr.GS_BASE: Reg.GS}


def _advance(vp: VpState, vtl: Vtl, length: int) -> None:
    vp.stage(vtl, Reg.RIP, (vp.read(vtl, Reg.RIP) + length) & U64_MASK)


def mov_to_cr(vp: VpState, action: MovToCr) -> Completed | ExceptionInjected:
    """MOV to CR0/CR4 (no secure intercept): write the virtual register, derive the mode.

    The exit path does no reserved-bit masking and no ET forcing (only the hypercall path
    does); architecturally invalid CR0 values get #GP as real hardware would give before exiting.
    """
    vtl = vp.active_vtl
    value = action.value
    if action.cr == 0:
        if value >> 32 or (value & CR0_PG and not value & CR0_PE) or (value & CR0_NW and not value & CR0_CD):
            return _GP0
        vp.stage(vtl, Reg.CR0, value)
    else:
        if not validate_cr4(value, vp.config.vmx_cr4_fixed1):
            return _GP0
        vp.stage(vtl, Reg.CR4, value)
    _advance(vp, vtl, INSTRUCTION_LENGTH["mov_cr"])
    return Completed()


def wrmsr(vp: VpState, action: Wrmsr) -> Completed | ExceptionInjected:
    """WRMSR of the active VTL (no secure intercept): validate, apply, advance."""
    vtl = vp.active_vtl
    msr, value = action.msr, action.value
    if msr in _SEGMENT_BASE_MSRS:
        if not is_canonical(value, 57):
            return _GP0
        name = _SEGMENT_BASE_MSRS[msr]
        vp.stage(vtl, name, (vp.read(vtl, name) & ~U64_MASK) | value)
    elif msr == Msr.MISC_ENABLE:
        pass  # MISC_ENABLE writes are dropped
    elif msr not in _MSR_REGISTERS or msr == Msr.HV_SVERSION:
        return _GP0
    else:
        name = _MSR_REGISTERS[msr]
        if (
            (msr == Msr.EFER and not validate_efer(value))
            or (msr in _CANONICAL_MSRS and not is_canonical(value, 57))
            or (msr == Msr.PAT and not validate_context_value(Reg.PAT, value, 0))
            or (msr == Msr.SFMASK and value >> 32)
            or (msr == Msr.HV_VP_ASSIST_PAGE and value & 0xFFE)
            or (msr == Msr.APIC_BASE and value != vp.read(vtl, Reg.APIC_BASE))
            or (msr == Msr.TSC_AUX and (value >> 32 or not vp.config.tsc_aux))
        ):
            return _GP0
        vp.stage(vtl, name, value)
        if msr == Msr.HV_EOM:
            vp.vtls[vtl].sint0_message = None
    _advance(vp, vtl, INSTRUCTION_LENGTH["msr"])
    return Completed()


def rdmsr(vp: VpState, action: Rdmsr) -> Completed | ExceptionInjected:
    """RDMSR of the active VTL: #GP(0) for MSRs the model does not back."""
    vtl = vp.active_vtl
    msr = action.msr
    if msr in _SEGMENT_BASE_MSRS:
        value = vp.read(vtl, _SEGMENT_BASE_MSRS[msr]) & U64_MASK
    elif msr == Msr.MISC_ENABLE:
        value = 0
    elif msr in _MSR_REGISTERS and not (msr == Msr.TSC_AUX and not vp.config.tsc_aux):
        value = vp.read(vtl, _MSR_REGISTERS[msr])
    else:
        return _GP0
    _advance(vp, vtl, INSTRUCTION_LENGTH["msr"])
    return Completed(value=value)


def write_vtl_control(vp: VpState, action: WriteVtlControl) -> Completed:
    """The guest writes its VP assist page's VTL-return RAX/RCX (a memory write, no exit)."""
    state = vp.vtls[vp.active_vtl]
    state.return_rax = action.return_rax
    state.return_rcx = action.return_rcx
    return Completed()
