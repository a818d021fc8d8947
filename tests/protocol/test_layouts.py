"""Bit-layout views: positions from DOMAIN 2.4, round trips, and the spot values of DOMAIN 3.11."""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from protocol import (
    CrInterceptControl,
    HvMapGpaFlags,
    PendingExceptionEvent,
    SegmentRegister,
    SynicSint,
    TableRegister,
    VsmCapabilities,
    VsmPartitionConfig,
    VsmPartitionStatus,
    VsmVpSecureVtlConfig,
    VsmVpStatus,
    _layouts,
    _x86,
)

#: (low bit, width) of every named field, transcribed from DOMAIN.md 2.3 and 2.4.
SPEC_FIELDS: dict[type[Any], dict[str, tuple[int, int]]] = {
    VsmPartitionConfig: {
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
    },
    HvMapGpaFlags: {
        "readable": (0, 1),
        "writable": (1, 1),
        "kernel_executable": (2, 1),
        "user_executable": (3, 1),
        "supervisor_shadow_stack": (4, 1),
        "paging_writability": (5, 1),
        "verify_paging_writability": (6, 1),
        "adjustable": (15, 1),
    },
    VsmVpSecureVtlConfig: {
        "mbec_enabled": (0, 1),
        "tlb_locked": (1, 1),
        "supervisor_shadow_stack_enabled": (2, 1),
        "hardware_hvpt_enabled": (3, 1),
    },
    CrInterceptControl: {
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
    },
    VsmVpStatus: {
        "active_vtl": (0, 4),
        "active_mbec_enabled": (4, 1),
        "enabled_vtl_set": (16, 16),
    },
    VsmPartitionStatus: {
        "enabled_vtl_set": (0, 16),
        "maximum_vtl": (16, 4),
        "mbec_enabled_vtl_set": (20, 16),
        "supervisor_shadow_stack_enabled_vtl_set": (36, 4),
    },
    VsmCapabilities: {
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
    },
    PendingExceptionEvent: {
        "event_pending": (0, 1),
        "event_type": (1, 3),
        "deliver_error_code": (8, 1),
        "vector": (16, 16),
        "error_code": (32, 32),
        "exception_parameter": (64, 64),
    },
    SynicSint: {
        "vector": (0, 8),
        "masked": (16, 1),
        "auto_eoi": (17, 1),
        "polling": (18, 1),
        "proxy": (20, 1),
    },
    SegmentRegister: {
        "base": (0, 64),
        "limit": (64, 32),
        "selector": (96, 16),
        "attributes": (112, 16),
    },
    TableRegister: {
        "limit": (48, 16),
        "base": (64, 64),
    },
}

#: Register width of each view (DOMAIN 2.4: u32, u64 or u128).
REGISTER_BITS: dict[type[Any], int] = {
    VsmPartitionConfig: 64,
    HvMapGpaFlags: 32,
    VsmVpSecureVtlConfig: 64,
    CrInterceptControl: 64,
    VsmVpStatus: 64,
    VsmPartitionStatus: 64,
    VsmCapabilities: 64,
    PendingExceptionEvent: 128,
    SynicSint: 64,
    SegmentRegister: 128,
    TableRegister: 128,
}

VIEWS = tuple(SPEC_FIELDS)
ids = [view.__name__ for view in VIEWS]


def _covered(view: type[Any]) -> int:
    return reduce(or_, (((1 << width) - 1) << low for low, width in SPEC_FIELDS[view].values()), 0)


def _field_values(view: type[Any]) -> st.SearchStrategy[Any]:
    """A view built from field values that fit their widths (bools for 1-bit fields)."""
    kwargs = {
        name: st.booleans() if width == 1 else st.integers(0, (1 << width) - 1)
        for name, (_, width) in SPEC_FIELDS[view].items()
    }
    return st.builds(view, **kwargs)


def test_every_view_is_covered() -> None:
    """This module checks every view that protocol._layouts exports."""
    assert {view.__name__ for view in VIEWS} == set(_layouts.__all__)


