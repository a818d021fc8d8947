"""Shared steps of the scenario tests: VSM bring-up on VP 0 and small result helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import (
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlSwitched,
)
from protocol._x86 import CR0_ET, CR0_PE, CR4_PAE
from tests.guest import long_mode_context

if TYPE_CHECKING:
    from runtime import Partition, Vp

__all__ = ("VTL1_RIP", "enter_vtl1", "ok", "protected_mode_vtl0", "status", "vtl0_register")

#: Where VTL1's initial context starts on VP 0.
VTL1_RIP = 0x10_0000


def ok(reps: int = 0, values: list[int] | None = None) -> HypercallResult:
    """A successful hypercall result."""
    return HypercallResult(status=HvStatus.SUCCESS, reps_completed=reps, values=values or [])


def status(code: HvStatus, reps: int = 0, values: list[int] | None = None) -> HypercallResult:
    """A hypercall result with ``code``."""
    return HypercallResult(status=code, reps_completed=reps, values=values or [])


async def enter_vtl1(part: Partition, *, mbec: bool = True) -> Vp:
    """S1 steps 2-4 on VP 0: enable VTL1 for the partition and VP 0, then VtlCall into VTL1."""
    vp = part.vp(0)
    assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=mbec)) == ok()
    context = long_mode_context(VTL1_RIP)
    assert (
        await vp.execute(EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context)) == ok()
    )
    assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)
    assert vp.active_vtl == Vtl.VTL1
    return vp


async def protected_mode_vtl0(part: Partition) -> Vp:
    """VP 0 in VTL1 after VTL1 put VTL0 in 32-bit protected mode with CR4.PAE, paging off."""
    vp = await enter_vtl1(part)
    out = await vp.execute(
        SetVpRegisters(
            registers=[
                RegisterAssoc(name=Reg.CR0, value=CR0_PE | CR0_ET),
                RegisterAssoc(name=Reg.CR4, value=CR4_PAE),
            ],
            target_vtl=Vtl.VTL0,
        )
    )
    assert out == ok(2)
    return vp


async def vtl0_register(vp: Vp, name: Reg) -> int:
    """VTL1 reads one VTL0 register with GetVpRegisters (target VTL0)."""
    out = await vp.execute(GetVpRegisters(names=[name], target_vtl=Vtl.VTL0))
    assert isinstance(out, HypercallResult)
    assert out.status == HvStatus.SUCCESS, out
    return out.values[0]
