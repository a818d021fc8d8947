"""The state of one VTL of one VP (``VtlState``) and of the VP's VTL1 (``GuestVsmVpState``).

A VTL has its private registers, modelled VMCS, VP-assist VTL control and SINT0 slot;
``actors._state.VpState`` holds one per VTL and commits their staged writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._registers import PRIVATE_RESET, RegisterFile
from ._tdx import NO_REGISTRATION, CrRegistration, VmcsImage, vmcs_image

if TYPE_CHECKING:
    from protocol import InterceptMessage, Vtl

__all__ = ("GuestVsmVpState", "VtlState")

#: Reset VMCS images, shared by every VP with the same (VTL, CR4 FIXED1): never mutated.
_RESET_IMAGES: dict[tuple[int, int], dict[int, int]] = {}


def _reset_image(vtl: Vtl, vmx_cr4_fixed1: int) -> dict[int, int]:
    key = (vtl, vmx_cr4_fixed1)
    image = _RESET_IMAGES.get(key)
    if image is None:
        # APIC_BASE (the only BSP difference) is not a VMCS field, so one image fits every VP.
        image = vmcs_image(vtl, PRIVATE_RESET.__getitem__, NO_REGISTRATION, vmx_cr4_fixed1)
        _RESET_IMAGES[key] = image
    return image


class GuestVsmVpState:
    """VTL1 state of one VP (OpenHCL ``GuestVsmVpState``): exists once VTL1 was enabled here."""

    __slots__ = (
        "cr0_mask",
        "cr4_mask",
        "cr_intercept_control",
        "misc_enable_mask",
        "pending_event",
        "tlb_locked",
        "vp_mbec_enabled",
    )

    def __init__(self) -> None:
        self.pending_event: int | None = None
        self.cr_intercept_control = 0
        self.cr0_mask = 0
        self.cr4_mask = 0
        self.misc_enable_mask = 0
        self.vp_mbec_enabled = False
        self.tlb_locked = False


class VtlState:
    """One VTL of one VP: private registers, modelled VMCS, VP-assist VTL control, SINT0 slot.

    ``sint0_message`` is what the SIMP slot of SINT0 holds (None: header type HvMessageTypeNone,
    the slot is free) and ``sint0_pending`` its header's MessagePending flag (DOMAIN 7.3).
    ``entry_check`` is True when the next VM entry must run the guest-state checks (the
    committed state changed where they look since they last passed); ``rip64`` whether the last
    check found 64-bit mode (IA-32e, CS.L), where RIP may use 64 bits.
    """

    __slots__ = (
        "commits",
        "entry_check",
        "entry_reason",
        "registration",
        "regs",
        "return_rax",
        "return_rcx",
        "rip64",
        "sint0_message",
        "sint0_pending",
        "staged_registration",
        "staged_updates",
        "vina_asserted",
        "vmcs",
        "vmcs_reads",
        "vmcs_writes",
        "vtl",
    )

    def __init__(self, vtl: Vtl, reset: dict[int, int], vmx_cr4_fixed1: int) -> None:
        self.vtl = vtl
        self.regs = RegisterFile(reset)
        self.registration = NO_REGISTRATION
        self.staged_registration: CrRegistration | None = None
        self.staged_updates = 0
        self.vmcs = VmcsImage(_reset_image(vtl, vmx_cr4_fixed1))
        self.vmcs_reads = 0
        self.vmcs_writes = 0
        self.commits = 0
        self.entry_check = True
        self.rip64 = False
        # VP assist page VTL control block (offsets 0x08, 0x10, 0x18).
        self.entry_reason = 0
        self.return_rax = 0
        self.return_rcx = 0
        self.vina_asserted = False
        self.sint0_message: InterceptMessage | None = None
        self.sint0_pending = False

    @property
    def dirty(self) -> bool:
        """True when staged updates wait for a commit."""
        return self.staged_updates > 0