@pytest.mark.parametrize("view", VIEWS, ids=ids)
def test_field_positions_match_the_spec(view: type[Any]) -> None:
    """Each view's (low bit, width) table is DOMAIN 2.4's layout, field for field."""
    assert SPEC_FIELDS[view] == view._FIELDS


@pytest.mark.parametrize("view", VIEWS, ids=ids)
def test_struct_fields_match_the_bit_fields(view: type[Any]) -> None:
    """Each named bit field is a Struct field defaulting to zero; 1-bit fields are bools."""
    fields = {field.name: field for field in msgspec.structs.fields(view)}
    assert set(fields) == set(SPEC_FIELDS[view])
    for name, (_, width) in SPEC_FIELDS[view].items():
        expected_type = bool if width == 1 else int
        assert fields[name].type is expected_type, name
        assert fields[name].default == 0, name
    assert view().bits == 0


@pytest.mark.parametrize("view", VIEWS, ids=ids)
def test_fields_do_not_overlap_and_fit_the_register(view: type[Any]) -> None:
    """No two fields share a bit, and every field lies inside the register's width."""
    seen = 0
    for name, (low, width) in SPEC_FIELDS[view].items():
        mask = ((1 << width) - 1) << low
        assert seen & mask == 0, name
        seen |= mask
    assert seen >> REGISTER_BITS[view] == 0


@pytest.mark.parametrize("view", VIEWS, ids=ids)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_from_bits_then_bits_keeps_exactly_the_named_bits(view: type[Any], data: st.DataObject) -> None:
    """from_bits(v).bits == v with reserved bits cleared, for any register value."""
    value = data.draw(st.integers(0, (1 << REGISTER_BITS[view]) - 1))
    assert view.from_bits(value).bits == value & _covered(view)


@pytest.mark.parametrize("view", VIEWS, ids=ids)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_bits_then_from_bits_gives_the_same_view(view: type[Any], data: st.DataObject) -> None:
    """from_bits(x.bits) == x for any view whose fields fit their widths."""
    decoded = data.draw(_field_values(view))
    assert view.from_bits(decoded.bits) == decoded


MULTI_BIT_FIELDS = [
    (view, name, width) for view in VIEWS for name, (_, width) in SPEC_FIELDS[view].items() if width > 1
]


@pytest.mark.parametrize(
    ("view", "name", "width"), MULTI_BIT_FIELDS, ids=[f"{v.__name__}.{n}" for v, n, _ in MULTI_BIT_FIELDS]
)
def test_bits_refuses_a_field_wider_than_its_slot(view: type[Any], name: str, width: int) -> None:
    """bits raises ValueError naming the field when a multi-bit value does not fit its width."""
    assert view(**{name: (1 << width) - 1}).bits == ((1 << width) - 1) << SPEC_FIELDS[view][name][0]
    with pytest.raises(ValueError, match=name):
        _ = view(**{name: 1 << width}).bits


# ---- Spot values (DOMAIN 2.4, 3.4, 3.11 and section 6) ----------------------------------------


def test_vsm_partition_config_0x1f_is_enable_plus_rwx_mask() -> None:
    """0x1F = EnableVtlProtection with DefaultVtlProtectionMask 0xF (RWX); only bits 0-6 supported."""
    config = VsmPartitionConfig.from_bits(0x1F)
    assert config == VsmPartitionConfig(enable_vtl_protection=True, default_vtl_protection_mask=0xF)
    assert config.bits == 0x1F
    assert VsmPartitionConfig.from_bits(0x5F).deny_lower_vtl_startup
    assert VsmPartitionConfig.from_bits(0x17).default_vtl_protection_mask == 0xB
    assert VsmPartitionConfig.SUPPORTED == 0x7F
    supported = VsmPartitionConfig(
        enable_vtl_protection=True,
        default_vtl_protection_mask=0xF,
        zero_memory_on_reset=True,
        deny_lower_vtl_startup=True,
    )
    assert supported.bits == VsmPartitionConfig.SUPPORTED


