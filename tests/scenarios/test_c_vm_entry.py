"""DOMAIN 7.2: the VM-entry guest-state checks, and a failure ending the whole partition.

Each check is provoked the way a guest (or a secure kernel acting on VTL0) reaches it: state
OpenHCL accepts and writes, which the processor then refuses at the VTL's next VM entry (its
next action here). Every test runs under both commit policies and both backends; the reason
names each failed check by number and name. Checks 2 and 3's fixed-bit half cannot be reached
through OpenHCL's writers (LMA is derived; host-owned CR bits stay), so the pure function is
tested for them directly (tests/actors/test_entry_checks.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import msgspec
import pytest

from actors import PartitionFailed
from protocol import (
    Completed,
    GetVpRegisters,
    HvRegisterName as Reg,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlReturn,
    VtlSwitched,
)
from protocol._x86 import (
    CR0_ET,
    CR0_NW,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_PCIDE,
    EFER_LME,
    EFER_NXE,
    EFER_TCE,
    Msr,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, protected_mode_vtl0

if TYPE_CHECKING:
    from runtime import Partition, Vp

_STATUS = GetVpRegisters(names=[Reg.VSM_VP_STATUS])


def _set0(*pairs: tuple[Reg, int]) -> SetVpRegisters:
    return SetVpRegisters(registers=[RegisterAssoc(name=n, value=v) for n, v in pairs], target_vtl=Vtl.VTL0)


async def _entry_fails(part: Partition, vp: Vp, checks: list[int]) -> str:
    """VTL0's next action (after VTL1 returns) fails VM entry with exactly ``checks``; every VP
    of the partition is lost."""
    assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
    assert part.failure is None  # VTL1's return itself succeeds: VTL0 is not entered yet
    with pytest.raises(PartitionFailed) as failed:
        await vp.execute(Rdmsr(msr=Msr.APIC_BASE))
    reason = str(failed.value)
    assert reason == part.failure
    assert reason.startswith(
        f"partition {part.partition_id} vp 0 VTL0: VM entry failed (TDG.VP.ENTER: BAD_GUEST_STATE"
    )
    assert sorted({int(n) for n in re.findall(r"check (\d) \(", reason)}) == checks
    for index in range(part.vp_count):
        with pytest.raises(PartitionFailed, match=re.escape(reason)):
            await part.vp(index).execute(_STATUS)
        with pytest.raises(PartitionFailed, match=re.escape(reason)):
            await part.vp(index).tdx_state(Vtl.VTL0)
    return reason


async def test_lma_without_pae_fails_check_1() -> None:
    """The breakage of issue 8: SetVpRegisters(Efer=LME, Cr0=PE|PG) with CR4.PAE = 0 is accepted
    (update_execution_mode has no PAE guard), LMA = 1, and VTL0's VM entry fails check 1."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        other = await new_partition(rt)
        vp = await enter_vtl1(part)
        set_mode = _set0((Reg.EFER, EFER_LME | EFER_NXE), (Reg.CR0, CR0_PE | CR0_PG | CR0_ET))
        assert await vp.execute(set_mode) == ok(2)
        assert (await vp.tdx_state(Vtl.VTL0)).long_mode_guest
        reason = await _entry_fails(part, vp, [1])
        assert "IA-32e mode guest = 1 needs CR0.PG = 1 and CR4.PAE = 1" in reason
        assert await other.vp(0).execute(_STATUS) == ok(1, [0x1_0000])  # untouched


