"""RELIABILITY B3 (VTL call/return legality) and B4 (state switch around a call/return pair).

Through the runtime API. Every refused VtlCall/VtlReturn injects an exception into the calling
VTL and changes nothing else: the active VTL stays, and every register of both VTLs (RIP
included, so no IP advance, and RAX, so no status is written) reads the same before and after.
Every legal call or return advances the caller's RIP by 3 (the VMCALL length) and switches.

DOMAIN wins over RELIABILITY where they disagree: RELIABILITY B3 (after the TLFS) expects #UD for
a VTL call from CPL > 0 and for one from real mode. OpenHCL on TDX injects #GP(0) for any VMCALL
at CPL > 0, before dispatch (DOMAIN 3.7, Appendix B item 12), and has no real-mode check: real
mode is CPL 0, so a VtlCall from real mode is legal (DOMAIN 3.7 lists every condition).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec
import pytest

from actors._registers import PRIVATE_RESET, SHARED_NAMES
from protocol import (
    Action,
    Completed,
    EnablePartitionVtl,
    EnableVpVtl,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    InitialVpContext,
    LoadTableRegister,
    MovToCr,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
)
from protocol._x86 import CR0_PE, CR4_OSXSAVE, CR4_PAE, U64_MASK, Msr, table
from tests.guest import checked_runtime, long_mode_context, new_partition
from tests.scenarios._bringup import enter_vtl1, ok

if TYPE_CHECKING:
    from runtime import Partition, Vp

UD: Final = ExceptionInjected(vector=6)
GP0: Final = ExceptionInjected(vector=13, error_code=0)
CALLED: Final = VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
RETURNED: Final = VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
PRIVATE: Final = tuple(Reg(n) for n in sorted(PRIVATE_RESET))
SHARED: Final = tuple(Reg(n) for n in sorted(SHARED_NAMES))
EVERY_REGISTER: Final = PRIVATE + SHARED
AP_VTL0_RIP: Final = 0x7000
AP_VTL1_RIP: Final = 0x20_0000

#: Control words with one field besides the code set (HVDEF ``Control``, DOMAIN 2.1).
CONTROL_FLAGS: Final = {
    "fast": 1 << 16,
    "variable-header-low": 1 << 17,
    "variable-header-all": 0x3FF << 17,
    "reserved-27": 1 << 27,
    "nested": 1 << 31,
    "rep-count-1": 1 << 32,
    "rep-count-all": 0xFFF << 32,
    "reserved-44": 1 << 44,
    "rep-start": 1 << 48,
    "reserved-60": 1 << 60,
    "fast-and-rep": (1 << 16) | (1 << 32),
}
CALL_INPUTS: Final = (1, 2, 0xFFFF_FFFF, 1 << 32, 1 << 63, U64_MASK)
RETURN_INPUTS: Final = (2, 3, 0x100, 1 << 32, 1 << 63, U64_MASK)


async def _registers(vp: Vp) -> list[dict[Reg, int]]:
    """Every modelled register of both VTLs (shared ones read through each VTL)."""
    return [await vp.registers(vtl, EVERY_REGISTER) for vtl in (Vtl.VTL0, Vtl.VTL1)]


async def _refused(vp: Vp, action: Action, expected: ExceptionInjected) -> None:
    """``action`` injects ``expected`` into the active VTL; no switch, no register changes."""
    vtl = vp.active_vtl
    before = await _registers(vp)
    assert await vp.execute(action) == expected
    assert vp.active_vtl == vtl
    assert await _registers(vp) == before


async def _rip(vp: Vp, vtl: Vtl) -> int:
    return (await vp.registers(vtl, [Reg.RIP]))[Reg.RIP]


async def _ap(
    part: Partition,
    index: int = 1,
    *,
    vtl0_user: bool = False,
    vtl1_context: InitialVpContext | None = None,
    stay_in_vtl1: bool = False,
) -> Vp:
    """AP ``index`` with VTL1 enabled and VTL0 started (by VTL1 on VP 0), both in long mode.

    The AP runs VTL1 first; unless ``stay_in_vtl1``, VTL1 returns at once and the AP is in VTL0.
    """
    vp0 = part.vp(0)
    if vp0.active_vtl != Vtl.VTL1:
        await enter_vtl1(part)
    context1 = vtl1_context or long_mode_context(AP_VTL1_RIP)
    assert await vp0.execute(EnableVpVtl(vp_index=index, target_vtl=Vtl.VTL1, context=context1)) == ok()
    context0 = long_mode_context(AP_VTL0_RIP, user=vtl0_user)
    out = await vp0.execute(StartVirtualProcessor(vp_index=index, target_vtl=Vtl.VTL0, context=context0))
    assert out == ok()
    ap = part.vp(index)
    assert ap.active_vtl == Vtl.VTL1
    if not stay_in_vtl1:
        assert await ap.execute(VtlReturn(fast=True)) == RETURNED
    return ap


# ---- B3: the negative matrix --------------------------------------------------------------------


async def test_vmcall_at_cpl3_is_gp_not_ud() -> None:
    """VtlCall and VtlReturn at CPL 3 inject #GP(0) (DOMAIN 3.7; RELIABILITY's #UD is the TLFS)."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        # VTL0 at CPL 3 on a VP where VTL1 is enabled: a VtlCall would otherwise be legal.
        ap = await _ap(part, 1, vtl0_user=True)
        assert ap.active_vtl == Vtl.VTL0
        await _refused(ap, VtlCall(), GP0)
        await _refused(ap, VtlReturn(), GP0)
        await _refused(ap, VtlReturn(fast=True), GP0)
        # VTL1 at CPL 3: a VtlReturn would otherwise be legal.
        user_vtl1 = long_mode_context(AP_VTL1_RIP, user=True)
        ap2 = await _ap(part, 2, vtl1_context=user_vtl1, stay_in_vtl1=True)
        assert ap2.active_vtl == Vtl.VTL1
        await _refused(ap2, VtlReturn(fast=True), GP0)
        await _refused(ap2, VtlReturn(), GP0)
        await _refused(ap2, VtlCall(), GP0)