def test_map_gpa_flags_constants_and_executable_bits() -> None:
    """HV_MAP_GPA_PERMISSIONS_ALL is 0xF, NONE is 0; bit 2 is kernel-execute, bit 3 user-execute."""
    assert HvMapGpaFlags.ALL == 0xF
    assert HvMapGpaFlags.NONE == 0
    everything = HvMapGpaFlags(readable=True, writable=True, kernel_executable=True, user_executable=True)
    assert everything.bits == HvMapGpaFlags.ALL
    assert HvMapGpaFlags.from_bits(0x5) == HvMapGpaFlags(readable=True, kernel_executable=True)
    assert HvMapGpaFlags.from_bits(0xB) == HvMapGpaFlags(readable=True, writable=True, user_executable=True)
    assert HvMapGpaFlags(adjustable=True).bits == 0x8000


def test_vsm_vp_secure_vtl_config_bits() -> None:
    """VsmVpSecureConfigVtl0: bit 0 MbecEnabled, bit 1 TlbLocked, bits 2-3 SSS and HVPT."""
    assert VsmVpSecureVtlConfig.from_bits(0x1) == VsmVpSecureVtlConfig(mbec_enabled=True)
    assert VsmVpSecureVtlConfig(tlb_locked=True).bits == 0x2
    assert VsmVpSecureVtlConfig(supervisor_shadow_stack_enabled=True, hardware_hvpt_enabled=True).bits == 0xC


def test_cr_intercept_supported_is_every_write_bit_except_sgx() -> None:
    """CrInterceptControl.SUPPORTED == 0x1EFF_D557 == the OR of all write bits but SGX launch control."""
    write_bits = [
        1 << low
        for name, (low, _) in SPEC_FIELDS[CrInterceptControl].items()
        if name.endswith("_write") and name != "msr_sgx_launch_control_write"
    ]
    assert CrInterceptControl.SUPPORTED == 0x1EFF_D557
    assert reduce(or_, write_bits) == CrInterceptControl.SUPPORTED
    all_writes = CrInterceptControl(
        **{
            name: True
            for name in SPEC_FIELDS[CrInterceptControl]
            if name.endswith("_write") and "sgx" not in name
        }
    )
    assert all_writes.bits == CrInterceptControl.SUPPORTED


def test_cr_intercept_control_scenario_values() -> None:
    """S1's 0x4043 = Cr0|Cr4|Efer|Lstar writes; S7's 0x1000 = ApicBase write; 0x8 and SGX unsupported."""
    s1 = CrInterceptControl(cr0_write=True, cr4_write=True, msr_efer_write=True, msr_lstar_write=True)
    assert s1.bits == 0x4043
    assert CrInterceptControl.from_bits(0x1000) == CrInterceptControl(apic_base_msr_write=True)
    assert CrInterceptControl.from_bits(0x8) == CrInterceptControl(ia32_misc_enable_read=True)
    assert 0x8 & ~CrInterceptControl.SUPPORTED
    assert CrInterceptControl(msr_sgx_launch_control_write=True).bits == 0x100_0000
    assert 0x100_0000 & ~CrInterceptControl.SUPPORTED


def test_vsm_partition_status_values() -> None:
    """0x31_0003 = enabled {0,1}, max VTL 1, MBEC {0,1}; 0x1_0003 without MBEC; 0x1_0001 and 0x1."""
    status = VsmPartitionStatus.from_bits(0x31_0003)
    assert status == VsmPartitionStatus(enabled_vtl_set=0b11, maximum_vtl=1, mbec_enabled_vtl_set=0b11)
    assert status.bits == 0x31_0003
    assert VsmPartitionStatus(enabled_vtl_set=0b11, maximum_vtl=1).bits == 0x1_0003
    assert VsmPartitionStatus(enabled_vtl_set=0b1, maximum_vtl=1).bits == 0x1_0001
    assert VsmPartitionStatus(enabled_vtl_set=0b1).bits == 0x1


