"""DOMAIN 6, S2: AP bring-up orchestrated by VTL1 (DOMAIN 3.3), and fatal initial contexts."""

from __future__ import annotations

import msgspec
import pytest

from actors import VpFailed, VpNotRunning
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
from protocol._x86 import CR0_ET, CR0_NE, CR0_PE, CR0_PG, CR4_PAE, CR4_PKE, EFER_LMA, EFER_LME, EFER_SCE
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, status

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


# ---- invalid initial contexts are fatal on the target VP (Appendix B item 9) ----------------------

_BAD_EFER = EFER_LME | EFER_LMA | EFER_SCE  # no NXE: TDX set_registers refuses it


def _bad_context(rip: int) -> InitialVpContext:
    return msgspec.structs.replace(long_mode_context(rip), efer=_BAD_EFER)


async def test_invalid_context_from_enable_vp_vtl_fails_target() -> None:
    """EnableVpVtl(1) with EFER lacking NXE succeeds for the caller; VP1 then fails, VP0 carries on."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = await enter_vtl1(part)
        bad = EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=_bad_context(_VTL1_AP_RIP))
        assert await vp0.execute(bad) == ok()
        assert await vp0.execute(_start(1)) == ok()
        with pytest.raises(VpFailed, match=r"vp 1\b"):
            await part.vp(1).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        assert part.vp(1).statistics().failed
        # The caller's VP and the other VPs carry on.
        assert await vp0.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])
        assert await vp0.execute(_enable(2)) == ok()
        assert await vp0.execute(_start(2)) == ok()
        assert await part.vp(2).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])


async def test_invalid_context_from_start_vp_fails_target() -> None:
    """StartVp(2, VTL0) with EFER lacking NXE: the caller gets Success, VP2 fails, other partitions go on."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        other = await new_partition(rt)
        vp0 = part.vp(0)
        start = StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL0, context=_bad_context(_VTL0_AP_RIP))
        assert await vp0.execute(start) == ok()
        with pytest.raises(VpFailed, match=r"vp 2\b"):
            await part.vp(2).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        with pytest.raises(VpFailed, match=r"vp 2\b"):
            await part.vp(2).execute(VtlCall())
        # A repeat start is refused as for any started VP.
        assert await vp0.execute(_start(2)) == status(HvStatus.INVALID_VP_STATE)
        assert await vp0.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])
        assert await vp0.execute(_start(1)) == ok()
        assert await part.vp(1).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])
        # Another partition is untouched.
        assert await other.vp(0).execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        assert await other.vp(0).execute(_start(2)) == ok()


async def test_invalid_context_from_vtl0_enable_fails_own_vp() -> None:
    """VTL0's EnableVpVtl(SELF) with a bad VTL1 context succeeds, then VP0 itself fails; VP1 keeps running."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        assert await vp0.execute(_start(1)) == ok()
        assert await vp0.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        bad = EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=_bad_context(_VTL1_AP_RIP))
        assert await vp0.execute(bad) == ok()
        with pytest.raises(VpFailed, match=r"vp 0\b"):
            await vp0.execute(VtlCall())
        assert await part.vp(1).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


async def test_invalid_cr4_context_fails_target() -> None:
    """A context with a CR4 bit outside the allowed set (PKE) is fatal on the target VP too."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        context = msgspec.structs.replace(long_mode_context(_VTL0_AP_RIP), cr4=CR4_PAE | CR4_PKE)
        assert (
            await vp0.execute(StartVirtualProcessor(vp_index=3, target_vtl=Vtl.VTL0, context=context)) == ok()
        )
        with pytest.raises(VpFailed, match=r"vp 3\b"):
            await part.vp(3).execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        assert await vp0.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


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
