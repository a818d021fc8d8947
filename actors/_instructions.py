"""Exiting guest instructions handled in the paravisor (DOMAIN 3.6, 3.8, 3.9).

MOV to CR0/CR4, WRMSR, RDMSR, XSETBV, LGDT/LIDT/LLDT/LTR and guest memory accesses. A refused
instruction injects #GP(0) and changes nothing; a completed one advances RIP by its length.
Secure intercepts into VTL1 are decided (``_intercepts``) before anything is written. An
instruction that does not exit (a guest-owned CR bit, a pass-through MSR, LGDT without
descriptor-table exiting) is the processor's own business: its checks, no TDCALL. One that
exits is handled as TDX ``handle_vmx_exit`` does, TDG.VP.RD/WR included (DOMAIN 7.1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    AccessKind,
    ClearMessageSlot,
    Completed,
    CrInterceptControl,
    ExceptionInjected,
    HvMapGpaFlags,
    HvRegisterName as Reg,
    InterceptDropped,
    Intercepted,
    InterceptPosted,
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
    CR0_WP,
    CR4_CET,
    CR4_LA57,
    CR4_OSXSAVE,
    CR4_PAE,
    CR4_PCIDE,
    EFER_LMA,
    U64_MASK,
    ExceptionVector,
    Msr,
    cr4_allowed_bits,
    is_canonical,
)

from ._errors import PartitionFailed
from ._intercepts import (
    cr_write_armed,
    cr_write_intercepted,
    deliver,
    gpa_message,
    msr_message,
    msr_write_forwarded,
    register_message,
)
from ._tdcalls import mov_to_cr_tdcalls, wrmsr_efer_tdcalls
from ._tdx import VmcsField, msr_write_intercepted
from ._validation import validate_context_value, validate_efer
from ._vsm import GuestVsmState, PartitionView

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._state import VpState

__all__ = (
    "INSTRUCTION_LENGTH",
    "clear_message_slot",
    "load_table_register",
    "memory_access",
    "mov_to_cr",
    "rdmsr",
    "write_vtl_control",
    "wrmsr",
    "xsetbv",
)

Exit = Completed | ExceptionInjected | Intercepted | InterceptPosted | InterceptDropped

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
#: MSRs OpenHCL passes through to the L2 VM (TDX ``MSR_ALLOWED_READ_WRITE``): no exit.
_SEGMENT_BASE_MSRS: Final[dict[int, int]] = {Msr.FS_BASE: Reg.FS, Msr.GS_BASE: Reg.GS}
#: WRMSRs whose TDX ``write_msr_tdx`` arm writes one VMCS field (1 TDG.VP.WR).
_VMCS_MSRS: Final = frozenset({Msr.SYSENTER_CS, Msr.SYSENTER_EIP, Msr.SYSENTER_ESP, Msr.PAT})
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
_SELECTOR: Final = 0xFFFF << 96
# Plain ints for the hot paths: an IntEnum member lookup costs ~0.1 us each time.
_TSC_AUX: Final = int(Msr.TSC_AUX)
_PAT: Final = int(Msr.PAT)
_MISC_ENABLE: Final = int(Msr.MISC_ENABLE)
_CR0: Final = int(Reg.CR0)
_CR4: Final = int(Reg.CR4)
_EFER: Final = int(Reg.EFER)
_MSR_LENGTH: Final = INSTRUCTION_LENGTH["msr"]
#: IA32_XSS bits a guest may set: PASID (10), CET_U (11), CET_S (12), as on the hypercall path.
_XSS_SETTABLE: Final = 0x1C00


def _native_mov_to_cr_gp(vp: VpState, vtl: int, cr: int, value: int) -> bool:
    """The processor's own #GP checks of a MOV to CR0/CR4 that does not exit (SDM MOV CR)."""
    if cr == 0:
        return bool(
            value >> 32
            or (value & CR0_PG and not value & CR0_PE)
            or (value & CR0_NW and not value & CR0_CD)
            or (not value & CR0_WP and vp.read(vtl, _CR4) & CR4_CET)
        )
    old = vp.read(vtl, _CR4)
    lma = vp.read(vtl, _EFER) & EFER_LMA
    return bool(
        (lma and (not value & CR4_PAE or (old ^ value) & CR4_LA57))
        or (value & CR4_PCIDE and not old & CR4_PCIDE and (not lma or vp.read(vtl, Reg.CR3) & 0xFFF))
        or (value & CR4_CET and not vp.read(vtl, _CR0) & CR0_WP)
    )


