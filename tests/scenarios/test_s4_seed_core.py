"""DOMAIN 6, S4 (core, no secure intercepts): VTL0 enters long mode and EFER.LMA is derived.

The seed statement (issue #687): every committed change of CR0 or EFER, by SetVpRegisters from
VTL1 or by VTL0's own instructions, re-derives EFER.LMA := LME AND PG and the IA-32e entry
control (DOMAIN 3.9, 4; invariant 1). Each test runs under both commit policies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from protocol import (
    Completed,
    GetVpRegisters,
    HvRegisterName as Reg,
    MovToCr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlReturn,
    VtlSwitched,
    Wrmsr,
)
from protocol._x86 import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
    Msr,
)
from tests.guest import checked_runtime, new_partition
from tests.scenarios._bringup import ok, protected_mode_vtl0, vtl0_register

if TYPE_CHECKING:
    from runtime import Vp

pytestmark = pytest.mark.parametrize("commit_policy", ["batched", "eager"])

_PROTECTED = CR0_PE | CR0_ET
_PAGED = CR0_PE | CR0_ET | CR0_PG


def _reg(name: Reg, value: int) -> RegisterAssoc:
    return RegisterAssoc(name=name, value=value)


async def _check_long_mode(vp: Vp) -> None:
    """VTL0 is committed in long mode: CR0.PG, EFER.LMA, entry control bit 9."""
    tdx = await vp.tdx_state(Vtl.VTL0)
    assert tdx.cr0 & CR0_PG
    assert tdx.efer == EFER_LME | EFER_LMA | EFER_NXE
    assert tdx.entry_controls & VMX_ENTRY_CONTROL_LONG_MODE_GUEST
    assert tdx.long_mode_guest
    regs = await vp.registers(Vtl.VTL0, [Reg.EFER, Reg.CR0, Reg.CR4])
    assert regs == {Reg.EFER: EFER_LME | EFER_LMA | EFER_NXE, Reg.CR0: _PAGED, Reg.CR4: CR4_PAE}


async def _check_not_long_mode(vp: Vp, efer: int) -> None:
    tdx = await vp.tdx_state(Vtl.VTL0)
    assert tdx.efer == efer
    assert not tdx.efer & EFER_LMA
    assert not tdx.entry_controls & VMX_ENTRY_CONTROL_LONG_MODE_GUEST
    assert not tdx.long_mode_guest


async def test_protected_mode_setup(commit_policy: str) -> None:
    """VTL1 puts VTL0 in 32-bit protected mode with CR4.PAE: no long mode yet."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        regs = await vp.registers(Vtl.VTL0, [Reg.CR0, Reg.CR4, Reg.EFER])
        assert regs == {Reg.CR0: _PROTECTED, Reg.CR4: CR4_PAE, Reg.EFER: EFER_NXE}
        await _check_not_long_mode(vp, EFER_NXE)


async def test_lme_then_pg_in_one_set_vp_registers(commit_policy: str) -> None:
    """One SetVpRegisters [Efer=LME|NXE, Cr0=PE|ET|PG] commits EFER.LMA=1 and the IA-32e entry control."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        batch = [_reg(Reg.EFER, EFER_LME | EFER_NXE), _reg(Reg.CR0, _PAGED)]
        assert await vp.execute(SetVpRegisters(registers=batch, target_vtl=Vtl.VTL0)) == ok(2)
        await _check_long_mode(vp)
        # Nobody wrote LMA, yet VTL1 reads it back.
        assert await vtl0_register(vp, Reg.EFER) == EFER_LME | EFER_LMA | EFER_NXE


async def test_lme_then_pg_in_separate_set_vp_registers(commit_policy: str) -> None:
    """EFER.LME, then CR0.PG in separate SetVpRegisters: LMA is 0 after the first, 1 after the second."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        efer_lme = SetVpRegisters(registers=[_reg(Reg.EFER, EFER_LME | EFER_NXE)], target_vtl=Vtl.VTL0)
        assert await vp.execute(efer_lme) == ok(1)
        assert await vtl0_register(vp, Reg.EFER) == EFER_LME | EFER_NXE
        await _check_not_long_mode(vp, EFER_LME | EFER_NXE)
        assert await vp.execute(SetVpRegisters(registers=[_reg(Reg.CR0, _PAGED)], target_vtl=Vtl.VTL0)) == ok(
            1
        )
        assert await vtl0_register(vp, Reg.EFER) == EFER_LME | EFER_LMA | EFER_NXE
        await _check_long_mode(vp)


