"""DOMAIN 6, S5: partial SetVpRegisters batches commit exactly their applied prefix.

Every test runs under both commit policies: the batched policy must publish the same committed
state (registers and derived TDX state) as OpenHCL's recompute-after-every-register.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from protocol import (
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlReturn,
    VtlSwitched,
)
from protocol._x86 import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_PKE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    RESET_CR0,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
)
from tests.guest import checked_runtime, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, protected_mode_vtl0, status, vtl0_register

if TYPE_CHECKING:
    from runtime import Vp

pytestmark = pytest.mark.parametrize("commit_policy", ["batched", "eager"])

_PROTECTED = CR0_PE | CR0_ET
_INVALID = HvStatus.INVALID_REGISTER_VALUE


def _reg(name: Reg, value: int) -> RegisterAssoc:
    return RegisterAssoc(name=name, value=value)


def _to_vtl0(*registers: RegisterAssoc, rep_start: int = 0) -> SetVpRegisters:
    return SetVpRegisters(registers=list(registers), target_vtl=Vtl.VTL0, rep_start=rep_start)


def _seed_batch(cr0: int, cr4: int) -> list[RegisterAssoc]:
    """DOMAIN's batch: [Efer = LME|NXE, Cr0 = cur|PG, Cr4 = cur|PKE]."""
    return [_reg(Reg.EFER, EFER_LME | EFER_NXE), _reg(Reg.CR0, cr0 | CR0_PG), _reg(Reg.CR4, cr4 | CR4_PKE)]


async def _vtl0_state(vp: Vp) -> tuple[int, int, int, bool]:
    """VTL0's committed (EFER, CR0, CR4, IA-32e entry control), cross-checked with the TDX view."""
    regs = await vp.registers(Vtl.VTL0, [Reg.EFER, Reg.CR0, Reg.CR4])
    tdx = await vp.tdx_state(Vtl.VTL0)
    assert (tdx.efer, tdx.cr0, tdx.cr4) == (regs[Reg.EFER], regs[Reg.CR0], regs[Reg.CR4])
    assert tdx.long_mode_guest == bool(tdx.entry_controls & VMX_ENTRY_CONTROL_LONG_MODE_GUEST)
    return regs[Reg.EFER], regs[Reg.CR0], regs[Reg.CR4], tdx.long_mode_guest


async def test_failing_third_element_keeps_first_two(commit_policy: str) -> None:
    """[Efer, Cr0|PG, Cr4|PKE]: InvalidRegisterValue, 2 reps; LMA=1, entry bit 9 set, CR4 unchanged."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        out = await vp.execute(
            SetVpRegisters(registers=_seed_batch(_PROTECTED, CR4_PAE), target_vtl=Vtl.VTL0)
        )
        assert out == status(_INVALID, 2)
        efer, cr0, cr4, long_mode = await _vtl0_state(vp)
        assert efer == EFER_LME | EFER_LMA | EFER_NXE
        assert cr0 == _PROTECTED | CR0_PG
        assert cr4 == CR4_PAE
        assert long_mode
        # VTL1 sees the same through the hypercall interface.
        assert await vtl0_register(vp, Reg.EFER) == EFER_LME | EFER_LMA | EFER_NXE
        assert await vtl0_register(vp, Reg.CR4) == CR4_PAE


async def test_paging_without_protection_fails_at_element_one(commit_policy: str) -> None:
    """With CR0.PE=0 the same batch fails at Cr0 (PG without PE): 1 rep, only EFER committed, LMA=0."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        out = await vp.execute(SetVpRegisters(registers=_seed_batch(RESET_CR0, 0), target_vtl=Vtl.VTL0))
        assert out == status(_INVALID, 1)
        assert await _vtl0_state(vp) == (EFER_LME | EFER_NXE, RESET_CR0, 0, False)


async def test_rep_start_one_counts_from_the_start(commit_policy: str) -> None:
    """rep_start=1 with the failing element at index 2: reps completed = 2; element 0 is never applied."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        out = await vp.execute(
            SetVpRegisters(registers=_seed_batch(_PROTECTED, CR4_PAE), target_vtl=Vtl.VTL0, rep_start=1)
        )
        assert out == status(_INVALID, 2)
        # Only Cr0|PG applied: 32-bit PAE paging, EFER untouched, no long mode.
        assert await _vtl0_state(vp) == (EFER_NXE, _PROTECTED | CR0_PG, CR4_PAE, False)


async def test_efer_without_nxe_changes_nothing(commit_policy: str) -> None:
    """[Efer without NXE] gives InvalidRegisterValue with 0 reps and changes nothing."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        before = await _vtl0_state(vp)
        assert await vp.execute(_to_vtl0(_reg(Reg.EFER, EFER_LME))) == status(_INVALID, 0)
        assert await _vtl0_state(vp) == before == (EFER_NXE, _PROTECTED, CR4_PAE, False)


