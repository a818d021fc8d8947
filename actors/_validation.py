"""Value rules of register writes: SetVpRegisters' validation and TDX's own writers (pure).

DOMAIN 3.2 (``validate_set_vp_register_value`` and the TDX apply step), and what TDX
``set_registers`` itself refuses in an initial context (Appendix B 9): the writers check less
than the hypercall does, and the rest is left to the VM-entry checks (DOMAIN 7.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import HvRegisterName as Reg
from protocol._x86 import (
    CR0_CD,
    CR0_ET,
    CR0_NW,
    CR0_PE,
    CR0_PG,
    CR4_LA57,
    EFER_FFXSR,
    EFER_LMA,
    EFER_NXE,
    EFER_SVME,
    X64_CR0_RSVDZ_MASK,
    X64_CR4_INVALID_MASK,
    X64_EFER_VALID_MASK,
    cr4_allowed_bits,
    is_canonical,
    segment_base,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from protocol import Vtl

    from ._state import VpState

__all__ = (
    "VALIDATORS",
    "context_load_error",
    "tdx_write_efer_ok",
    "validate_context_value",
    "validate_cr0",
    "validate_cr4",
    "validate_efer",
)

_CANONICAL_57: Final = frozenset(
    {Reg.SYSENTER_ESP, Reg.SYSENTER_EIP, Reg.LSTAR, Reg.CSTAR, Reg.KERNEL_GS_BASE}
)
_PENDING_EVENT_VECTORS: Final = frozenset({0, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 21})
_ERROR_CODE_VECTORS: Final = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
_PAT_TYPES: Final = frozenset({0, 1, 4, 5, 6, 7})
_CR4: Final = int(Reg.CR4)
_EFER: Final = int(Reg.EFER)


def validate_cr0(value: int) -> int | None:
    """SetVpRegisters CR0 rule: drop reserved low bits, refuse bad combinations, force ET."""
    value &= ~X64_CR0_RSVDZ_MASK
    if value >> 32 or (value & CR0_PG and not value & CR0_PE) or (value & CR0_NW and not value & CR0_CD):
        return None
    return value | CR0_ET


def validate_cr4(value: int, vmx_cr4_fixed1: int) -> bool:
    """SetVpRegisters CR4 rule, including the TDX apply step's allowed bits."""
    return not value & X64_CR4_INVALID_MASK and not value & ~cr4_allowed_bits(vmx_cr4_fixed1)


def validate_efer(value: int) -> bool:
    """EFER rule on TDX: only 0xDD01 bits, no SVME/FFXSR, NXE mandatory."""
    return (
        not value & ~X64_EFER_VALID_MASK and not value & (EFER_SVME | EFER_FFXSR) and bool(value & EFER_NXE)
    )


def tdx_write_efer_ok(value: int) -> bool:
    """TDX ``write_efer``: SVME and FFXSR refused, NXE required (reserved bits are not checked)."""
    return not value & (EFER_SVME | EFER_FFXSR) and bool(value & EFER_NXE)


def validate_context_value(name: int, value: int, vmx_cr4_fixed1: int) -> bool:
    """Whether the value rules of SetVpRegisters/WRMSR accept ``value`` (EFER, CR4, PAT)."""
    if name == Reg.EFER:
        return validate_efer(value)
    if name == Reg.CR4:
        return not value & ~cr4_allowed_bits(vmx_cr4_fixed1)
    if name == Reg.PAT:
        return all(((value >> (8 * i)) & 0xFF) in _PAT_TYPES for i in range(8))
    return True


def context_load_error(cr4: int, efer: int, vmx_cr4_fixed1: int) -> str | None:
    """Why TDX ``set_registers`` refuses an initial context, or None (DOMAIN Appendix B 9).

    It checks only what its writers check, in their order: ``write_cr4`` (bits outside the
    allowed set), then ``write_efer``. Anything else (PAT, reserved EFER bits, RFLAGS ...) is
    loaded as given and left to the VM-entry checks (DOMAIN 7.2).
    """
    if cr4 & ~cr4_allowed_bits(vmx_cr4_fixed1):
        return f"write_cr4 refused CR4 {cr4:#x} (bits outside the allowed set)"
    if not tdx_write_efer_ok(efer):
        return f"write_efer refused EFER {efer:#x} (SVME or FFXSR set, or NXE clear)"
    return None


def _validate_pending_event(value: int) -> bool:
    if not value & 1:
        return True
    event_type = (value >> 1) & 0x7
    deliver_error_code = bool(value & 0x100)
    vector = (value >> 16) & 0xFFFF
    if event_type != 0 or vector not in _PENDING_EVENT_VECTORS:
        return False
    return not (deliver_error_code and vector not in _ERROR_CODE_VECTORS)


def _canonical_segment_base(vp: VpState, target: Vtl, value: int) -> bool:
    """FS/GS base: canonical for the target VTL's current paging mode (57 bits with LA57)."""
    la57 = vp.read(target, _EFER) & EFER_LMA and vp.read(target, _CR4) & CR4_LA57
    return is_canonical(segment_base(value), 57 if la57 else 48)


def _valid_ssp(vp: VpState, target: Vtl, value: int) -> bool:
    return not value & 3 and is_canonical(value, 57)


def _valid_canonical(vp: VpState, target: Vtl, value: int) -> bool:
    return is_canonical(value, 57)


#: DOMAIN 3.2: per-register value validation before apply (False -> InvalidRegisterValue).
#: Registers without an entry are not validated.
VALIDATORS: Final[dict[int, Callable[[VpState, Vtl, int], bool]]] = {
    Reg.CR0: lambda vp, target, value: validate_cr0(value) is not None,
    Reg.INTERMEDIATE_CR0: lambda vp, target, value: validate_cr0(value) is not None,
    Reg.CR4: lambda vp, target, value: validate_cr4(value, vp.config.vmx_cr4_fixed1),
    Reg.INTERMEDIATE_CR4: lambda vp, target, value: validate_cr4(value, vp.config.vmx_cr4_fixed1),
    Reg.EFER: lambda vp, target, value: validate_efer(value),
    Reg.PAT: lambda vp, target, value: validate_context_value(Reg.PAT, value, 0),
    Reg.SFMASK: lambda vp, target, value: not value >> 32,
    Reg.XSS: lambda vp, target, value: not value & ~(vp.config.xss_supported & 0x1C00),
    Reg.FS: _canonical_segment_base,
    Reg.GS: _canonical_segment_base,
    Reg.PENDING_EVENT0: lambda vp, target, value: _validate_pending_event(value),
    Reg.VP_ASSIST_PAGE: lambda vp, target, value: not value & 0xFFE,
    **dict.fromkeys(_CANONICAL_57 | {Reg.INTERRUPT_SSP_TABLE_ADDR}, _valid_canonical),
    **dict.fromkeys((Reg.PL0_SSP, Reg.PL1_SSP, Reg.PL2_SSP, Reg.PL3_SSP), _valid_ssp),
}