async def test_pg_then_lme_in_separate_set_vp_registers(commit_policy: str) -> None:
    """CR0.PG first (32-bit PAE paging, no LMA), then EFER.LME: the EFER write derives LMA=1."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        assert await vp.execute(SetVpRegisters(registers=[_reg(Reg.CR0, _PAGED)], target_vtl=Vtl.VTL0)) == ok(
            1
        )
        await _check_not_long_mode(vp, EFER_NXE)
        efer_lme = SetVpRegisters(registers=[_reg(Reg.EFER, EFER_LME | EFER_NXE)], target_vtl=Vtl.VTL0)
        assert await vp.execute(efer_lme) == ok(1)
        await _check_long_mode(vp)


async def test_lma_written_while_paging_off_is_overridden(commit_policy: str) -> None:
    """Variant: Efer=LME|LMA|NXE while CR0.PG=0 commits EFER=LME|NXE and entry bit 9 = 0."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        efer = SetVpRegisters(registers=[_reg(Reg.EFER, EFER_LME | EFER_LMA | EFER_NXE)], target_vtl=Vtl.VTL0)
        assert await vp.execute(efer) == ok(1)
        assert await vtl0_register(vp, Reg.EFER) == EFER_LME | EFER_NXE
        await _check_not_long_mode(vp, EFER_LME | EFER_NXE)


async def test_paging_off_clears_lma(commit_policy: str) -> None:
    """Clearing CR0.PG again through SetVpRegisters drops EFER.LMA and the IA-32e entry control."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        batch = [_reg(Reg.EFER, EFER_LME | EFER_NXE), _reg(Reg.CR0, _PAGED)]
        assert await vp.execute(SetVpRegisters(registers=batch, target_vtl=Vtl.VTL0)) == ok(2)
        await _check_long_mode(vp)
        assert await vp.execute(
            SetVpRegisters(registers=[_reg(Reg.CR0, _PROTECTED)], target_vtl=Vtl.VTL0)
        ) == ok(1)
        await _check_not_long_mode(vp, EFER_LME | EFER_NXE)


async def test_vtl0_enters_long_mode_by_itself(commit_policy: str) -> None:
    """VTL0's own WRMSR EFER (LME|NXE) then MOV CR0 (PE|PG|ET), no intercept armed: LMA derived = 1."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        out = await vp.execute(VtlReturn(fast=True))
        assert isinstance(out, VtlSwitched)
        assert out.to_vtl == Vtl.VTL0
        rip = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        # 32-bit protected mode: a hypercall result comes back in EDX:EAX.
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0000])
        regs = await vp.registers(Vtl.VTL0, [Reg.RAX, Reg.RDX])
        assert regs[Reg.RAX] & 0xFFFF_FFFF == 0
        assert regs[Reg.RDX] & 0xFFFF_FFFF == 1
        assert await vp.execute(Wrmsr(msr=Msr.EFER, value=EFER_LME | EFER_NXE)) == Completed()
        await _check_not_long_mode(vp, EFER_LME | EFER_NXE)
        assert await vp.execute(MovToCr(cr=0, value=_PAGED)) == Completed()
        await _check_long_mode(vp)
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == rip + 3 + 2 + 3
        # Long mode: the next hypercall uses the 64-bit ABI (whole result in RAX).
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS])) == ok(1, [0x3_0000])
        assert (await vp.registers(Vtl.VTL0, [Reg.RAX]))[Reg.RAX] == 1 << 32


async def test_vtl0_wrmsr_lma_alone_is_ignored(commit_policy: str) -> None:
    """VTL0 writing EFER with LMA but without paging keeps LMA clear."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        assert isinstance(await vp.execute(VtlReturn(fast=True)), VtlSwitched)
        out = await vp.execute(Wrmsr(msr=Msr.EFER, value=EFER_LME | EFER_LMA | EFER_NXE))
        assert out == Completed()
        await _check_not_long_mode(vp, EFER_LME | EFER_NXE)