async def test_vtl_call_without_vtl1_on_the_vp_is_ud() -> None:
    """VtlCall is #UD before EnablePartitionVtl, before EnableVpVtl, and on a VP without VTL1."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        await _refused(vp0, VtlCall(), UD)  # VSM not enabled for the partition
        assert await vp0.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        await _refused(vp0, VtlCall(), UD)  # enabled for the partition, not on this VP
        await _enable_vp0_and_call(vp0)
        out = await vp0.execute(
            StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context(AP_VTL0_RIP))
        )
        assert out == ok()
        ap = part.vp(1)
        assert ap.active_vtl == Vtl.VTL0
        await _refused(ap, VtlCall(), UD)  # VTL1 is enabled on VP 0 only


async def _enable_vp0_and_call(vp0: Vp) -> None:
    """EnableVpVtl on VP 0 (partition already enabled), then VtlCall into VTL1."""
    out = await vp0.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context(0x9000)))
    assert out == ok()
    assert await vp0.execute(VtlCall()) == CALLED


@pytest.mark.parametrize("flags", CONTROL_FLAGS.values(), ids=CONTROL_FLAGS.keys())
async def test_control_flags_are_ud(flags: int) -> None:
    """A VtlCall or VtlReturn whose control word has any bit besides the code injects #UD."""
    async with checked_runtime() as rt:
        ap = await _ap(await new_partition(rt))
        await _refused(ap, VtlCall(control_flags=flags), UD)
        assert await ap.execute(VtlCall()) == CALLED
        await _refused(ap, VtlReturn(control_flags=flags), UD)
        await _refused(ap, VtlReturn(fast=True, control_flags=flags), UD)


@pytest.mark.parametrize("value", CALL_INPUTS, ids=hex)
async def test_vtl_call_input_not_zero_is_ud(value: int) -> None:
    """A VtlCall whose input register is not 0 injects #UD into VTL0."""
    async with checked_runtime() as rt:
        ap = await _ap(await new_partition(rt))
        await _refused(ap, VtlCall(input=value), UD)


@pytest.mark.parametrize("value", RETURN_INPUTS, ids=hex)
async def test_vtl_return_input_not_0_or_1_is_ud(value: int) -> None:
    """A VtlReturn whose input register is not 0 or 1 injects #UD into VTL1."""
    async with checked_runtime() as rt:
        ap = await _ap(await new_partition(rt), stay_in_vtl1=True)
        await _refused(ap, VtlReturn(input=value), UD)


async def test_vtl_return_from_vtl0_is_ud() -> None:
    """VtlReturn from VTL0 (the lowest VTL) injects #UD, whatever its input."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        for action in (VtlReturn(), VtlReturn(fast=True), VtlReturn(input=0)):
            await _refused(vp0, action, UD)  # no VTL1 anywhere
        ap = await _ap(part)
        for action in (VtlReturn(), VtlReturn(fast=True), VtlReturn(input=1)):
            await _refused(ap, action, UD)  # VTL1 enabled on this VP


async def test_vtl_call_from_vtl1_is_ud() -> None:
    """VtlCall from VTL1 (there is no higher VTL to call) injects #UD into VTL1."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        ap = await _ap(part, stay_in_vtl1=True)
        await _refused(ap, VtlCall(), UD)
        await _refused(ap, VtlCall(input=1), UD)
        vp0 = part.vp(0)
        assert vp0.active_vtl == Vtl.VTL1
        await _refused(vp0, VtlCall(), UD)


# ---- B3: legal calls and returns -----------------------------------------------------------------


@pytest.mark.parametrize(
    "vtl_return", [VtlReturn(), VtlReturn(fast=True), VtlReturn(input=0), VtlReturn(input=1)]
)
async def test_legal_call_and_return_advance_rip_and_switch(vtl_return: VtlReturn) -> None:
    """A legal VtlCall advances VTL0's RIP by 3 and enters VTL1; a legal VtlReturn advances VTL1's."""
    async with checked_runtime() as rt:
        ap = await _ap(await new_partition(rt))
        rip0, rip1 = await _rip(ap, Vtl.VTL0), await _rip(ap, Vtl.VTL1)
        for i in range(1, 4):
            assert await ap.execute(VtlCall()) == CALLED
            assert ap.active_vtl == Vtl.VTL1
            assert await _rip(ap, Vtl.VTL0) == rip0 + 3 * i
            assert await _rip(ap, Vtl.VTL1) == rip1 + 3 * (i - 1)
            assert await ap.execute(vtl_return) == RETURNED
            assert ap.active_vtl == Vtl.VTL0
            assert await _rip(ap, Vtl.VTL1) == rip1 + 3 * i
            assert await _rip(ap, Vtl.VTL0) == rip0 + 3 * i