async def test_cr0_paging_without_protection_refused(commit_policy: str) -> None:
    """[Cr0 = 0x8000_0000] (PG without PE) gives InvalidRegisterValue with 0 reps."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        before = await _vtl0_state(vp)
        assert await vp.execute(_to_vtl0(_reg(Reg.CR0, 0x8000_0000))) == status(_INVALID, 0)
        assert await _vtl0_state(vp) == before


async def test_cr0_reserved_bit_dropped_and_et_forced(commit_policy: str) -> None:
    """[Cr0 = cur | 0x40] succeeds with bit 6 silently dropped; ET is forced on even when cleared."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        assert await vp.execute(_to_vtl0(_reg(Reg.CR0, _PROTECTED | 0x40))) == ok(1)
        assert await vtl0_register(vp, Reg.CR0) == _PROTECTED
        assert await vp.execute(_to_vtl0(_reg(Reg.CR0, CR0_PE | 0x40))) == ok(1)
        assert await vtl0_register(vp, Reg.CR0) == _PROTECTED
        assert (await _vtl0_state(vp))[1] == _PROTECTED


async def test_rax_not_settable(commit_policy: str) -> None:
    """[Rax] gives InvalidParameter: GPRs are readable but not settable by hypercall."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        rax = (await vp.registers(Vtl.VTL0, [Reg.RAX]))[Reg.RAX]
        assert await vp.execute(_to_vtl0(_reg(Reg.RAX, 0x1234))) == status(HvStatus.INVALID_PARAMETER, 0)
        # The failed hypercall's own result went to RAX (VTL1 is in long mode): status only.
        assert (await vp.registers(Vtl.VTL1, [Reg.RAX]))[Reg.RAX] == HvStatus.INVALID_PARAMETER
        assert rax != 0x1234


async def test_vtl1_cannot_set_its_own_cr0(commit_policy: str) -> None:
    """VTL1 SetVpRegisters(target VTL1, Cr0) gives AccessDenied, explicit target or default."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        before = await vp.registers(Vtl.VTL1, [Reg.CR0])
        for target in (Vtl.VTL1, None):
            out = await vp.execute(SetVpRegisters(registers=[_reg(Reg.CR0, _PROTECTED)], target_vtl=target))
            assert out == status(HvStatus.ACCESS_DENIED, 0)
        assert await vp.registers(Vtl.VTL1, [Reg.CR0]) == before


async def test_vtl0_register_hypercalls_refused(commit_policy: str) -> None:
    """VTL0: Get(Cr0) is AccessDenied; vp_index=1 gives InvalidVpIndex on set, AccessDenied on get."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        out = await vp.execute(VtlReturn(fast=True))
        assert isinstance(out, VtlSwitched)
        assert out.to_vtl == Vtl.VTL0
        assert await vp.execute(GetVpRegisters(names=[Reg.CR0])) == status(HvStatus.ACCESS_DENIED, 0)
        assert await vp.execute(GetVpRegisters(names=[Reg.CR0], target_vtl=Vtl.VTL0)) == status(
            HvStatus.ACCESS_DENIED, 0
        )
        set_other = SetVpRegisters(registers=[_reg(Reg.VP_ASSIST_PAGE, 0)], vp_index=1)
        assert await vp.execute(set_other) == status(HvStatus.INVALID_VP_INDEX, 0)
        get_other = GetVpRegisters(names=[Reg.VSM_VP_STATUS], vp_index=1)
        assert await vp.execute(get_other) == status(HvStatus.ACCESS_DENIED, 0)
        # The same calls on VP 0's own index work.
        assert await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS], vp_index=0)) == ok(1, [0x3_0000])
        assert await vp.execute(SetVpRegisters(registers=[_reg(Reg.VP_ASSIST_PAGE, 0)], vp_index=0)) == ok(1)


async def test_get_prefix_values_on_error(commit_policy: str) -> None:
    """A GetVpRegisters failing at element 2 returns the values of elements 0-1 and 2 reps."""
    async with checked_runtime() as rt:
        vp = await protected_mode_vtl0(await new_partition(rt, commit_policy=commit_policy))
        out = await vp.execute(
            GetVpRegisters(names=[Reg.CR0, Reg.CR4, Reg.PENDING_EVENT0, Reg.EFER], target_vtl=Vtl.VTL0)
        )
        assert out == status(HvStatus.INVALID_PARAMETER, 2, [_PROTECTED, CR4_PAE])
