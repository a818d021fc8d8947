"""Typed views of the bit layouts of DOMAIN.md 2.4: each converts to and from its register value.

A view is a frozen Struct with one field per named bit field; ``from_bits`` ignores reserved bits
(callers that must refuse them check ``value & ~SUPPORTED`` first) and ``bits`` packs the fields.
"""

from __future__ import annotations

from typing import ClassVar, Self

import msgspec

__all__ = (
    "CrInterceptControl",
    "HvMapGpaFlags",
    "PendingExceptionEvent",
    "SegmentRegister",
    "SynicSint",
    "TableRegister",
    "VsmCapabilities",
    "VsmPartitionConfig",
    "VsmPartitionStatus",
    "VsmVpSecureVtlConfig",
    "VsmVpStatus",
)


class _BitView(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the views: ``_FIELDS`` maps a field name to (low bit, width)."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {}

    @classmethod
    def from_bits(cls, value: int) -> Self:
        """Decode a register value; bits outside the named fields are ignored."""
        kwargs: dict[str, int | bool] = {}
        for name, (low, width) in cls._FIELDS.items():
            field = (value >> low) & ((1 << width) - 1)
            kwargs[name] = bool(field) if width == 1 else field
        return cls(**kwargs)

    @property
    def bits(self) -> int:
        """The register value these fields encode."""
        value = 0
        for name, (low, width) in self._FIELDS.items():
            field = int(getattr(self, name))
            if field >> width:
                msg = f"{type(self).__name__}.{name}={field:#x} does not fit in {width} bits"
                raise ValueError(msg)
            value |= field << low
        return value


class VsmPartitionConfig(_BitView, frozen=True, kw_only=True):
    """HvRegisterVsmPartitionConfig (0x000D0007); OpenHCL CVMs accept only bits 0-6."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "enable_vtl_protection": (0, 1),
        "default_vtl_protection_mask": (1, 4),
        "zero_memory_on_reset": (5, 1),
        "deny_lower_vtl_startup": (6, 1),
        "intercept_acceptance": (7, 1),
        "intercept_enable_vtl_protection": (8, 1),
        "intercept_vp_startup": (9, 1),
        "intercept_cpuid_unimplemented": (10, 1),
        "intercept_unrecoverable_exception": (11, 1),
        "intercept_page": (12, 1),
        "intercept_restore_partition_time": (13, 1),
        "intercept_not_present": (14, 1),
        "intercept_system_reset": (15, 1),
    }
    SUPPORTED: ClassVar[int] = 0x7F

    enable_vtl_protection: bool = False
    default_vtl_protection_mask: int = 0
    zero_memory_on_reset: bool = False
    deny_lower_vtl_startup: bool = False
    intercept_acceptance: bool = False
    intercept_enable_vtl_protection: bool = False
    intercept_vp_startup: bool = False
    intercept_cpuid_unimplemented: bool = False
    intercept_unrecoverable_exception: bool = False
    intercept_page: bool = False
    intercept_restore_partition_time: bool = False
    intercept_not_present: bool = False
    intercept_system_reset: bool = False


class HvMapGpaFlags(_BitView, frozen=True, kw_only=True):
    """HvMapGpaFlags (u32): VTL protection flags; bit 2 is KX, bit 3 is UX (follow the code)."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "readable": (0, 1),
        "writable": (1, 1),
        "kernel_executable": (2, 1),
        "user_executable": (3, 1),
        "supervisor_shadow_stack": (4, 1),
        "paging_writability": (5, 1),
        "verify_paging_writability": (6, 1),
        "adjustable": (15, 1),
    }
    ALL: ClassVar[int] = 0xF
    NONE: ClassVar[int] = 0

    readable: bool = False
    writable: bool = False
    kernel_executable: bool = False
    user_executable: bool = False
    supervisor_shadow_stack: bool = False
    paging_writability: bool = False
    verify_paging_writability: bool = False
    adjustable: bool = False


class VsmVpSecureVtlConfig(_BitView, frozen=True, kw_only=True):
    """HvRegisterVsmVpSecureVtlConfig (VsmVpSecureConfigVtl0, 0x000D0010)."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "mbec_enabled": (0, 1),
        "tlb_locked": (1, 1),
        "supervisor_shadow_stack_enabled": (2, 1),
        "hardware_hvpt_enabled": (3, 1),
    }

    mbec_enabled: bool = False
    tlb_locked: bool = False
    supervisor_shadow_stack_enabled: bool = False
    hardware_hvpt_enabled: bool = False


class CrInterceptControl(_BitView, frozen=True, kw_only=True):
    """HvRegisterCrInterceptControl (0x000E0000): which VTL0 writes VTL1 intercepts."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "cr0_write": (0, 1),
        "cr4_write": (1, 1),
        "xcr0_write": (2, 1),
        "ia32_misc_enable_read": (3, 1),
        "ia32_misc_enable_write": (4, 1),
        "msr_lstar_read": (5, 1),
        "msr_lstar_write": (6, 1),
        "msr_star_read": (7, 1),
        "msr_star_write": (8, 1),
        "msr_cstar_read": (9, 1),
        "msr_cstar_write": (10, 1),
        "apic_base_msr_read": (11, 1),
        "apic_base_msr_write": (12, 1),
        "msr_efer_read": (13, 1),
        "msr_efer_write": (14, 1),
        "gdtr_write": (15, 1),
        "idtr_write": (16, 1),
        "ldtr_write": (17, 1),
        "tr_write": (18, 1),
        "msr_sysenter_cs_write": (19, 1),
        "msr_sysenter_eip_write": (20, 1),
        "msr_sysenter_esp_write": (21, 1),
        "msr_sfmask_write": (22, 1),
        "msr_tsc_aux_write": (23, 1),
        "msr_sgx_launch_control_write": (24, 1),
        "msr_xss_write": (25, 1),
        "msr_scet_write": (26, 1),
        "msr_pls_ssp_write": (27, 1),
        "msr_interrupt_ssp_table_addr_write": (28, 1),
    }
    #: Bits OpenHCL CVMs support: every write bit except SGX launch control.
    SUPPORTED: ClassVar[int] = 0x1EFF_D557

    cr0_write: bool = False
    cr4_write: bool = False
    xcr0_write: bool = False
    ia32_misc_enable_read: bool = False
    ia32_misc_enable_write: bool = False
    msr_lstar_read: bool = False
    msr_lstar_write: bool = False
    msr_star_read: bool = False
    msr_star_write: bool = False
    msr_cstar_read: bool = False
    msr_cstar_write: bool = False
    apic_base_msr_read: bool = False
    apic_base_msr_write: bool = False
    msr_efer_read: bool = False
    msr_efer_write: bool = False
    gdtr_write: bool = False
    idtr_write: bool = False
    ldtr_write: bool = False
    tr_write: bool = False
    msr_sysenter_cs_write: bool = False
    msr_sysenter_eip_write: bool = False
    msr_sysenter_esp_write: bool = False
    msr_sfmask_write: bool = False
    msr_tsc_aux_write: bool = False
    msr_sgx_launch_control_write: bool = False
    msr_xss_write: bool = False
    msr_scet_write: bool = False
    msr_pls_ssp_write: bool = False
    msr_interrupt_ssp_table_addr_write: bool = False


