"""The derived TDX L2 state of one VTL: the modelled VMCS image and its execution mode.

OpenHCL runs each lower VTL as an L2 VM (VTL0 -> VM 1, VTL1 -> VM 2) and keeps its VMCS in step
with the registers through masked ``TDG.VP.WR`` calls (DOMAIN 1.4, 3.9). Here the VMCS is a pure
function of the committed registers and of VTL1's CR-intercept registration: ``vmcs_image``.
It is the batched policy's write-back copy: a commit recomputes the fields its changed registers
touch and, under that policy, counts one TDG.VP.WR per field whose value changed (DOMAIN 7.1).
RIP, RSP and RFLAGS are not VMCS fields for OpenHCL (they travel in ``TdxL2EnterGuestState``
with TDG.VP.ENTER), so they are not in the image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from protocol import HvRegisterName as Reg, Vtl
from protocol._base import hex_repr
from protocol._x86 import (
    CR0_GUEST_OWNED,
    CR0_PG,
    CR0_PHYSICAL_HOST_BITS,
    CR4_GUEST_OWNED,
    CR4_PHYSICAL_HOST_BITS,
    DEFAULT_CR0_GUEST_HOST_MASK,
    EFER_LMA,
    EFER_LME,
    SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING,
    SECONDARY_CONTROL_MODE_BASED_EXECUTE,
    U64_MASK,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
    Msr,
    default_cr4_guest_host_mask,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = (
    "MODE_REGISTERS",
    "PLAIN_FIELDS",
    "SEGMENT_FIELDS",
    "TABLE_FIELDS",
    "CrRegistration",
    "TdxL2State",
    "VmcsImage",
    "VmcsField",
    "derive_lma",
    "msr_bitmap_field",
    "msr_write_intercepted",
    "vmcs_image",
)


class VmcsField:
    """VMCS field encodings (Intel SDM appendix B) of the fields the model writes."""

    CR0_GUEST_HOST_MASK: Final = 0x6000
    CR4_GUEST_HOST_MASK: Final = 0x6002
    CR0_READ_SHADOW: Final = 0x6004
    CR4_READ_SHADOW: Final = 0x6006
    GUEST_CR0: Final = 0x6800
    GUEST_CR3: Final = 0x6802
    GUEST_CR4: Final = 0x6804
    GUEST_DR7: Final = 0x681A
    GUEST_SYSENTER_ESP: Final = 0x6824
    GUEST_SYSENTER_EIP: Final = 0x6826
    GUEST_SYSENTER_CS: Final = 0x482A
    GUEST_PAT: Final = 0x2804
    GUEST_EFER: Final = 0x2806
    ENTRY_CONTROLS: Final = 0x4012
    SECONDARY_PROCESSOR_CONTROLS: Final = 0x401E
    GDTR_LIMIT: Final = 0x4810
    IDTR_LIMIT: Final = 0x4812
    GDTR_BASE: Final = 0x6816
    IDTR_BASE: Final = 0x6818
    #: Pseudo-fields for the 64-bit words of the MSR bitmap (TDVPS class MSR_BITMAPS_1/2, one
    #: TDG.VP.WR per word written): ``MSR_BITMAP | word index`` (HCL ``set_msr_bit``).
    MSR_BITMAP: Final = 0x1_0000_0000


# Segment register -> (selector, limit, access rights, base) VMCS encodings.
SEGMENT_FIELDS: Final[dict[int, tuple[int, int, int, int]]] = {
    Reg.ES: (0x0800, 0x4800, 0x4814, 0x6806),
    Reg.CS: (0x0802, 0x4802, 0x4816, 0x6808),
    Reg.SS: (0x0804, 0x4804, 0x4818, 0x680A),
    Reg.DS: (0x0806, 0x4806, 0x481A, 0x680C),
    Reg.FS: (0x0808, 0x4808, 0x481C, 0x680E),
    Reg.GS: (0x080A, 0x480A, 0x481E, 0x6810),
    Reg.LDTR: (0x080C, 0x480C, 0x4820, 0x6812),
    Reg.TR: (0x080E, 0x480E, 0x4822, 0x6814),
}
TABLE_FIELDS: Final[dict[int, tuple[int, int]]] = {
    Reg.GDTR: (VmcsField.GDTR_LIMIT, VmcsField.GDTR_BASE),
    Reg.IDTR: (VmcsField.IDTR_LIMIT, VmcsField.IDTR_BASE),
}
PLAIN_FIELDS: Final[dict[int, int]] = {
    Reg.CR3: VmcsField.GUEST_CR3,
    Reg.DR7: VmcsField.GUEST_DR7,
    Reg.PAT: VmcsField.GUEST_PAT,
    Reg.SYSENTER_CS: VmcsField.GUEST_SYSENTER_CS,
    Reg.SYSENTER_EIP: VmcsField.GUEST_SYSENTER_EIP,
    Reg.SYSENTER_ESP: VmcsField.GUEST_SYSENTER_ESP,
}
#: Registers whose change re-derives the execution mode and the CR fields.
MODE_REGISTERS: Final = frozenset({Reg.CR0, Reg.CR4, Reg.EFER})
#: Every register that lands in a VMCS field.
VMCS_REGISTERS: Final = (
    frozenset(SEGMENT_FIELDS) | frozenset(TABLE_FIELDS) | frozenset(PLAIN_FIELDS) | MODE_REGISTERS
)

#: MSRs whose write-intercept bitmap bit follows VTL1's CR-intercept registration.
REGISTERED_MSRS: Final = (
    Msr.S_CET,
    Msr.PL0_SSP,
    Msr.PL1_SSP,
    Msr.PL2_SSP,
    Msr.PL3_SSP,
    Msr.INTERRUPT_SSP_TABLE_ADDR,
)


class CrRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """What ``cr_intercept_registration`` last wrote for VTL0 (DOMAIN 3.8).

    The masks are those current when CrInterceptControl was written: writing a mask register
    later does not refresh them (Appendix B item 8).
    """

    cr0_mask: int = 0
    cr4_mask: int = 0
    descriptor_table_exiting: bool = False
    intercept_s_cet: bool = False
    intercept_pls_ssp: bool = False


NO_REGISTRATION: Final = CrRegistration()


def msr_bitmap_field(msr: int, *, write: bool = True) -> int:
    """The MSR-bitmap word holding ``msr``'s intercept bit (HCL ``set_msr_bit``'s word index)."""
    index = (msr & 0xFFFF) // 64 + (0x80 if msr & 0x8000_0000 else 0) + (0x100 if write else 0)
    return VmcsField.MSR_BITMAP | index


def msr_write_intercepted(vmcs: dict[int, int], msr: int) -> bool:
    """Whether ``msr``'s write-intercept bit is set in the MSR bitmap of ``vmcs``."""
    return bool(vmcs[msr_bitmap_field(msr)] >> (msr & 63) & 1)


