"""DOMAIN 6, S2: AP bring-up orchestrated by VTL1 (DOMAIN 3.3), and fatal initial contexts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import msgspec
import pytest

from actors import PartitionFailed, VpNotRunning
from protocol import (
    EnablePartitionVtl,
    EnableVpVtl,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    InitialVpContext,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
)
from protocol._x86 import (
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_PKE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    EFER_TCE,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, status

if TYPE_CHECKING:
    from runtime import Partition

_VTL1_AP_RIP = 0x20_0000
_VTL0_AP_RIP = 0x30_0000


def _enable(vp_index: int, rip: int = _VTL1_AP_RIP) -> EnableVpVtl:
    return EnableVpVtl(vp_index=vp_index, target_vtl=Vtl.VTL1, context=long_mode_context(rip))


def _start(vp_index: int, vtl: Vtl = Vtl.VTL0, rip: int = _VTL0_AP_RIP) -> StartVirtualProcessor:
    return StartVirtualProcessor(vp_index=vp_index, target_vtl=vtl, context=long_mode_context(rip))


async def test_vtl1_enables_and_starts_an_ap() -> None:
    """VTL1 on VP0: EnableVpVtl(1) and StartVp(1, VTL0) succeed; VP1 runs VTL1 first, then returns to VTL0."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        vp1 = part.vp(1)
        assert await vp0.execute(_enable(1)) == ok()
        assert vp1.active_vtl == Vtl.VTL0
        with pytest.raises(VpNotRunning, match="vp 1"):
            await vp1.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        assert await vp0.execute(_start(1)) == ok()
        assert vp1.active_vtl == Vtl.VTL1
        # VP1's first action runs in VTL1, at the EnableVpVtl context.
        assert (await vp1.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == _VTL1_AP_RIP
        assert await vp1.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])
        # Both VTLs of VP1 are in long mode with the derived bits.
        for vtl in (Vtl.VTL0, Vtl.VTL1):
            tdx = await vp1.tdx_state(vtl)
            assert tdx.efer & EFER_LMA
            assert tdx.long_mode_guest
        out = await vp1.execute(VtlReturn(fast=True))
        assert isinstance(out, VtlSwitched)
        assert out.to_vtl == Vtl.VTL0
        assert (await vp1.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == _VTL0_AP_RIP
        assert await vp1.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0000])
        assert await vp1.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        # VP0 carries on in VTL1, unaffected.
        assert vp0.active_vtl == Vtl.VTL1
        assert await vp0.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])


async def test_start_ap_in_vtl1() -> None:
    """StartVp(1, VTL1, ctx) after EnableVpVtl(1) loads the new VTL1 context and runs VTL1 first."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        assert await vp0.execute(_enable(1)) == ok()
        assert await vp0.execute(_start(1, Vtl.VTL1, rip=0x40_0000)) == ok()
        vp1 = part.vp(1)
        assert vp1.active_vtl == Vtl.VTL1
        assert (await vp1.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == 0x40_0000


async def test_repeat_start_is_invalid_vp_state() -> None:
    """A second StartVp(1, ...) gives InvalidVpState, from either VTL."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        assert await vp0.execute(_enable(1)) == ok()
        assert await vp0.execute(_start(1)) == ok()
        assert await vp0.execute(_start(1)) == status(HvStatus.INVALID_VP_STATE)
        assert await vp0.execute(_start(1, Vtl.VTL1)) == status(HvStatus.INVALID_VP_STATE)
        assert isinstance(await vp0.execute(VtlReturn(fast=True)), VtlSwitched)
        assert await vp0.execute(_start(1)) == status(HvStatus.INVALID_VP_STATE)


async def test_vtl0_cannot_enable_vtl1_on_another_vp() -> None:
    """From VTL0 on VP0, EnableVpVtl(2, 1, ctx) gives AccessDenied once VTL1 is enabled on some VP."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        assert isinstance(await vp0.execute(VtlReturn(fast=True)), VtlSwitched)
        assert await vp0.execute(_enable(2)) == status(HvStatus.ACCESS_DENIED)


async def test_vtl0_cannot_enable_vtl1_on_another_vp_even_first() -> None:
    """Before any VP has VTL1, VTL0 may only enable VTL1 on its own VP."""
    async with checked_runtime() as rt:
        vp0 = (await new_partition(rt)).vp(0)
        assert await vp0.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        assert await vp0.execute(_enable(2)) == status(HvStatus.ACCESS_DENIED)
        assert await vp0.execute(_enable(0)) == ok()


async def test_start_in_vtl1_before_enable_is_invalid_vp_state() -> None:
    """StartVp(2, VTL1, ctx) from VTL1 before EnableVpVtl(2) gives InvalidVpState; VP2 stays stopped."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        assert await vp0.execute(_start(2, Vtl.VTL1)) == status(HvStatus.INVALID_VP_STATE)
        with pytest.raises(VpNotRunning):
            await part.vp(2).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        # Enabling first makes the same start succeed.
        assert await vp0.execute(_enable(2)) == ok()
        assert await vp0.execute(_start(2, Vtl.VTL1)) == ok()


