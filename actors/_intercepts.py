"""Secure intercepts: which VTL0 writes VTL1 intercepts, the messages, and their delivery.

DOMAIN 3.8. Only VTL0 writes are intercepted, and only on a VP where VTL1 exists. A decision is
made before anything is written: when a message is produced the write is not applied and VTL0's
RIP does not move. The message goes to VTL1's SynIC SINT0 slot (HV1 ``post_intercept_message``,
DOMAIN 7.3): a full slot gets its MessagePending flag and refuses the post, a masked or proxy
SINT0 refuses it (OpenHCL drops the message and VTL0 simply exits again later); otherwise the
message is written, even with SIMP disabled, and SINT0 requests a VTL1 interrupt, so VTL1 is
entered with entry reason INTERRUPT (2), never INTERCEPT (Appendix B 11) - unless SINT0 polls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypedDict

from protocol import (
    CrInterceptControl,
    HvMessageType,
    HvRegisterName as Reg,
    HvVtlEntryReason,
    InterceptDropped,
    Intercepted,
    InterceptMessage,
    InterceptPosted,
    SynicSint,
    Vtl,
)
from protocol._x86 import EFER_LMA, Msr

if TYPE_CHECKING:
    from ._state import VpState

__all__ = (
    "MSR_INTERCEPT_BITS",
    "cr_write_armed",
    "cr_write_intercepted",
    "deliver",
    "gpa_message",
    "msr_message",
    "msr_write_forwarded",
    "register_message",
)

_WRITE: Final = 1
_CACHE_TYPE_WB: Final = 6

#: WRMSR forwarding to VTL1 (HCVM ``cvm_try_protect_msr_write``): MSR -> CrInterceptControl bit.
#: PL3_SSP is absent on purpose (Appendix B item 13).
MSR_INTERCEPT_BITS: Final[dict[int, int]] = {
    Msr.LSTAR: 1 << 6,
    Msr.STAR: 1 << 8,
    Msr.CSTAR: 1 << 10,
    Msr.APIC_BASE: 1 << 12,
    Msr.EFER: 1 << 14,
    Msr.SYSENTER_CS: 1 << 19,
    Msr.SYSENTER_EIP: 1 << 20,
    Msr.SYSENTER_ESP: 1 << 21,
    Msr.SFMASK: 1 << 22,
    Msr.TSC_AUX: 1 << 23,
    Msr.XSS: 1 << 25,
    Msr.S_CET: 1 << 26,
    Msr.PL0_SSP: 1 << 27,
    Msr.PL1_SSP: 1 << 27,
    Msr.PL2_SSP: 1 << 27,
    Msr.INTERRUPT_SSP_TABLE_ADDR: 1 << 28,
}


class _Header(TypedDict):
    message_type: int
    vp_index: int
    instruction_length: int
    access_type: int
    rip: int
    rflags: int
    execution_state: int


def _header(vp: VpState, message_type: HvMessageType, length: int, access: int) -> _Header:
    """Common HvX64InterceptMessageHeader fields for a VTL0 exit."""
    efer = vp.read(Vtl.VTL0, Reg.EFER)
    cpl = vp.cpl(Vtl.VTL0)
    return {
        "message_type": message_type,
        "vp_index": vp.index,
        "instruction_length": length,
        "access_type": access,
        "rip": vp.read(Vtl.VTL0, Reg.RIP),
        "rflags": vp.read(Vtl.VTL0, Reg.RFLAGS),
        # CPL in bits 0-1, EFER.LMA in bit 4, VTL (0) in bits 7-10: what OpenHCL fills in.
        "execution_state": cpl | (int(bool(efer & EFER_LMA)) << 4),
    }


def register_message(vp: VpState, name: Reg, value: int, length: int) -> InterceptMessage:
    """A register intercept (type 0x80010006) for a write of ``value`` to ``name``."""
    return InterceptMessage(
        **_header(vp, HvMessageType.REGISTER_INTERCEPT, length, _WRITE), register_name=name, value=value
    )


def msr_message(vp: VpState, msr: int, value: int, length: int) -> InterceptMessage:
    """An MSR intercept (type 0x80010001): the MSR number and EDX:EAX."""
    return InterceptMessage(
        **_header(vp, HvMessageType.MSR_INTERCEPT, length, _WRITE),
        msr=msr,
        rax=value & 0xFFFF_FFFF,
        rdx=value >> 32,
    )


def gpa_message(vp: VpState, gpa: int, access: int) -> InterceptMessage:
    """A GPA intercept (type 0x80000001) for a VTL0 access that a VTL1 protection refused."""
    return InterceptMessage(**_header(vp, HvMessageType.GPA_INTERCEPT, 0, access), gpa=gpa)


def _control(vp: VpState) -> int:
    return vp.vtl1.cr_intercept_control if vp.vtl1 is not None else 0


def cr_write_armed(vp: VpState, cr: int) -> bool:
    """Whether VTL1 registered the CR0 (CR4) write of the active VTL (Cr0Write/Cr4Write).

    Then HCVM ``cvm_is_protected_register_write`` reads the current value (one TDG.VP.RD) to
    compare it with the new one under the mask.
    """
    if vp.active_vtl != Vtl.VTL0 or vp.vtl1 is None:
        return False
    control = CrInterceptControl.from_bits(vp.vtl1.cr_intercept_control)
    return control.cr0_write if cr == 0 else control.cr4_write


def cr_write_intercepted(vp: VpState, cr: int, old: int, new: int) -> bool:
    """A MOV to CR0/CR4 that exited and is armed: intercepted iff (old XOR new) AND the mask != 0
    (PR #2275: before it, an armed write was intercepted whatever changed)."""
    assert vp.vtl1 is not None  # armed
    mask = vp.vtl1.cr0_mask if cr == 0 else vp.vtl1.cr4_mask
    return bool((old ^ new) & mask)


def msr_write_forwarded(vp: VpState, msr: int) -> bool:
    """Whether a VTL0 WRMSR is forwarded to VTL1 (checked before any value validation)."""
    if vp.active_vtl != Vtl.VTL0 or vp.vtl1 is None:
        return False
    bit = MSR_INTERCEPT_BITS.get(msr)
    return bit is not None and bool(_control(vp) & bit)


def deliver(vp: VpState, message: InterceptMessage) -> Intercepted | InterceptPosted | InterceptDropped:
    """Post ``message`` to VTL1's SINT0 slot (DOMAIN 7.3) and enter VTL1 unless SINT0 polls.

    The order is OpenHCL's: ``check_sint_ready`` first (a full slot gets MessagePending, once,
    and the post fails with ObjectInUse), then ``post_message`` refuses a masked or proxy SINT0
    but never looks at SIMP enablement; ``sint_interrupt`` raises no interrupt for a polling one.
    """
    vtl1 = vp.vtls[Vtl.VTL1]
    if vtl1.sint0_message is not None:
        vtl1.sint0_pending = True
        return InterceptDropped(
            message=message, reason="VTL1's SINT0 slot still holds the previous message (MessagePending set)"
        )
    sint0 = SynicSint.from_bits(vp.read(Vtl.VTL1, Reg.SINT0))
    if sint0.masked:
        return InterceptDropped(message=message, reason="VTL1's SINT0 is masked")
    if sint0.proxy:
        return InterceptDropped(message=message, reason="VTL1's SINT0 is a proxy SINT")
    vtl1.sint0_message = message
    vtl1.sint0_pending = False
    if sint0.polling:
        return InterceptPosted(message=message)
    vp.active_vtl = Vtl.VTL1
    vtl1.entry_reason = HvVtlEntryReason.INTERRUPT
    return Intercepted(message=message)