#: MSR-bitmap words of the registered MSRs (all six share one word).
_REGISTERED_WORDS: Final = tuple(sorted({msr_bitmap_field(msr) for msr in REGISTERED_MSRS}))


def derive_lma(efer: int, cr0: int) -> int:
    """EFER with LMA := LME AND CR0.PG (TDX ``update_execution_mode``)."""
    lma = EFER_LMA if (efer & EFER_LME) and (cr0 & CR0_PG) else 0
    return (efer & ~EFER_LMA) | lma


def _segment_values(value: int) -> tuple[int, int, int, int]:
    return ((value >> 96) & 0xFFFF, (value >> 64) & 0xFFFF_FFFF, (value >> 112) & 0xFFFF, value & U64_MASK)


def register_fields(name: int, value: int) -> Iterable[tuple[int, int]]:
    """The VMCS (field, value) pairs of one non-mode register."""
    if name in PLAIN_FIELDS:
        return ((PLAIN_FIELDS[name], value),)
    if name in SEGMENT_FIELDS:
        return zip(SEGMENT_FIELDS[name], _segment_values(value), strict=True)
    if name in TABLE_FIELDS:
        limit_field, base_field = TABLE_FIELDS[name]
        return ((limit_field, (value >> 48) & 0xFFFF), (base_field, (value >> 64) & U64_MASK))
    return ()


def mode_fields(
    vtl: Vtl, cr0: int, cr4: int, efer: int, registration: CrRegistration, vmx_cr4_fixed1: int
) -> Iterable[tuple[int, int]]:
    """The CR, EFER, control and MSR-bitmap fields: derived from CR0/CR4/EFER and registration."""
    cr0_mask = DEFAULT_CR0_GUEST_HOST_MASK
    cr4_mask = default_cr4_guest_host_mask(vmx_cr4_fixed1)
    secondary = 0
    if vtl == Vtl.VTL0:
        cr0_mask |= registration.cr0_mask
        cr4_mask |= registration.cr4_mask
        secondary = SECONDARY_CONTROL_MODE_BASED_EXECUTE
        if registration.descriptor_table_exiting:
            secondary |= SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING
    yield VmcsField.GUEST_CR0, (cr0 & CR0_GUEST_OWNED) | CR0_PHYSICAL_HOST_BITS
    yield VmcsField.CR0_READ_SHADOW, cr0
    yield VmcsField.GUEST_CR4, (cr4 & CR4_GUEST_OWNED) | CR4_PHYSICAL_HOST_BITS
    yield VmcsField.CR4_READ_SHADOW, cr4
    yield VmcsField.CR0_GUEST_HOST_MASK, cr0_mask & U64_MASK
    yield VmcsField.CR4_GUEST_HOST_MASK, cr4_mask & U64_MASK
    yield VmcsField.GUEST_EFER, efer
    yield VmcsField.ENTRY_CONTROLS, VMX_ENTRY_CONTROL_LONG_MODE_GUEST if efer & EFER_LMA else 0
    yield VmcsField.SECONDARY_PROCESSOR_CONTROLS, secondary
    words = dict.fromkeys(_REGISTERED_WORDS, 0)
    if vtl == Vtl.VTL0:
        for msr in REGISTERED_MSRS:
            if registration.intercept_s_cet if msr == Msr.S_CET else registration.intercept_pls_ssp:
                words[msr_bitmap_field(msr)] |= 1 << (msr & 63)
    yield from words.items()