@pytest.mark.parametrize("vtl", [Vtl.VTL0, Vtl.VTL1])
async def test_start_self_is_invalid_vp_index(vtl: Vtl) -> None:
    """StartVp(0, ...) on VP0 (itself) gives InvalidVpIndex; so do VP_INDEX_SELF and an index past the end."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        for index in (0, 0xFFFF_FFFE, 4):
            assert await vp0.execute(_start(index, vtl)) == status(HvStatus.INVALID_VP_INDEX)


async def test_deny_lower_vtl_startup() -> None:
    """After VsmPartitionConfig=0x5F (DenyLowerVtlStartup), VTL0's StartVp(3, VTL0) gives AccessDenied."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        assert await vp0.execute(_start(1)) == ok()
        config = SetVpRegisters(registers=[RegisterAssoc(name=Reg.VSM_PARTITION_CONFIG, value=0x5F)])
        assert await vp0.execute(config) == ok(1)
        assert await vp0.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG])) == ok(1, [0x5F])
        assert isinstance(await vp0.execute(VtlReturn(fast=True)), VtlSwitched)
        assert await vp0.execute(_start(3)) == status(HvStatus.ACCESS_DENIED)
        # The deny check comes before the already-started check (VP1 runs).
        assert await vp0.execute(_start(1)) == status(HvStatus.ACCESS_DENIED)
        with pytest.raises(VpNotRunning):
            await part.vp(3).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        # VTL1 itself may still start the AP.
        assert await vp0.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        assert await vp0.execute(_start(3)) == ok()
        assert part.vp(3).active_vtl == Vtl.VTL0


async def test_vtl0_starts_ap_before_deny() -> None:
    """Without DenyLowerVtlStartup VTL0 may start an AP in VTL0; without VTL1 there it runs VTL0."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        assert isinstance(await vp0.execute(VtlReturn(fast=True)), VtlSwitched)
        assert await vp0.execute(_start(3)) == ok()
        vp3 = part.vp(3)
        assert vp3.active_vtl == Vtl.VTL0
        assert await vp3.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


# ---- invalid initial contexts end the partition (Appendix B item 9, DOMAIN 7.2) ----------------------
#
# DOMAIN 7.2 changed these expectations: OpenHCL unwraps set_x86_vp_context's result on the target
# VP and is built with panic = 'abort', so the whole partition is lost, not only the target VP.

_BAD_EFER = EFER_LME | EFER_LMA | EFER_SCE  # no NXE: TDX write_efer refuses it


def _bad_context(rip: int) -> InitialVpContext:
    return msgspec.structs.replace(long_mode_context(rip), efer=_BAD_EFER)


async def _assert_partition_lost(part: Partition, vp_index: int, vtl: str, why: str) -> None:
    """Every VP of ``part`` raises PartitionFailed naming the target and the refused value."""
    reason = part.failure
    assert reason is not None
    assert reason.startswith(f"partition {part.partition_id} vp {vp_index} {vtl}: invalid initial context")
    assert why in reason
    for index in range(part.vp_count):
        with pytest.raises(PartitionFailed, match=re.escape(reason)):
            await part.vp(index).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        with pytest.raises(PartitionFailed):
            await part.vp(index).registers(Vtl.VTL0, [Reg.RIP])
        assert part.vp(index).statistics().failed
    assert part.statistics().failure == reason


async def test_invalid_context_from_enable_vp_vtl_ends_the_partition() -> None:
    """EnableVpVtl(1) with EFER lacking NXE succeeds for the caller; VP1's load then ends the partition."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        bad = EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=_bad_context(_VTL1_AP_RIP))
        assert await vp0.execute(bad) == ok()  # the caller's hypercall completes first
        with pytest.raises(PartitionFailed):
            await vp0.execute(_start(1))
        await _assert_partition_lost(part, 1, "VTL1", f"write_efer refused EFER {_BAD_EFER:#x}")


