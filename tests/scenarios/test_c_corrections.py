"""DOMAIN 7.4's smaller corrections: CR8 as the APIC TPR, and hypercall page limits.

(PL3_SSP's invalid value refused with #GP before the fatal sanity check is in
tests/actors/test_intercept_matrix.py; the MOV CR0 fault-priority answer in
tests/scenarios/test_c_vm_entry.py.) Every test runs under both commit policies and backends.
"""

from __future__ import annotations

import pytest

from protocol import (
    ClearMessageSlot,
    GetVpRegisters,
    HvMapGpaFlags,
    HvRegisterName as Reg,
    HvStatus,
    Hypercall,
    ModifyVtlProtectionMask,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
)
from tests.guest import checked_runtime, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, status, vtl0_register
from tests.scenarios._secure import s1_setup


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (0x5, 0x5),
        (0x1F, 0x1F),  # the first round kept only the low 4 bits: 0xF
        (0x0FFF_FFFF, 0x0FFF_FFFF),
        (1 << 28, 0),  # CR8 << 4 overflows the 32-bit TPR
        (0xDEAD_BEEF_1234_5678, 0x0234_5678),
    ],
)
async def test_cr8_is_stored_as_tpr_shifted(written: int, read: int) -> None:
    """DOMAIN 7.4: set_registers stores TPR = CR8 << 4 (32 bits), registers() returns TPR >> 4."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        out = await vp.execute(
            SetVpRegisters(registers=[RegisterAssoc(name=Reg.CR8, value=written)], target_vtl=Vtl.VTL0)
        )
        assert out == ok(1)
        assert await vtl0_register(vp, Reg.CR8) == read


def _set_rips(count: int) -> SetVpRegisters:
    registers = [RegisterAssoc(name=Reg.RIP, value=0x1000 + 16 * i) for i in range(count)]
    return SetVpRegisters(registers=registers, target_vtl=Vtl.VTL0)


async def test_set_vp_registers_fits_one_page() -> None:
    """16-byte header + 32 bytes per element: 127 elements fit, 128 straddle a page and give
    InvalidHypercallInput with 0 reps before any element runs (HC support.rs Straddle)."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        before = await vtl0_register(vp, Reg.RIP)
        assert await vp.execute(_set_rips(128)) == status(HvStatus.INVALID_HYPERCALL_INPUT)
        assert await vtl0_register(vp, Reg.RIP) == before  # nothing applied
        assert await vp.execute(_set_rips(127)) == ok(127)
        assert await vtl0_register(vp, Reg.RIP) == 0x1000 + 16 * 126


async def test_get_vp_registers_output_fits_one_page() -> None:
    """16 bytes of output per name: 256 names fit, 257 give InvalidHypercallInput, 0 reps."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        out = await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS] * 257))
        assert out == status(HvStatus.INVALID_HYPERCALL_INPUT)
        out = await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS] * 256))
        assert out == ok(256, [0x3_0001] * 256)  # VTL1 active, VTL0 and VTL1 enabled here


async def test_modify_vtl_protection_mask_fits_one_page() -> None:
    """16 + 8 bytes per GPN: 510 GPNs fit, 511 give InvalidHypercallInput and no page changes."""
    async with checked_runtime() as rt:
        vp = await s1_setup(await new_partition(rt))
        read_only = HvMapGpaFlags(readable=True, kernel_executable=True, user_executable=True).bits
        too_many = ModifyVtlProtectionMask(gpns=list(range(0x100, 0x100 + 511)), map_flags=read_only)
        assert await vp.execute(too_many) == status(HvStatus.INVALID_HYPERCALL_INPUT)
        fitting = ModifyVtlProtectionMask(gpns=list(range(0x100, 0x100 + 510)), map_flags=read_only)
        assert await vp.execute(fitting) == ok(510)


def test_rep_count_and_start_are_12_bits() -> None:
    """The hypercall input value's rep count and start index are 12-bit fields (DOMAIN 7.4)."""
    assert Hypercall(code=0x50, rep_count=4095, rep_start=4094).rep_count == 4095
    with pytest.raises(ValueError, match="rep_count"):
        Hypercall(code=0x50, rep_count=4096)
    with pytest.raises(ValueError, match="rep_start"):
        Hypercall(code=0x50, rep_start=1 << 12)


def test_clear_message_slot_names_a_sint() -> None:
    """ClearMessageSlot(sint) frees SIMP slot 0-15 (DOMAIN 7.3); anything else is refused."""
    assert ClearMessageSlot().sint == 0
    assert ClearMessageSlot(sint=15).sint == 15
    with pytest.raises(ValueError, match="SINTs 0-15"):
        ClearMessageSlot(sint=16)
