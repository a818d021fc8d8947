"""x86 and VMX constants used by the TDX model: CR0/CR4/EFER bits, masks, MSRs, reset values.

Values are those of OpenVMM's ``x86defs`` and the TDX backing (DOMAIN.md 2.3 and 2.6).
"""

from __future__ import annotations

import enum

# ---- CR0 --------------------------------------------------------------------------------------
CR0_PE = 0x1
CR0_MP = 0x2
CR0_EM = 0x4
CR0_TS = 0x8
CR0_ET = 0x10
CR0_NE = 0x20
CR0_WP = 0x1_0000
CR0_AM = 0x4_0000
CR0_NW = 0x2000_0000
CR0_CD = 0x4000_0000
CR0_PG = 0x8000_0000
#: Reserved low bits (6-15, 17, 19-28) that the hypercall path silently clears.
X64_CR0_RSVDZ_MASK = 0x1FFA_FFC0

# ---- CR4 --------------------------------------------------------------------------------------
CR4_VME = 0x1
CR4_PVI = 0x2
CR4_TSD = 0x4
CR4_DE = 0x8
CR4_PSE = 0x10
CR4_PAE = 0x20
CR4_MCE = 0x40
CR4_PGE = 0x80
CR4_PCE = 0x100
CR4_OSFXSR = 0x200
CR4_OSXMMEXCPT = 0x400
CR4_UMIP = 0x800
CR4_LA57 = 0x1000
CR4_VMXE = 0x2000
CR4_FSGSBASE = 0x1_0000
CR4_PCIDE = 0x2_0000
CR4_OSXSAVE = 0x4_0000
CR4_SMEP = 0x10_0000
CR4_SMAP = 0x20_0000
CR4_PKE = 0x40_0000
CR4_CET = 0x80_0000
#: HCVM ``X64_CR4_INVALID_MASK``: bits 13, 14, 15, 19, 22, 24-63.
X64_CR4_INVALID_MASK = 0xFFFF_FFFF_FF48_E000

# ---- EFER -------------------------------------------------------------------------------------
EFER_SCE = 0x1
EFER_LME = 0x100
EFER_LMA = 0x400
EFER_NXE = 0x800
EFER_SVME = 0x1000
EFER_FFXSR = 0x4000
EFER_TCE = 0x8000
#: HCVM ``X64_EFER_VALID_MASK``.
X64_EFER_VALID_MASK = 0xDD01

# ---- RFLAGS -----------------------------------------------------------------------------------
RFLAGS_RESERVED_1 = 0x2
RFLAGS_IF = 0x200

# ---- VMX --------------------------------------------------------------------------------------
VMX_ENTRY_CONTROL_LONG_MODE_GUEST = 0x200
SECONDARY_CONTROL_DESCRIPTOR_TABLE_EXITING = 0x4
SECONDARY_CONTROL_MODE_BASED_EXECUTE = 0x40_0000

# ---- TDX virtual-register ownership and default guest/host masks (TDX backing) ----------------
CR0_GUEST_OWNED = CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_WP | CR0_AM | CR0_PG
CR4_GUEST_OWNED = (
    CR4_VME
    | CR4_PVI
    | CR4_TSD
    | CR4_DE
    | CR4_PSE
    | CR4_PAE
    | CR4_PGE
    | CR4_PCE
    | CR4_OSFXSR
    | CR4_OSXMMEXCPT
    | CR4_UMIP
    | CR4_LA57
    | CR4_FSGSBASE
    | CR4_PCIDE
    | CR4_OSXSAVE
    | CR4_SMEP
    | CR4_SMAP
    | CR4_CET
)
U64_MASK = 0xFFFF_FFFF_FFFF_FFFF
U128_MASK = (1 << 128) - 1
#: CR0 guest/host mask: everything not guest-owned, plus PE and PG (always intercepted).
DEFAULT_CR0_GUEST_HOST_MASK = (~CR0_GUEST_OWNED | CR0_PE | CR0_PG) & U64_MASK
#: ``IA32_VMX_CR4_FIXED1`` when the hardware allows every bit the TDX backing asks for.
DEFAULT_VMX_CR4_FIXED1 = CR4_GUEST_OWNED | CR4_MCE | CR4_VMXE


def cr4_allowed_bits(vmx_cr4_fixed1: int = DEFAULT_VMX_CR4_FIXED1) -> int:
    """CR4 bits a guest may set: (guest-owned | MCE) AND the hardware's FIXED1."""
    return (CR4_GUEST_OWNED | CR4_MCE) & vmx_cr4_fixed1