async def test_invalid_context_from_start_vp_ends_only_its_partition() -> None:
    """StartVp(2, VTL0) with EFER lacking NXE: Success for the caller, then the partition is lost;
    another partition is untouched."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        other = await new_partition(rt)
        vp0 = part.vp(0)
        start = StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL0, context=_bad_context(_VTL0_AP_RIP))
        assert await vp0.execute(start) == ok()
        await _assert_partition_lost(part, 2, "VTL0", "write_efer refused")
        assert other.failure is None
        assert await other.vp(0).execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        assert await other.vp(0).execute(_start(2)) == ok()
        assert await other.vp(2).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


async def test_invalid_context_from_vtl0_enable_ends_the_partition() -> None:
    """VTL0's EnableVpVtl(SELF) with a bad VTL1 context succeeds; VP0's load then ends the partition."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        assert await vp0.execute(_start(1)) == ok()
        assert await vp0.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        bad = EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=_bad_context(_VTL1_AP_RIP))
        assert await vp0.execute(bad) == ok()
        with pytest.raises(PartitionFailed, match=r"partition \d+ vp 0 VTL1"):
            await vp0.execute(VtlCall())
        await _assert_partition_lost(part, 0, "VTL1", "write_efer refused")


async def test_invalid_cr4_context_ends_the_partition() -> None:
    """A context with a CR4 bit outside the allowed set (PKE): write_cr4 refuses it, fatal too."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        context = msgspec.structs.replace(long_mode_context(_VTL0_AP_RIP), cr4=CR4_PAE | CR4_PKE)
        assert (
            await vp0.execute(StartVirtualProcessor(vp_index=3, target_vtl=Vtl.VTL0, context=context)) == ok()
        )
        await _assert_partition_lost(part, 3, "VTL0", f"write_cr4 refused CR4 {CR4_PAE | CR4_PKE:#x}")


async def test_context_values_set_registers_does_not_check_reach_vm_entry() -> None:
    """A context PAT with a reserved type (2) or EFER with a bit reserved on Intel (TCE) loads:
    TDX set_pat and write_efer do not check them. The VTL's first VM entry then fails check 7
    and ends the partition (DOMAIN 7.2)."""
    async with checked_runtime() as rt:
        for change, detail in (
            ({"msr_cr_pat": 0x0007_0406_0007_0402}, "entries [0] are not 0, 1, 4, 5, 6 or 7"),
            ({"efer": EFER_LME | EFER_LMA | EFER_NXE | EFER_TCE}, f"sets reserved bits {EFER_TCE:#x}"),
        ):
            part = await new_partition(rt)
            context = msgspec.structs.replace(long_mode_context(_VTL0_AP_RIP), **change)
            start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=context)
            assert await part.vp(0).execute(start) == ok()
            assert part.failure is None  # loaded: nothing refused it
            assert (await part.vp(1).tdx_state(Vtl.VTL0)).commits >= 1
            with pytest.raises(PartitionFailed, match=r"vp 1 VTL0: VM entry failed .*check 7 \(EFER and PAT"):
                await part.vp(1).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
            assert detail in (part.failure or "")


async def test_context_cr0_gets_et_forced() -> None:
    """A context CR0 without ET loads through TDX set_registers, which forces ET on (DOMAIN 3.9)."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        cr0 = CR0_PE | CR0_PG | CR0_NE
        context = msgspec.structs.replace(long_mode_context(_VTL1_AP_RIP), cr0=cr0)
        assert await vp0.execute(EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=context)) == ok()
        context = msgspec.structs.replace(long_mode_context(_VTL0_AP_RIP), cr0=cr0)
        assert (
            await vp0.execute(StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=context)) == ok()
        )
        vp1 = part.vp(1)
        for vtl in (Vtl.VTL0, Vtl.VTL1):
            assert (await vp1.registers(vtl, [Reg.CR0]))[Reg.CR0] == cr0 | CR0_ET
            tdx = await vp1.tdx_state(vtl)
            assert tdx.cr0 == cr0 | CR0_ET
            assert tdx.long_mode_guest


async def test_enable_vp_vtl_on_a_running_ap() -> None:
    """VTL1 enabling VTL1 on an AP already running VTL0 does not switch it; its VtlCall enters VTL1."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0, vp1 = part.vp(0), part.vp(1)
        assert await vp0.execute(_start(1)) == ok()
        await enter_vtl1(part)
        # VTL0 on VP1 may not enable VTL1 for itself: VTL1 already exists on VP0.
        assert await vp1.execute(_enable(0xFFFF_FFFE)) == status(HvStatus.ACCESS_DENIED)
        assert await vp1.execute(VtlCall()) == ExceptionInjected(vector=6)
        assert await vp0.execute(_enable(1)) == ok()
        assert vp1.active_vtl == Vtl.VTL0
        assert await vp1.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0000])
        assert await vp1.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        assert (await vp1.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == _VTL1_AP_RIP
        # From VTL1, a repeat (by index or SELF) is VtlAlreadyEnabled.
        assert await vp1.execute(_enable(1)) == status(HvStatus.VTL_ALREADY_ENABLED)
        assert await vp1.execute(_enable(0xFFFF_FFFE)) == status(HvStatus.VTL_ALREADY_ENABLED)