async def test_real_mode_vtl_call_is_legal() -> None:
    """Real mode is CPL 0 and OpenHCL has no real-mode check: VtlCall from real-mode VTL0 switches."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        vp0 = part.vp(0)
        assert (await vp0.registers(Vtl.VTL0, [Reg.CR0]))[Reg.CR0] & CR0_PE == 0  # reset: real mode
        assert await vp0.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == ok()
        context = long_mode_context(0x9000)
        assert await vp0.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=context)) == ok()
        rip = await _rip(vp0, Vtl.VTL0)
        assert await vp0.execute(VtlCall()) == CALLED
        assert vp0.active_vtl == Vtl.VTL1
        assert await _rip(vp0, Vtl.VTL0) == rip + 3


# ---- B4: state around a call/return pair ----------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True], ids=["normal", "fast"])
async def test_call_return_pair_switches_state(fast: bool) -> None:
    """Around VtlCall/VtlReturn, VTL0 keeps its private registers (RIP + 3); shared ones are VTL1's."""
    async with checked_runtime() as rt:
        vtl1_context = msgspec.structs.replace(long_mode_context(AP_VTL1_RIP), cr4=CR4_PAE | CR4_OSXSAVE)
        ap = await _ap(await new_partition(rt), vtl1_context=vtl1_context)
        # VTL0 makes its private and shared state distinctive with its own instructions.
        vtl0_lstar, vtl0_gdtr = 0xFFFF_8000_0000_1000, table(base=0xFFFF_8000_0000_2000, limit=0x57)
        vtl0_actions: tuple[Action, ...] = (
            Wrmsr(msr=Msr.LSTAR, value=vtl0_lstar),
            Wrmsr(msr=Msr.STAR, value=0x0023_0010_0000_0000),
            Wrmsr(msr=Msr.KERNEL_GS_BASE, value=0xFFFF_8000_0000_3000),
            LoadTableRegister(which="gdtr", value=vtl0_gdtr),
            MovToCr(cr=4, value=CR4_PAE | CR4_OSXSAVE),
            Xsetbv(value=0x3),
        )
        for action in vtl0_actions:
            outcome = await ap.execute(action)
            assert isinstance(outcome, Completed), (action, outcome)
        assert await ap.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0000])
        private0 = await ap.registers(Vtl.VTL0, PRIVATE)
        assert await ap.execute(VtlCall()) == CALLED

        # VTL1 changes its own private registers and the shared ones (GPRs through hypercall
        # results and XCR0 through XSETBV: SetVpRegisters cannot set GPRs, Rax is not settable).
        vtl1_lstar = 0xFFFF_9000_0000_1000
        vtl1_actions: tuple[Action, ...] = (
            Wrmsr(msr=Msr.LSTAR, value=vtl1_lstar),
            LoadTableRegister(which="gdtr", value=table(base=0xFFFF_9000_0000_2000, limit=0x37)),
            Xsetbv(value=0x7),
            WriteVtlControl(return_rax=0x1234_5678_9ABC_DEF0, return_rcx=0x0FED_CBA9_8765_4321),
        )
        for action in vtl1_actions:
            outcome = await ap.execute(action)
            assert isinstance(outcome, Completed), (action, outcome)
        assert await ap.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0001])
        left_by_vtl1 = await ap.registers(Vtl.VTL1, SHARED)
        assert left_by_vtl1[Reg.XFEM] == 0x7
        assert left_by_vtl1[Reg.RAX] == HvStatus.SUCCESS | (1 << 32)
        rip1 = await _rip(ap, Vtl.VTL1)

        assert await ap.execute(VtlReturn(fast=fast)) == RETURNED
        assert await _rip(ap, Vtl.VTL1) == rip1 + 3
        assert await ap.registers(Vtl.VTL0, PRIVATE) == private0 | {Reg.RIP: private0[Reg.RIP] + 3}
        expected_shared = dict(left_by_vtl1)
        if not fast:  # a normal return loads RAX/RCX from VTL1's VP-assist VTL control block
            expected_shared[Reg.RAX] = 0x1234_5678_9ABC_DEF0
            expected_shared[Reg.RCX] = 0x0FED_CBA9_8765_4321
        assert await ap.registers(Vtl.VTL0, SHARED) == expected_shared
        # The private registers really are per VTL.
        assert (await ap.registers(Vtl.VTL0, [Reg.LSTAR]))[Reg.LSTAR] == vtl0_lstar
        assert (await ap.registers(Vtl.VTL1, [Reg.LSTAR]))[Reg.LSTAR] == vtl1_lstar