def default_cr4_guest_host_mask(vmx_cr4_fixed1: int = DEFAULT_VMX_CR4_FIXED1) -> int:
    """CR4 guest/host mask: NOT(guest-owned AND allowed); MCE always stays host-owned."""
    return ~(CR4_GUEST_OWNED & cr4_allowed_bits(vmx_cr4_fixed1)) & U64_MASK


#: Physical (VMCS) host-owned bits that stay set whatever the guest writes.
CR0_PHYSICAL_HOST_BITS = CR0_NE
CR4_PHYSICAL_HOST_BITS = CR4_MCE | CR4_VMXE

# ---- MSRs -------------------------------------------------------------------------------------


class Msr(enum.IntEnum):
    """MSR numbers the VSM model refers to (DOMAIN 2.3)."""

    APIC_BASE = 0x1B
    SYSENTER_CS = 0x174
    SYSENTER_ESP = 0x175
    SYSENTER_EIP = 0x176
    MISC_ENABLE = 0x1A0
    PAT = 0x277
    U_CET = 0x6A0
    S_CET = 0x6A2
    PL0_SSP = 0x6A4
    PL1_SSP = 0x6A5
    PL2_SSP = 0x6A6
    PL3_SSP = 0x6A7
    INTERRUPT_SSP_TABLE_ADDR = 0x6A8
    XSS = 0xDA0
    EFER = 0xC000_0080
    STAR = 0xC000_0081
    LSTAR = 0xC000_0082
    CSTAR = 0xC000_0083
    SFMASK = 0xC000_0084
    FS_BASE = 0xC000_0100
    GS_BASE = 0xC000_0101
    KERNEL_GS_BASE = 0xC000_0102
    TSC_AUX = 0xC000_0103
    # Hyper-V synthetic MSRs
    HV_VP_ASSIST_PAGE = 0x4000_0073
    HV_SCONTROL = 0x4000_0080
    HV_SVERSION = 0x4000_0081
    HV_SIEFP = 0x4000_0082
    HV_SIMP = 0x4000_0083
    HV_EOM = 0x4000_0084
    HV_SINT0 = 0x4000_0090
    HV_SINT15 = 0x4000_009F


class ExceptionVector(enum.IntEnum):
    """x86 exception vectors that the simulator injects or validates."""

    DE = 0
    DB = 1
    NMI = 2
    BP = 3
    OF = 4
    BR = 5
    UD = 6
    NM = 7
    DF = 8
    TS = 10
    NP = 11
    SS = 12
    GP = 13
    PF = 14
    MF = 16
    AC = 17
    MC = 18
    XM = 19
    VE = 20
    CP = 21


# ---- Reset state (vmm_core ``Registers::at_reset``; EFER.NXE forced on TDX) ------------------
RESET_RIP = 0xFFF0
RESET_RFLAGS = RFLAGS_RESERVED_1
RESET_CR0 = CR0_ET | CR0_CD | CR0_NW
RESET_CR4 = 0
RESET_EFER = EFER_NXE
DEFAULT_PAT = 0x0007_0406_0007_0406
#: Default APIC base: 0xFEE00000, enabled (bit 11), BSP flag (bit 8) on VP 0 only.
APIC_BASE_DEFAULT = 0xFEE0_0000 | 0x800
APIC_BASE_BSP = 0x100
VMCALL_LENGTH = 3


def segment(*, base: int = 0, limit: int = 0, selector: int = 0, attributes: int = 0) -> int:
    """Pack an ``HvX64SegmentRegister`` (base @0, limit @8, selector @12, attributes @14)."""
    return base | (limit << 64) | (selector << 96) | (attributes << 112)


def table(*, base: int = 0, limit: int = 0) -> int:
    """Pack an ``HvX64TableRegister`` (3 x u16 pad, limit u16 @6, base u64 @8)."""
    return (limit << 48) | (base << 64)


RESET_CS = segment(base=0xFFFF_0000, limit=0xFFFF, selector=0xF000, attributes=0x9B)
RESET_DATA_SEGMENT = segment(limit=0xFFFF, attributes=0x93)
RESET_LDTR = segment(limit=0xFFFF, attributes=0x82)
RESET_TR = segment(limit=0xFFFF, attributes=0x8B)
RESET_TABLE = table(limit=0xFFFF)


def segment_base(value: int) -> int:
    """Base address of a packed segment register."""
    return value & U64_MASK


def segment_attributes(value: int) -> int:
    """Attribute word of a packed segment register."""
    return (value >> 112) & 0xFFFF


def is_canonical(address: int, bits: int) -> bool:
    """True when bits 63..bits-1 of a 64-bit address all equal bit bits-1."""
    top = address >> (bits - 1)
    return top in (0, (1 << (65 - bits)) - 1)
