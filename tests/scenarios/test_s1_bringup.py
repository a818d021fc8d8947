"""DOMAIN 6, S1: Windows-style BSP VSM bring-up on VP 0, step by step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import (
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
)
from protocol._x86 import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_SMEP,
    DEFAULT_CR0_GUEST_HOST_MASK,
    EFER_LMA,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
    default_cr4_guest_host_mask,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import VTL1_RIP, enter_vtl1, ok, status, vtl0_register

if TYPE_CHECKING:
    from runtime import Vp

_CR0_MASK = CR0_PE | CR0_PG
_CR4_MASK = CR4_PAE | CR4_SMEP
#: Cr0Write | Cr4Write | MsrLstarWrite | MsrEferWrite.
_CONTROL = 0x4043


async def _set(vp: Vp, name: Reg, value: int) -> object:
    return await vp.execute(SetVpRegisters(registers=[RegisterAssoc(name=name, value=value)]))


async def test_step1_vtl0_reads_vsm_status_registers() -> None:
    """Step 1: VTL0 reads VsmCapabilities 0x2_0002, VsmPartitionStatus 0x1_0001, VsmVpStatus 0x1_0000."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_CAPABILITIES])) == ok(1, [0x2_0002])
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x1_0001])
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


async def test_step1_capabilities_report_shared_dr6() -> None:
    """Step 1: VsmCapabilities has bit 0 set when the platform shares DR6."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt, dr6_shared=True)).vp(0)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_CAPABILITIES])) == ok(1, [0x2_0003])


async def test_step1_needs_access_vsm() -> None:
    """Step 1 without the AccessVsm privilege: the three status reads give AccessDenied from VTL0."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt, access_vsm=False)).vp(0)
        for name in (Reg.VSM_CAPABILITIES, Reg.VSM_PARTITION_STATUS, Reg.VSM_VP_STATUS):
            assert await vp.execute(GetVpRegisters(names=[name])) == status(HvStatus.ACCESS_DENIED)
        # VsmCodePageOffsets has no privilege rule.
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_CODE_PAGE_OFFSETS])) == ok(1, [0x2_600F])


async def test_step2_enable_partition_vtl_once() -> None:
    """Step 2: EnablePartitionVtl(SELF, 1, mbec) succeeds; a repeat gives InvalidVtlState."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        action = EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)
        assert await vp.execute(action) == ok()
        assert await vp.execute(action) == status(HvStatus.INVALID_VTL_STATE)
        # MBEC enabled for both VTLs: EnabledVtlSet 0b11, MaximumVtl 1, MbecEnabledVtlSet 0b11.
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_STATUS])) == ok(1, [0x31_0003])


async def test_step3_enable_vp_vtl_loads_long_mode_vtl1() -> None:
    """Step 3: EnableVpVtl succeeds; VTL1 derives EFER.LMA=1 and the IA-32e entry control; VTL0 stays."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)) == ok()
        context = long_mode_context(VTL1_RIP)
        out = await vp.execute(EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context))
        assert out == ok()
        assert vp.active_vtl == Vtl.VTL0  # enabling does not switch
        tdx = await vp.tdx_state(Vtl.VTL1)
        assert tdx.efer & EFER_LMA
        assert tdx.long_mode_guest
        assert tdx.entry_controls & VMX_ENTRY_CONTROL_LONG_MODE_GUEST
        regs = await vp.registers(Vtl.VTL1, [Reg.RIP, Reg.RSP, Reg.CR3, Reg.CR4])
        assert regs == {Reg.RIP: VTL1_RIP, Reg.RSP: 0x8000, Reg.CR3: 0x10_0000, Reg.CR4: CR4_PAE}
        # VTL0 is untouched: still in real mode at reset.
        vtl0 = await vp.tdx_state(Vtl.VTL0)
        assert not vtl0.long_mode_guest
        # VsmVpStatus now shows VTL1 enabled on this VP.
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0000])