class VmcsImage(dict[int, int]):
    """A VMCS image stored as the fields that differ from a shared reset image.

    Every VP starts from the same image, so each keeps only its own changes (an idle VP costs
    an empty dict); reading a field it never wrote falls back to the reset image.
    """

    __slots__ = ("reset",)

    def __init__(self, reset: dict[int, int]) -> None:
        super().__init__()
        self.reset = reset

    def __missing__(self, field: int) -> int:
        return self.reset[field]

    def full(self) -> dict[int, int]:
        """Every field, reset values included."""
        return self.reset | self


def vmcs_image(
    vtl: Vtl, read: Callable[[int], int], registration: CrRegistration, vmx_cr4_fixed1: int
) -> dict[int, int]:
    """The whole modelled VMCS of one VTL, as a pure function of its committed state."""
    image: dict[int, int] = {}
    for name in PLAIN_FIELDS.keys() | SEGMENT_FIELDS.keys() | TABLE_FIELDS.keys():
        image.update(register_fields(name, read(name)))
    image.update(mode_fields(vtl, read(Reg.CR0), read(Reg.CR4), read(Reg.EFER), registration, vmx_cr4_fixed1))
    return image


class TdxL2State(msgspec.Struct, frozen=True, kw_only=True):
    """A committed snapshot of one VTL's derived TDX L2 state (what ``vp.tdx_state`` returns).

    ``efer``, ``cr0`` and ``cr4`` are the guest-visible values; ``physical_cr0``/``physical_cr4``
    are the VMCS guest fields; ``long_mode_guest`` is VM-entry control bit 9. ``vmcs_reads`` and
    ``vmcs_writes`` count the modelled TDG.VP.RD and TDG.VP.WR of this VTL (DOMAIN 7.1: OpenHCL's
    pattern under the eager policy, the write-back commits under batched) and ``commits`` the
    commits that produced this state.
    """

    vtl: Vtl
    efer: int
    cr0: int
    cr4: int
    physical_cr0: int
    physical_cr4: int
    cr0_read_shadow: int
    cr4_read_shadow: int
    cr0_guest_host_mask: int
    cr4_guest_host_mask: int
    entry_controls: int
    secondary_controls: int
    long_mode_guest: bool
    msr_write_intercepts: tuple[int, ...]
    vmcs_reads: int
    vmcs_writes: int
    commits: int

    def __repr__(self) -> str:
        return hex_repr(self)

    @classmethod
    def from_image(
        cls, vtl: Vtl, image: dict[int, int], *, vmcs_reads: int, vmcs_writes: int, commits: int
    ) -> TdxL2State:
        """Build the snapshot from a VMCS image and the counters."""
        entry = image[VmcsField.ENTRY_CONTROLS]
        return cls(
            vtl=vtl,
            efer=image[VmcsField.GUEST_EFER],
            cr0=image[VmcsField.CR0_READ_SHADOW],
            cr4=image[VmcsField.CR4_READ_SHADOW],
            physical_cr0=image[VmcsField.GUEST_CR0],
            physical_cr4=image[VmcsField.GUEST_CR4],
            cr0_read_shadow=image[VmcsField.CR0_READ_SHADOW],
            cr4_read_shadow=image[VmcsField.CR4_READ_SHADOW],
            cr0_guest_host_mask=image[VmcsField.CR0_GUEST_HOST_MASK],
            cr4_guest_host_mask=image[VmcsField.CR4_GUEST_HOST_MASK],
            entry_controls=entry,
            secondary_controls=image[VmcsField.SECONDARY_PROCESSOR_CONTROLS],
            long_mode_guest=bool(entry & VMX_ENTRY_CONTROL_LONG_MODE_GUEST),
            msr_write_intercepts=tuple(msr for msr in REGISTERED_MSRS if msr_write_intercepted(image, msr)),
            vmcs_reads=vmcs_reads,
            vmcs_writes=vmcs_writes,
            commits=commits,
        )