async def test_pcide_outside_long_mode_fails_check_1() -> None:
    """CR4.PCIDE is an allowed bit for SetVpRegisters; outside IA-32e mode VM entry refuses it."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await protected_mode_vtl0(part)
        assert await vp.execute(_set0((Reg.CR4, CR4_PAE | CR4_PCIDE))) == ok(1)
        reason = await _entry_fails(part, vp, [1])
        assert "IA-32e mode guest = 0 needs CR4.PCIDE = 0" in reason


async def test_mov_cr0_pg_without_pe_exits_and_fails_check_3() -> None:
    """DOMAIN 7.4: MOV to CR0 with PG and no PE exits (fault-like VM exits outrank that #GP) and
    OpenHCL writes it unchecked; VTL0's next VM entry fails check 3 (CR0.PG = 1 needs PE)."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        assert await vp.execute(MovToCr(cr=0, value=CR0_PG | CR0_ET)) == Completed()
        with pytest.raises(
            PartitionFailed, match=r"vp 0 VTL0: VM entry failed .*check 3 \(CR0 and CR4 fixed bits\)"
        ):
            await vp.execute(Rdmsr(msr=Msr.APIC_BASE))
        assert part.failure is not None
        assert "CR0.PG = 1 needs CR0.PE = 1" in part.failure


async def test_mov_cr0_nw_without_cd_is_kept_in_the_read_shadow() -> None:
    """DOMAIN 7.4: NW without CD, and bits 63:32, also exit and are written; they are host-owned,
    so they stay in the read shadow (the guest reads them back) and VM entry succeeds."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        for value in (CR0_NW | CR0_ET, (1 << 40) | CR0_ET):
            assert await vp.execute(MovToCr(cr=0, value=value)) == Completed()
            assert (await vp.registers(Vtl.VTL0, [Reg.CR0]))[Reg.CR0] == value
            tdx = await vp.tdx_state(Vtl.VTL0)
            assert tdx.cr0_read_shadow == value
            assert tdx.physical_cr0 == CR0_ET | 0x20  # ET (guest-owned) and NE
            assert await vp.execute(Rdmsr(msr=Msr.APIC_BASE)) == Completed(value=0xFEE0_0900)
        assert part.failure is None


async def test_rflags_and_rip_fail_checks_4_and_5_together() -> None:
    """SetVpRegisters does not validate RFLAGS or RIP (DOMAIN 3.2): RFLAGS = 0 (bit 1 clear) and
    a RIP above 4 GiB outside 64-bit mode fail checks 4 and 5, both named."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await protected_mode_vtl0(part)
        assert await vp.execute(_set0((Reg.RFLAGS, 0), (Reg.RIP, 1 << 32))) == ok(2)
        reason = await _entry_fails(part, vp, [4, 5])
        assert "RFLAGS 0x0" in reason
        assert "RIP 0x100000000 has bits 63:32 set outside 64-bit mode" in reason


async def test_non_canonical_rip_in_64_bit_mode_fails_check_5() -> None:
    """VP 1's VTL0, started in 64-bit mode with a non-canonical RIP (contexts are not checked),
    fails check 5 at its first VM entry."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context(1 << 60))
        assert await vp0.execute(start) == ok()
        with pytest.raises(
            PartitionFailed,
            match=r"vp 1 VTL0: VM entry failed .*check 5 \(RIP\): RIP 0x1000000000000000 is not canonical",
        ):
            await part.vp(1).execute(_STATUS)


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        pytest.param({"cs": 0}, "CS.L = 1 and CS.D = 1", id="cs-l-and-d"),
        pytest.param({"tr": 0}, "TR type 3 in IA-32e mode", id="tr-16-bit-busy"),
    ],
)
async def test_context_segments_fail_check_6(change: dict[str, int], detail: str) -> None:
    """A long-mode context with CS.L and CS.D both set, or a TR that is not a busy 64-bit TSS,
    loads (set_registers writes segments as given) and fails check 6 at the first VM entry."""
    context = long_mode_context(0x10_0000)
    if "cs" in change:
        context = msgspec.structs.replace(context, cs=context.cs | (0x4000 << 112))  # D on top of L
    else:
        context = msgspec.structs.replace(context, tr=(context.tr & ~(0xF << 112)) | (0x3 << 112))
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=context)
        assert await part.vp(0).execute(start) == ok()
        with pytest.raises(PartitionFailed, match=r"check 6 \(CS and TR in IA-32e mode\)"):
            await part.vp(1).execute(_STATUS)
        assert part.failure is not None
        assert detail in part.failure


async def test_efer_tce_fails_check_7() -> None:
    """EFER.TCE passes SetVpRegisters (0xDD01) and TDX write_efer, but it is reserved on Intel:
    VTL0's VM entry fails check 7."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await enter_vtl1(part)
        assert await vp.execute(_set0((Reg.EFER, EFER_NXE | EFER_TCE))) == ok(1)
        reason = await _entry_fails(part, vp, [7])
        assert f"sets reserved bits {EFER_TCE:#x}" in reason


async def test_cr3_above_the_address_width_fails_check_8() -> None:
    """A context CR3 with bits above the partition's physical-address width (here 46) loads and
    fails check 8."""
    async with checked_runtime() as rt:
        part = await new_partition(rt, physical_address_bits=46)
        context = msgspec.structs.replace(long_mode_context(0x10_0000), cr3=1 << 47)
        start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=context)
        assert await part.vp(0).execute(start) == ok()
        with pytest.raises(
            PartitionFailed, match=r"check 8 \(CR3 physical-address width\): CR3 0x800000000000"
        ):
            await part.vp(1).execute(_STATUS)


async def test_a_bad_state_fixed_before_entry_never_fails() -> None:
    """Only the state at VM entry counts: RFLAGS = 0 set and then repaired while VTL1 runs."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await protected_mode_vtl0(part)
        assert await vp.execute(_set0((Reg.RFLAGS, 0))) == ok(1)
        assert await vp.execute(_set0((Reg.RFLAGS, 0x2))) == ok(1)
        assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
        assert await vp.execute(Rdmsr(msr=Msr.APIC_BASE)) == Completed(value=0xFEE0_0900)
        assert part.failure is None