async def test_step3_enable_vp_vtl_with_explicit_index() -> None:
    """Step 3: EnableVpVtl naming VP 0 explicitly works like VP_INDEX_SELF."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        out = await vp.execute(
            EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context(VTL1_RIP))
        )
        assert out == ok()
        assert (await vp.tdx_state(Vtl.VTL1)).long_mode_guest


async def test_step3_repeats_denied_from_vtl0_already_enabled_from_vtl1() -> None:
    """Step 3: a repeat from VTL0 gives AccessDenied; the same call from VTL1 gives VtlAlreadyEnabled."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)) == ok()
        context = long_mode_context(VTL1_RIP)
        assert (
            await vp.execute(EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context))
            == ok()
        )
        for index in (HV_VP_INDEX_SELF, 0):
            out = await vp.execute(EnableVpVtl(vp_index=index, target_vtl=Vtl.VTL1, context=context))
            assert out == status(HvStatus.ACCESS_DENIED)
        assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        out = await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=context))
        assert out == status(HvStatus.VTL_ALREADY_ENABLED)
        # The refused repeat did not reload VTL1: it still runs where the VtlCall entered it.
        assert (await vp.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == VTL1_RIP + 3


async def test_step4_vtl_call_enters_vtl1_at_context_rip() -> None:
    """Step 4: VtlCall switches to VTL1 (entry reason 1) at ctx.RIP; VTL0's RIP moved past the VMCALL."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)) == ok()
        context = long_mode_context(VTL1_RIP)
        assert (
            await vp.execute(EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context))
            == ok()
        )
        before = await vp.registers(Vtl.VTL0, [Reg.RIP, Reg.RAX, Reg.RDX])
        assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        assert vp.active_vtl == Vtl.VTL1
        assert (await vp.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == VTL1_RIP
        # A VTL switch writes no status: the shared RAX/RDX are as VTL0 left them.
        shared = await vp.registers(Vtl.VTL1, [Reg.RAX, Reg.RDX])
        assert shared == {Reg.RAX: before[Reg.RAX], Reg.RDX: before[Reg.RDX]}
        vtl0_rip = before[Reg.RIP]
        assert await vtl0_register(vp, Reg.RIP) == vtl0_rip + 3


async def test_step5_code_page_offsets_and_vp_status() -> None:
    """Step 5: VsmCodePageOffsets reads 0x2_600F and VsmVpStatus 0x3_0001 before step 6."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_CODE_PAGE_OFFSETS])) == ok(1, [0x2_600F])
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])


async def test_step6_secure_config_sets_vp_mbec() -> None:
    """Steps 5-6: SecureConfigVtl0=1 succeeds, VsmVpStatus becomes 0x3_0011; 0 with MBEC is refused."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await _set(vp, Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x0) == status(HvStatus.INVALID_REGISTER_VALUE)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])
        assert await _set(vp, Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x1) == ok(1)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0011])
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_SECURE_CONFIG_VTL0])) == ok(1, [0x1])


async def test_step7_partition_config_is_write_once() -> None:
    """Step 7: VsmPartitionConfig=0x1F succeeds and reads back; 0x1E and 0x17 give InvalidRegisterValue."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG])) == ok(1, [0xF << 1])
        assert await _set(vp, Reg.VSM_PARTITION_CONFIG, 0x1F) == ok(1)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG])) == ok(1, [0x1F])
        # Protections cannot be switched off again ...
        assert await _set(vp, Reg.VSM_PARTITION_CONFIG, 0x1E) == status(HvStatus.INVALID_REGISTER_VALUE)
        # ... and the default mask cannot change once they are on (0xB is valid with MBEC).
        assert await _set(vp, Reg.VSM_PARTITION_CONFIG, 0x17) == status(HvStatus.INVALID_REGISTER_VALUE)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG])) == ok(1, [0x1F])