def mov_to_cr(vp: VpState, action: MovToCr) -> Exit:
    """MOV to CR0/CR4: no exit, a secure intercept, or a CR_ACCESS exit that writes the register.

    It exits unless the value matches the read shadow in every bit of the CR guest/host mask
    (Intel SDM, "Instructions That Cause VM Exits Conditionally"). Exit priority (DOMAIN 7.4):
    the SDM's "Relative Priority of Faults and VM Exits" gives priority over VM exits only to
    #UD, privilege-level faults and TSS I/O-permission #GP; "fault-like VM exits have priority
    over exceptions other than those mentioned above". So an invalid CR0 value (PG without PE,
    NW without CD, bits 63:32) exits instead of faulting, and OpenHCL's CR_ACCESS arm writes it
    unchecked (CR0 allows every bit; no masking, no ET forcing): PG without PE then fails VM
    entry check 3 and ends the partition; NW without CD and bits 63:32 stay in the read shadow
    (host-owned bits never reach the physical CR0). CR4 outside the allowed bits gets #GP.
    The intercept decision comes first (PR #1206).
    """
    vtl = vp.active_vtl
    value = action.value
    cr = action.cr
    name = _CR0 if cr == 0 else _CR4
    length = INSTRUCTION_LENGTH["mov_cr"]
    old = vp.read(vtl, name)
    mask = vp.vtls[vtl].vmcs[VmcsField.CR0_GUEST_HOST_MASK if cr == 0 else VmcsField.CR4_GUEST_HOST_MASK]
    if not (old ^ value) & mask:
        # No VM exit: only guest-owned bits change, in hardware, under the processor's checks.
        if _native_mov_to_cr_gp(vp, vtl, cr, value):
            return _GP0
        vp.hardware_write(vtl, name, value)
        vp.advance_rip(vtl, length)
        return Completed()
    armed = cr_write_armed(vp, cr)
    if armed and cr_write_intercepted(vp, cr, old, value):
        vp.count_tdcalls(vtl, 1, 0)
        return deliver(vp, register_message(vp, Reg(name), value, length))
    if cr == 4 and value & ~cr4_allowed_bits(vp.config.vmx_cr4_fixed1):
        vp.count_tdcalls(vtl, int(armed), 0)  # VirtualRegister::write refuses before reading
        return _GP0
    if vp.eager:
        efer = vp.read(vtl, _EFER)
        cr0 = value if cr == 0 else vp.read(vtl, _CR0)
        vp.count_tdcalls(vtl, *mov_to_cr_tdcalls(cr, armed, old, value, efer, cr0))
    vp.stage(vtl, name, value)
    vp.advance_rip(vtl, length)
    return Completed()


def wrmsr(vp: VpState, action: Wrmsr) -> Exit:
    """WRMSR of the active VTL: forward to VTL1 (before any validation), or validate and apply."""
    vtl = vp.active_vtl
    msr, value = action.msr, action.value
    exits = True  # every interceptable MSR is write-intercepted by default ...
    if msr in _REGISTERED_MSRS:  # ... except these, whose bitmap bit follows VTL1's registration
        exits = vtl == Vtl.VTL0 and msr_write_intercepted(vp.vtls[Vtl.VTL0].vmcs, msr)
    if exits and msr_write_forwarded(vp, msr):
        return deliver(vp, msr_message(vp, msr, value, INSTRUCTION_LENGTH["msr"]))
    if msr in _REGISTERED_MSRS:
        # The architectural checks (SSP values 4-byte aligned, addresses canonical): the
        # processor's #GP without an exit, or HCVM validate_cvm_msr_write's #GP after one.
        # DOMAIN 7.4: an invalid value is refused before the fatal sanity check below.
        if msr != Msr.S_CET and (not is_canonical(value, 57) or (msr in _SSP_MSRS and value & 3)):
            return _GP0
        if exits:
            # The bitmap exits but forwarding does not cover this MSR (Appendix B item 13):
            # OpenHCL reaches an unreachable!() sanity check, fatal for the partition (7.2).
            msg = (
                f"vp {vp.index} VTL0: WRMSR {msr:#x} exited without being forwarded to VTL1 "
                "(OpenHCL's unreachable!() for PL3_SSP / INTERRUPT_SSP_TABLE_ADDR)"
            )
            raise PartitionFailed(msg)
        # No exit (OpenHCL passes these MSRs through to the L2 VM): the write reaches the
        # hardware MSR directly; tdvsm does not model CET state.
        vp.advance_rip(vtl, INSTRUCTION_LENGTH["msr"])
        return Completed()
    if msr in _SEGMENT_BASE_MSRS:
        # Passed through (no exit): the processor writes the segment base itself.
        if not is_canonical(value, 57):
            return _GP0
        name = _SEGMENT_BASE_MSRS[msr]
        vp.hardware_write(vtl, name, (vp.read(vtl, name) & ~U64_MASK) | value)
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
        if vp.eager:
            if msr == Msr.EFER:
                vp.count_tdcalls(vtl, *wrmsr_efer_tdcalls(vp.read(vtl, _EFER), value, vp.read(vtl, _CR0)))
            elif msr in _VMCS_MSRS:
                vp.count_tdcalls(vtl, 0, 1)
        # HV_EOM does nothing to the message slot (HV1 set_eom, DOMAIN 7.3).
        vp.stage(vtl, name, value)
    vp.advance_rip(vtl, INSTRUCTION_LENGTH["msr"])
    return Completed()