class VsmVpStatus(_BitView, frozen=True, kw_only=True):
    """HvRegisterVsmVpStatus (0x000D0003)."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "active_vtl": (0, 4),
        "active_mbec_enabled": (4, 1),
        "enabled_vtl_set": (16, 16),
    }

    active_vtl: int = 0
    active_mbec_enabled: bool = False
    enabled_vtl_set: int = 0


class VsmPartitionStatus(_BitView, frozen=True, kw_only=True):
    """HvRegisterVsmPartitionStatus (0x000D0004)."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "enabled_vtl_set": (0, 16),
        "maximum_vtl": (16, 4),
        "mbec_enabled_vtl_set": (20, 16),
        "supervisor_shadow_stack_enabled_vtl_set": (36, 4),
    }

    enabled_vtl_set: int = 0
    maximum_vtl: int = 0
    mbec_enabled_vtl_set: int = 0
    supervisor_shadow_stack_enabled_vtl_set: int = 0


class VsmCapabilities(_BitView, frozen=True, kw_only=True):
    """HvRegisterVsmCapabilities (0x000D0006), OpenVMM's layout (not the TLFS one)."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "dr6_shared": (0, 1),
        "mbec_vtl_mask": (1, 16),
        "deny_lower_vtl_startup": (17, 1),
        "supervisor_shadow_stack": (18, 1),
        "hardware_hvpt_available": (19, 1),
        "software_hvpt_available": (20, 1),
        "hardware_hvpt_range_bits": (21, 6),
        "intercept_page_available": (27, 1),
        "return_action_available": (28, 1),
        "vtl0_alias_map_available": (29, 1),
        "intercept_not_present_available": (30, 1),
        "install_intercept_ex": (31, 1),
        "intercept_system_reset_available": (32, 1),
        "proxy_interrupt_redirect_available": (34, 1),
    }

    dr6_shared: bool = False
    mbec_vtl_mask: int = 0
    deny_lower_vtl_startup: bool = False
    supervisor_shadow_stack: bool = False
    hardware_hvpt_available: bool = False
    software_hvpt_available: bool = False
    hardware_hvpt_range_bits: int = 0
    intercept_page_available: bool = False
    return_action_available: bool = False
    vtl0_alias_map_available: bool = False
    intercept_not_present_available: bool = False
    install_intercept_ex: bool = False
    intercept_system_reset_available: bool = False
    proxy_interrupt_redirect_available: bool = False


class PendingExceptionEvent(_BitView, frozen=True, kw_only=True):
    """PendingEvent0 as HvX64PendingExceptionEvent (u128)."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "event_pending": (0, 1),
        "event_type": (1, 3),
        "deliver_error_code": (8, 1),
        "vector": (16, 16),
        "error_code": (32, 32),
        "exception_parameter": (64, 64),
    }

    event_pending: bool = False
    event_type: int = 0
    deliver_error_code: bool = False
    vector: int = 0
    error_code: int = 0
    exception_parameter: int = 0


class SynicSint(_BitView, frozen=True, kw_only=True):
    """HvSynicSint: a synthetic interrupt source."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "vector": (0, 8),
        "masked": (16, 1),
        "auto_eoi": (17, 1),
        "polling": (18, 1),
        "proxy": (20, 1),
    }

    vector: int = 0
    masked: bool = False
    auto_eoi: bool = False
    polling: bool = False
    proxy: bool = False


class SegmentRegister(_BitView, frozen=True, kw_only=True):
    """HvX64SegmentRegister as a 128-bit register value."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "base": (0, 64),
        "limit": (64, 32),
        "selector": (96, 16),
        "attributes": (112, 16),
    }

    base: int = 0
    limit: int = 0
    selector: int = 0
    attributes: int = 0

    @property
    def dpl(self) -> int:
        """Descriptor privilege level (attribute bits 5-6)."""
        return (self.attributes >> 5) & 3


class TableRegister(_BitView, frozen=True, kw_only=True):
    """HvX64TableRegister (GDTR/IDTR) as a 128-bit register value."""

    _FIELDS: ClassVar[dict[str, tuple[int, int]]] = {
        "limit": (48, 16),
        "base": (64, 64),
    }

    limit: int = 0
    base: int = 0