async def test_step8_cr_intercepts_in_one_call() -> None:
    """Step 8: Cr0Mask, Cr4Mask, CrInterceptControl=0x4043 in one call (3 reps); VTL0 masks widen."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        out = await vp.execute(
            SetVpRegisters(
                registers=[
                    RegisterAssoc(name=Reg.CR_INTERCEPT_CR0_MASK, value=_CR0_MASK),
                    RegisterAssoc(name=Reg.CR_INTERCEPT_CR4_MASK, value=_CR4_MASK),
                    RegisterAssoc(name=Reg.CR_INTERCEPT_CONTROL, value=_CONTROL),
                ]
            )
        )
        assert out == ok(3)
        names = [Reg.CR_INTERCEPT_CR0_MASK, Reg.CR_INTERCEPT_CR4_MASK, Reg.CR_INTERCEPT_CONTROL]
        assert await vp.execute(GetVpRegisters(names=names)) == ok(3, [_CR0_MASK, _CR4_MASK, _CONTROL])
        await _check_vtl0_masks(vp)


async def test_step8_cr_intercepts_in_three_calls() -> None:
    """Step 8: the same three registers set in three calls give the same state."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await _set(vp, Reg.CR_INTERCEPT_CR0_MASK, _CR0_MASK) == ok(1)
        assert await _set(vp, Reg.CR_INTERCEPT_CR4_MASK, _CR4_MASK) == ok(1)
        assert await _set(vp, Reg.CR_INTERCEPT_CONTROL, _CONTROL) == ok(1)
        assert await vp.execute(GetVpRegisters(names=[Reg.CR_INTERCEPT_CR0_MASK])) == ok(1, [_CR0_MASK])
        assert await vp.execute(GetVpRegisters(names=[Reg.CR_INTERCEPT_CR4_MASK])) == ok(1, [_CR4_MASK])
        assert await vp.execute(GetVpRegisters(names=[Reg.CR_INTERCEPT_CONTROL])) == ok(1, [_CONTROL])
        await _check_vtl0_masks(vp)


async def _check_vtl0_masks(vp: Vp) -> None:
    """VTL0's guest/host masks are default | mask; VTL1's stay at the defaults."""
    vtl0 = await vp.tdx_state(Vtl.VTL0)
    assert vtl0.cr0_guest_host_mask == 0xFFFF_FFFF_FFFA_FFE1 | _CR0_MASK
    assert vtl0.cr0_guest_host_mask == DEFAULT_CR0_GUEST_HOST_MASK | _CR0_MASK
    assert vtl0.cr4_guest_host_mask == default_cr4_guest_host_mask() | _CR4_MASK
    assert vtl0.cr4_guest_host_mask == 0xFFFF_FFFF_FF48_E040 | _CR4_MASK
    vtl1 = await vp.tdx_state(Vtl.VTL1)
    assert vtl1.cr0_guest_host_mask == DEFAULT_CR0_GUEST_HOST_MASK
    assert vtl1.cr4_guest_host_mask == default_cr4_guest_host_mask()


async def test_step9_fast_vtl_return_resumes_vtl0_after_the_call() -> None:
    """Step 9: a fast VtlReturn switches back to VTL0, which resumes after its VtlCall (RIP+3)."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)) == ok()
        context = long_mode_context(VTL1_RIP)
        assert (
            await vp.execute(EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context))
            == ok()
        )
        call_rip = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
        out = await vp.execute(VtlReturn(fast=True))
        assert isinstance(out, VtlSwitched)
        assert out.to_vtl == Vtl.VTL0
        assert vp.active_vtl == Vtl.VTL0
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == call_rip + 3
        # VTL1's RIP moved past its own VMCALL.
        assert (await vp.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == VTL1_RIP + 3


async def test_steps_1_to_9_in_order() -> None:
    """S1 end to end on one VP, in DOMAIN's order, ending back in VTL0."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        # 1
        names = [Reg.VSM_CAPABILITIES, Reg.VSM_PARTITION_STATUS, Reg.VSM_VP_STATUS]
        assert await vp.execute(GetVpRegisters(names=names)) == ok(3, [0x2_0002, 0x1_0001, 0x1_0000])
        # 2-4
        await enter_vtl1(part)
        # 5-6
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_CODE_PAGE_OFFSETS])) == ok(1, [0x2_600F])
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])
        assert await _set(vp, Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x1) == ok(1)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0011])
        # 7
        assert await _set(vp, Reg.VSM_PARTITION_CONFIG, 0x1F) == ok(1)
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG])) == ok(1, [0x1F])
        # 8
        assert await _set(vp, Reg.CR_INTERCEPT_CR0_MASK, _CR0_MASK) == ok(1)
        assert await _set(vp, Reg.CR_INTERCEPT_CR4_MASK, _CR4_MASK) == ok(1)
        assert await _set(vp, Reg.CR_INTERCEPT_CONTROL, _CONTROL) == ok(1)
        await _check_vtl0_masks(vp)
        # 9
        vtl0_rip = await vtl0_register(vp, Reg.RIP)
        out = await vp.execute(VtlReturn(fast=True))
        assert isinstance(out, VtlSwitched)
        assert out.to_vtl == Vtl.VTL0
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == vtl0_rip
        # Back in VTL0: the VP status reports the caller's VTL (0) with VTL1 enabled and MBEC on.
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0010])
