"""DOMAIN 6, S9: VTL call and return edge cases (DOMAIN 3.7).

A refused VTL switch injects an exception into the caller and changes nothing else: no VTL
switch and no RIP advance, in either VTL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import (
    Action,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    WriteVtlControl,
)
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import VTL1_RIP, enter_vtl1, ok

if TYPE_CHECKING:
    from runtime import Vp

_UD = ExceptionInjected(vector=6)
_GP0 = ExceptionInjected(vector=13, error_code=0)
_FAST = 1 << 16


async def _refused(vp: Vp, action: Action, expected: ExceptionInjected) -> None:
    """``action`` injects ``expected``; the active VTL and both VTLs' RIPs are unchanged."""
    vtl = vp.active_vtl
    before = [await vp.registers(v, [Reg.RIP, Reg.RAX, Reg.RCX]) for v in (Vtl.VTL0, Vtl.VTL1)]
    assert await vp.execute(action) == expected
    assert vp.active_vtl == vtl
    after = [await vp.registers(v, [Reg.RIP, Reg.RAX, Reg.RCX]) for v in (Vtl.VTL0, Vtl.VTL1)]
    assert after == before


async def test_vtl_call_from_vtl1_is_ud() -> None:
    """VtlCall from VTL1 injects #UD in VTL1."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        await _refused(vp, VtlCall(), _UD)
        assert vp.active_vtl == Vtl.VTL1


async def test_vtl_return_from_vtl0_is_ud() -> None:
    """VtlReturn from VTL0 injects #UD, with and without VTL1 enabled, fast or not."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        await _refused(vp, VtlReturn(), _UD)
        await _refused(vp, VtlReturn(fast=True), _UD)
        await enter_vtl1(part)
        assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)
        await _refused(vp, VtlReturn(), _UD)
        await _refused(vp, VtlReturn(fast=True), _UD)
        assert vp.active_vtl == Vtl.VTL0


async def test_vtl_call_with_input_is_ud() -> None:
    """VtlCall with a non-zero input register injects #UD in VTL0."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp = await enter_vtl1(part)
        assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)
        for value in (1, 2, 1 << 63):
            await _refused(vp, VtlCall(input=value), _UD)
        # A plain VtlCall still works afterwards.
        assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)


async def test_vtl_return_with_input_two_is_ud() -> None:
    """VtlReturn with input 2 (any bit above bit 0) injects #UD in VTL1."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        for value in (2, 3, 1 << 63):
            await _refused(vp, VtlReturn(input=value), _UD)
        assert vp.active_vtl == Vtl.VTL1


async def test_vtl_call_and_return_with_control_flags_are_ud() -> None:
    """VtlCall or VtlReturn with the fast bit (or a rep count) in the control word injects #UD."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        await _refused(vp, VtlReturn(control_flags=_FAST), _UD)
        await _refused(vp, VtlReturn(fast=True, control_flags=1 << 32), _UD)
        assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)
        await _refused(vp, VtlCall(control_flags=_FAST), _UD)
        await _refused(vp, VtlCall(control_flags=1 << 32), _UD)
        assert vp.active_vtl == Vtl.VTL0


async def test_vtl_call_before_vtl1_enabled_on_vp_is_ud() -> None:
    """VtlCall on a VP without VTL1 (partition enabled, VP not) injects #UD."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        await enter_vtl1(part)  # VTL1 on VP 0 only
        vp0 = part.vp(0)
        out = await vp0.execute(
            StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context())
        )
        assert out == ok()
        vp1 = part.vp(1)
        assert vp1.active_vtl == Vtl.VTL0
        await _refused(vp1, VtlCall(), _UD)
        assert vp1.active_vtl == Vtl.VTL0


async def test_vmcall_at_cpl3_is_gp() -> None:
    """Any VMCALL at CPL 3 injects #GP(0) before dispatch: hypercalls, VtlCall and VtlReturn alike."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        context = long_mode_context(0x4000, user=True)
        assert (
            await vp0.execute(StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=context)) == ok()
        )
        vp1 = part.vp(1)
        await _refused(vp1, GetVpRegisters(names=[Reg.VSM_VP_STATUS]), _GP0)
        await _refused(vp1, VtlCall(), _GP0)
        await _refused(vp1, VtlReturn(), _GP0)
        assert (await vp1.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == 0x4000
        # VP 0 runs at CPL 0 and is unaffected.
        assert await vp0.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x1_0000])


async def test_normal_return_restores_rax_rcx() -> None:
    """A normal VtlReturn loads VTL0's RAX and RCX from VTL1's VP assist page (0x10, 0x18)."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        rax, rcx = 0x1111_2222_3333_4444, 0x5555_6666_7777_8888
        await vp.execute(WriteVtlControl(return_rax=rax, return_rcx=rcx))
        vtl0_rip = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        out = await vp.execute(VtlReturn())
        assert isinstance(out, VtlSwitched)
        assert out.to_vtl == Vtl.VTL0
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.registers(Vtl.VTL0, [Reg.RAX, Reg.RCX]) == {Reg.RAX: rax, Reg.RCX: rcx}
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == vtl0_rip
        assert (await vp.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == VTL1_RIP + 3


async def test_fast_return_leaves_rax_rcx() -> None:
    """A fast VtlReturn leaves RAX and RCX as VTL1 left them, whatever the assist page says."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        await vp.execute(WriteVtlControl(return_rax=0xAAAA, return_rcx=0xBBBB))
        # A VTL1 hypercall leaves its result in (shared) RAX.
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])
        before = await vp.registers(Vtl.VTL1, [Reg.RAX, Reg.RCX])
        assert before[Reg.RAX] == HvStatus.SUCCESS | (1 << 32)
        out = await vp.execute(VtlReturn(fast=True))
        assert isinstance(out, VtlSwitched)
        assert out.to_vtl == Vtl.VTL0
        assert await vp.registers(Vtl.VTL0, [Reg.RAX, Reg.RCX]) == before


async def test_call_return_round_trips() -> None:
    """Repeated VtlCall / VtlReturn pairs each advance the caller's RIP by 3 and set entry reason 1."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)
        rips = await vp.registers(Vtl.VTL0, [Reg.RIP])
        for i in range(1, 4):
            assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
            assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)
            assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == rips[Reg.RIP] + 3 * i
            assert (await vp.registers(Vtl.VTL1, [Reg.RIP]))[Reg.RIP] == VTL1_RIP + 3 * (i + 1)
        assert vp.statistics().vtl_switches == 8