def rdmsr(vp: VpState, action: Rdmsr) -> Completed | ExceptionInjected:
    """RDMSR of the active VTL: #GP(0) for MSRs the model does not back."""
    vtl = vp.active_vtl
    msr = action.msr
    name = _MSR_REGISTERS.get(msr)
    if name is not None and (msr != _TSC_AUX or vp.config.tsc_aux):
        value = vp.read(vtl, name)
        if msr == _PAT and vp.eager:
            vp.count_tdcalls(vtl, 1, 0)  # TDX read_msr_tdx reads GUEST_PAT
    elif msr in _SEGMENT_BASE_MSRS:
        value = vp.read(vtl, _SEGMENT_BASE_MSRS[msr]) & U64_MASK
    elif msr == _MISC_ENABLE:
        value = 0
    else:
        return _GP0
    vp.advance_rip(vtl, _MSR_LENGTH)
    return Completed(value=value)


def clear_message_slot(vp: VpState, action: ClearMessageSlot) -> Completed:
    """The guest writes HvMessageTypeNone into its SIMP slot's header: the slot is free (7.3).

    A memory write to the guest's own message page, no exit; with SIMP disabled the guest has
    no message page mapped, so the write does not reach the slot. Only SINT0 receives messages
    in tdvsm, so clearing another slot changes nothing.
    """
    vtl = vp.active_vtl
    if action.sint == 0 and vp.read(vtl, Reg.SIPP) & 1:
        state = vp.vtls[vtl]
        state.sint0_message = None
        state.sint0_pending = False
    return Completed()


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
    if vp.cpl(vtl) != 0:
        return _GP0  # a privilege-level fault: the processor's, before any exit
    vp.count_tdcalls(vtl, 1, 0)  # XsetbvExitInput reads CR4 through VirtualRegister::read
    if not vp.read(vtl, Reg.CR4) & CR4_OSXSAVE or not value & _XCR0_X87:
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
        return _GP0  # a privilege-level fault: the processor's, before any exit
    name = _TABLE_REGISTERS[action.which]
    value = action.value
    if not (
        vtl == Vtl.VTL0 and vp.vtl1 is not None and vp.vtls[Vtl.VTL0].registration.descriptor_table_exiting
    ):
        # No exit: the processor loads the register itself, with its own descriptor checks
        # (LTR: a present system TSS descriptor; LLDT: a null selector or a present LDT).
        if action.which in ("ldtr", "tr") and not _loadable_descriptor(action.which, value):
            return _GP0
        vp.hardware_write(vtl, name, value)
        vp.advance_rip(vtl, INSTRUCTION_LENGTH["table"])
        return Completed()
    control = CrInterceptControl.from_bits(vp.vtl1.cr_intercept_control)
    if _TABLE_CONTROL[action.which](control):
        # The message carries 0, not the loaded value (DOMAIN 2.5).
        return deliver(vp, register_message(vp, name, 0, INSTRUCTION_LENGTH["table"]))
    # TDX emulate_gdtr_or_idtr: long_mode() reads CR0, write_table_register writes base and
    # limit; emulate_ldtr_or_tr writes the selector. The operand fetch's reads (GVA translation)
    # are not counted.
    if action.which in ("gdtr", "idtr"):
        vp.count_tdcalls(vtl, 1, 2)
    else:
        # emulate_ldtr_or_tr writes only the selector field: base, limit and attributes keep
        # their values (no descriptor load).
        vp.count_tdcalls(vtl, 0, 1)
        value = (vp.read(vtl, name) & ~_SELECTOR) | (value & _SELECTOR)
    vp.stage(vtl, name, value)
    vp.advance_rip(vtl, INSTRUCTION_LENGTH["table"])
    return Completed()


def _loadable_descriptor(which: str, value: int) -> bool:
    """Whether LLDT/LTR of the packed ``value`` passes the processor's descriptor checks."""
    attributes = (value >> 112) & 0xFFFF
    if which == "ldtr" and not (value >> 96) & 0xFFFC:
        return True  # a null selector makes LDTR unusable
    present_system = attributes & 0x80 and not attributes & 0x10
    kind = attributes & 0xF
    return bool(present_system and (kind in (9, 11) if which == "tr" else kind == 2))


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
