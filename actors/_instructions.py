"""Exiting guest instructions handled in the paravisor (DOMAIN 3.6, 3.8, 3.9).

MOV to CR0/CR4, WRMSR, RDMSR, XSETBV, LGDT/LIDT/LLDT/LTR and guest memory accesses. A refused
instruction injects #GP(0) and changes nothing; a completed one advances RIP by its length.
Secure intercepts into VTL1 are decided (``_intercepts``) before anything is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    AccessKind,
    Completed,
    CrInterceptControl,
    ExceptionInjected,
    HvMapGpaFlags,
    HvRegisterName as Reg,
    InterceptDropped,
    Intercepted,
    LoadTableRegister,
    MemoryAccess,
    MovToCr,
    Rdmsr,
    Vtl,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
)
from protocol._x86 import (
    CR0_CD,
    CR0_NW,
    CR0_PE,
    CR0_PG,
    CR4_OSXSAVE,
    U64_MASK,
    ExceptionVector,
    Msr,
    is_canonical,
)

from ._access import validate_context_value, validate_cr4, validate_efer
from ._errors import VpFailed
from ._intercepts import (
    cr_write_intercepted,
    deliver,
    gpa_message,
    msr_message,
    msr_write_forwarded,
    register_message,
)
from ._tdx import VmcsField
from ._vsm import GuestVsmState, PartitionView

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._state import VpState

__all__ = (
    "INSTRUCTION_LENGTH",
    "load_table_register",
    "memory_access",
    "mov_to_cr",
    "rdmsr",
    "write_vtl_control",
    "wrmsr",
    "xsetbv",
)

Exit = Completed | ExceptionInjected | Intercepted | InterceptDropped

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
    Msr.XSS: Reg.XSS,
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
_SSP_MSRS: Final = frozenset({Msr.PL0_SSP, Msr.PL1_SSP, Msr.PL2_SSP, Msr.PL3_SSP})
_SEGMENT_BASE_MSRS: Final[dict[int, int]] = {Msr.FS_BASE: Reg.FS, Msr.GS_BASE: Reg.GS}
_REGISTERED_MSRS: Final = frozenset(
    {Msr.S_CET, Msr.PL0_SSP, Msr.PL1_SSP, Msr.PL2_SSP, Msr.PL3_SSP, Msr.INTERRUPT_SSP_TABLE_ADDR}
)
_TABLE_REGISTERS: Final = {"gdtr": Reg.GDTR, "idtr": Reg.IDTR, "ldtr": Reg.LDTR, "tr": Reg.TR}
_TABLE_CONTROL: Final[dict[str, Callable[[CrInterceptControl], bool]]] = {
    "gdtr": lambda c: c.gdtr_write,
    "idtr": lambda c: c.idtr_write,
    "ldtr": lambda c: c.ldtr_write,
    "tr": lambda c: c.tr_write,
}
_XCR0_X87: Final = 0x1
# Plain ints for the hot paths: an IntEnum member lookup costs ~0.1 us each time.
_TSC_AUX: Final = int(Msr.TSC_AUX)
_MISC_ENABLE: Final = int(Msr.MISC_ENABLE)
_MSR_LENGTH: Final = INSTRUCTION_LENGTH["msr"]
#: IA32_XSS bits a guest may set: PASID (10), CET_U (11), CET_S (12), as on the hypercall path.
_XSS_SETTABLE: Final = 0x1C00


def mov_to_cr(vp: VpState, action: MovToCr) -> Exit:
    """MOV to CR0/CR4: a secure intercept, or write the virtual register and derive the mode.

    The intercept decision comes first (PR #1206). The exit path does no reserved-bit masking
    and no ET forcing (only the hypercall path does); architecturally invalid CR0 values get #GP
    as real hardware gives before any exit.
    """
    vtl = vp.active_vtl
    value = action.value
    if cr_write_intercepted(vp, action.cr, value):
        name = Reg.CR0 if action.cr == 0 else Reg.CR4
        return deliver(vp, register_message(vp, name, value, INSTRUCTION_LENGTH["mov_cr"]))
    if action.cr == 0:
        if value >> 32 or (value & CR0_PG and not value & CR0_PE) or (value & CR0_NW and not value & CR0_CD):
            return _GP0
        vp.stage(vtl, Reg.CR0, value)
    else:
        if not validate_cr4(value, vp.config.vmx_cr4_fixed1):
            return _GP0
        vp.stage(vtl, Reg.CR4, value)
    vp.advance_rip(vtl, INSTRUCTION_LENGTH["mov_cr"])
    return Completed()


def wrmsr(vp: VpState, action: Wrmsr) -> Exit:
    """WRMSR of the active VTL: forward to VTL1 (before any validation), or validate and apply."""
    vtl = vp.active_vtl
    msr, value = action.msr, action.value
    exits = True  # every interceptable MSR is write-intercepted by default ...
    if msr in _REGISTERED_MSRS:  # ... except these, whose bitmap bit follows VTL1's registration
        exits = vtl == Vtl.VTL0 and bool(vp.vtls[Vtl.VTL0].vmcs[VmcsField.MSR_BITMAP_WRITE | msr])
    if exits and msr_write_forwarded(vp, msr):
        return deliver(vp, msr_message(vp, msr, value, INSTRUCTION_LENGTH["msr"]))
    if msr in _REGISTERED_MSRS:
        if exits:
            # The bitmap exits but forwarding does not cover this MSR (Appendix B item 13):
            # OpenHCL reaches an unreachable!() sanity check, which is fatal for the VP.
            vp.failure = (
                f"vp {vp.index}: WRMSR {msr:#x} exited without being forwarded to VTL1 "
                "(OpenHCL's unreachable!() for PL3_SSP / INTERRUPT_SSP_TABLE_ADDR)"
            )
            raise VpFailed(vp.failure)
        # No exit (OpenHCL passes these MSRs through to the L2 VM): the write reaches the
        # hardware MSR directly. tdvsm does not model CET state, so only the architectural #GP
        # checks apply (SSP values 4-byte aligned, addresses canonical).
        if msr != Msr.S_CET and (not is_canonical(value, 57) or (msr in _SSP_MSRS and value & 3)):
            return _GP0
        vp.advance_rip(vtl, INSTRUCTION_LENGTH["msr"])
        return Completed()
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
            or (msr == Msr.XSS and value & ~(vp.config.xss_supported & _XSS_SETTABLE))
        ):
            return _GP0
        vp.stage(vtl, name, value)
        if msr == Msr.HV_EOM:
            vp.vtls[vtl].sint0_message = None
    vp.advance_rip(vtl, INSTRUCTION_LENGTH["msr"])
    return Completed()


def rdmsr(vp: VpState, action: Rdmsr) -> Completed | ExceptionInjected:
    """RDMSR of the active VTL: #GP(0) for MSRs the model does not back."""
    vtl = vp.active_vtl
    msr = action.msr
    name = _MSR_REGISTERS.get(msr)
    if name is not None and (msr != _TSC_AUX or vp.config.tsc_aux):
        value = vp.read(vtl, name)
    elif msr in _SEGMENT_BASE_MSRS:
        value = vp.read(vtl, _SEGMENT_BASE_MSRS[msr]) & U64_MASK
    elif msr == _MISC_ENABLE:
        value = 0
    else:
        return _GP0
    vp.advance_rip(vtl, _MSR_LENGTH)
    return Completed(value=value)


def write_vtl_control(vp: VpState, action: WriteVtlControl) -> Completed:
    """The guest writes its VP assist page's VTL-return RAX/RCX (a memory write, no exit)."""
    state = vp.vtls[vp.active_vtl]
    state.return_rax = action.return_rax
    state.return_rcx = action.return_rcx
    return Completed()


def xsetbv(vp: VpState, action: Xsetbv) -> Exit:
    """XSETBV (ECX = 0): validated first (#GP), then intercepted iff XCr0Write, else XFEM set."""
    vtl = vp.active_vtl
    value = action.value
    if vp.cpl(vtl) != 0 or not vp.read(vtl, Reg.CR4) & CR4_OSXSAVE or not value & _XCR0_X87:
        return _GP0
    control = CrInterceptControl.from_bits(vp.vtl1.cr_intercept_control if vp.vtl1 else 0)
    if vtl == Vtl.VTL0 and vp.vtl1 is not None and control.xcr0_write:
        return deliver(vp, register_message(vp, Reg.XFEM, value, INSTRUCTION_LENGTH["xsetbv"]))
    vp.stage(vtl, Reg.XFEM, value)
    vp.advance_rip(vtl, INSTRUCTION_LENGTH["xsetbv"])
    return Completed()


def load_table_register(vp: VpState, action: LoadTableRegister) -> Exit:
    """LGDT/LIDT/LLDT/LTR: exits only with descriptor-table exiting; intercepted iff its bit."""
    vtl = vp.active_vtl
    if vp.cpl(vtl) != 0:
        return _GP0
    name = _TABLE_REGISTERS[action.which]
    if vtl == Vtl.VTL0 and vp.vtl1 is not None and vp.vtls[Vtl.VTL0].registration.descriptor_table_exiting:
        control = CrInterceptControl.from_bits(vp.vtl1.cr_intercept_control)
        if _TABLE_CONTROL[action.which](control):
            # The message carries 0, not the loaded value (DOMAIN 2.5).
            return deliver(vp, register_message(vp, name, 0, INSTRUCTION_LENGTH["table"]))
    vp.stage(vtl, name, action.value)
    vp.advance_rip(vtl, INSTRUCTION_LENGTH["table"])
    return Completed()


def memory_access(vp: VpState, view: PartitionView, action: MemoryAccess) -> Exit:
    """A guest access to guest-physical memory, checked against VTL1's protections of VTL0.

    A VTL0 access that a protection refuses becomes a GPA intercept to VTL1 (a refused read
    returns no data); memory contents themselves are not modelled.
    """
    vtl = vp.active_vtl
    gpn = action.gpa >> 12
    vtl1 = view.vtl1
    if (
        vtl != Vtl.VTL0
        or view.guest_vsm != GuestVsmState.ENABLED
        or vtl1 is None
        or not vtl1.protections_enabled
        or not vp.config.is_ram(gpn)
    ):
        return Completed()
    flags = HvMapGpaFlags.from_bits(view.protections.get(gpn, vtl1.vtl0_default_protections))
    if action.kind == AccessKind.READ:
        allowed = flags.readable
    elif action.kind == AccessKind.WRITE:
        allowed = flags.writable
    else:
        allowed = flags.kernel_executable if vp.cpl(vtl) == 0 else flags.user_executable
    if allowed:
        return Completed()
    return deliver(vp, gpa_message(vp, action.gpa, int(action.kind)))