def test_vsm_vp_status_values() -> None:
    """0x3_0011 = VTL1 active with MBEC, VTL0 and VTL1 enabled; 0x1_0000 = VTL0 before enablement."""
    assert VsmVpStatus.from_bits(0x3_0011) == VsmVpStatus(
        active_vtl=1, active_mbec_enabled=True, enabled_vtl_set=0b11
    )
    assert VsmVpStatus(active_vtl=1, enabled_vtl_set=0b11).bits == 0x3_0001
    assert VsmVpStatus.from_bits(0x1_0000) == VsmVpStatus(enabled_vtl_set=0b1)


def test_vsm_capabilities_values() -> None:
    """0x2_0002 = DenyLowerVtlStartup | MbecVtlMask {VTL0}; 0x2_0003 adds Dr6Shared."""
    capabilities = VsmCapabilities(deny_lower_vtl_startup=True, mbec_vtl_mask=0b1)
    assert capabilities.bits == 0x2_0002
    assert VsmCapabilities.from_bits(0x2_0002) == capabilities
    assert VsmCapabilities.from_bits(0x2_0003).dr6_shared
    assert VsmCapabilities(intercept_system_reset_available=True).bits == 1 << 32
    assert VsmCapabilities(proxy_interrupt_redirect_available=True).bits == 1 << 34


def test_pending_exception_event_gp_zero() -> None:
    """S8's #GP(0): pending | vector 13 << 16 | deliver_error_code, parameter in the high 64 bits."""
    event = PendingExceptionEvent(event_pending=True, vector=13, deliver_error_code=True, error_code=0)
    assert event.bits == 0x000D_0101
    assert PendingExceptionEvent(exception_parameter=0xDEAD).bits == 0xDEAD << 64
    assert PendingExceptionEvent.from_bits((0x1234 << 32) | (14 << 16) | 0x101).error_code == 0x1234


def test_synic_sint_vector_and_flags() -> None:
    """SINT: vector in bits 0-7, masked 16, auto-EOI 17, polling 18, proxy 20 (S7's vector 0x30 auto-EOI)."""
    assert SynicSint(vector=0x30, auto_eoi=True).bits == 0x2_0030
    assert SynicSint.from_bits(0x1_0000) == SynicSint(masked=True)
    assert SynicSint(polling=True, proxy=True).bits == 0x14_0000


@settings(max_examples=50, deadline=None)
@given(
    base=st.integers(0, (1 << 64) - 1),
    limit=st.integers(0, (1 << 32) - 1),
    selector=st.integers(0, 0xFFFF),
    attributes=st.integers(0, 0xFFFF),
)
def test_segment_register_packing(base: int, limit: int, selector: int, attributes: int) -> None:
    """Segment layout is base@0 limit@64 selector@96 attributes@112, as protocol._x86.segment packs it."""
    packed = base | (limit << 64) | (selector << 96) | (attributes << 112)
    segment = SegmentRegister(base=base, limit=limit, selector=selector, attributes=attributes)
    assert segment.bits == packed
    assert _x86.segment(base=base, limit=limit, selector=selector, attributes=attributes) == packed
    assert SegmentRegister.from_bits(packed) == segment
    assert segment.dpl == (attributes >> 5) & 3


def test_reset_segments_decode() -> None:
    """The reset CS (base 0xFFFF0000, limit 0xFFFF, selector 0xF000, attributes 0x9B) decodes."""
    assert SegmentRegister.from_bits(_x86.RESET_CS) == SegmentRegister(
        base=0xFFFF_0000, limit=0xFFFF, selector=0xF000, attributes=0x9B
    )
    assert SegmentRegister(attributes=0xFB).dpl == 3
    assert SegmentRegister(attributes=0x9B).dpl == 0


@settings(max_examples=50, deadline=None)
@given(base=st.integers(0, (1 << 64) - 1), limit=st.integers(0, 0xFFFF))
def test_table_register_packing(base: int, limit: int) -> None:
    """Table layout is 3 x u16 pad, limit u16 @48, base u64 @64, as protocol._x86.table packs it."""
    packed = (limit << 48) | (base << 64)
    assert TableRegister(base=base, limit=limit).bits == packed
    assert _x86.table(base=base, limit=limit) == packed
    assert TableRegister.from_bits(packed | 0xFFFF_FFFF_FFFF) == TableRegister(base=base, limit=limit)
