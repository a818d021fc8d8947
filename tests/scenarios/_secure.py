"""Shared steps of the secure-intercept scenarios (S4 with intercepts, S6, S7, S8, B6).

Builds on ``_bringup`` (S1 steps 2-4): the remaining S1 steps, VTL1's SynIC set-up for
intercept delivery, arming CrInterceptControl, and small register helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import (
    GetVpRegisters,
    HvRegisterName as Reg,
    Outcome,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlReturn,
    VtlSwitched,
)
from tests.scenarios._bringup import enter_vtl1, ok

if TYPE_CHECKING:
    from runtime import Partition, Vp

__all__ = (
    "SIMP_ENABLED",
    "SINT0_AUTO_EOI",
    "SINT0_MASKED",
    "SINT0_POLLING",
    "SINT0_PROXY",
    "SINT0_UNMASKED",
    "arm",
    "enable_synic",
    "reg",
    "regs",
    "return_to_vtl0",
    "s1_setup",
    "set_regs",
)

#: VTL1's SynIC message page (SIMP): GPN 0x80, enabled (bit 0).
SIMP_ENABLED: Final = 0x80 << 12 | 1
#: SINT0 with vector 0x30, unmasked (bit 16 clear).
SINT0_UNMASKED: Final = 0x30
#: SINT0 with vector 0x30, unmasked, auto-EOI (bit 17), as opentmk's register-intercept test.
SINT0_AUTO_EOI: Final = 0x30 | 1 << 17
#: SINT0 with vector 0x30 but masked (bit 16): the reset state of every SINT is masked.
SINT0_MASKED: Final = 0x30 | 1 << 16
#: SINT0 bits: polling (18; no interrupt, DOMAIN 7.3) and proxy (20).
SINT0_POLLING: Final = 0x30 | 1 << 18
SINT0_PROXY: Final = 1 << 20


def reg(name: Reg, value: int) -> RegisterAssoc:
    """One SetVpRegisters element."""
    return RegisterAssoc(name=name, value=value)


async def set_regs(vp: Vp, *pairs: tuple[Reg, int], target_vtl: Vtl | None = None) -> Outcome:
    """SetVpRegisters of ``pairs`` (in order) from the active VTL."""
    registers = [reg(name, value) for name, value in pairs]
    return await vp.execute(SetVpRegisters(registers=registers, target_vtl=target_vtl))


async def regs(vp: Vp, vtl: Vtl, *names: Reg) -> dict[Reg, int]:
    """Committed values of ``names`` in ``vtl`` (simulator inspection, not a hypercall)."""
    return await vp.registers(vtl, list(names))


async def s1_setup(part: Partition, *, mbec: bool = True) -> Vp:
    """DOMAIN S1 steps 1-7 on VP 0, every status checked; VP 0 is left in VTL1.

    Step 1 reads the VSM status registers from VTL0, steps 2-4 enable VTL1 and call into it
    (``enter_vtl1``), step 5 reads the code page offsets, step 6 sets VsmVpSecureConfigVtl0 to
    the partition's MBEC setting and step 7 enables VTL protections with an RWX default (0x1F).
    """
    vp = part.vp(0)
    status = GetVpRegisters(names=[Reg.VSM_CAPABILITIES, Reg.VSM_PARTITION_STATUS, Reg.VSM_VP_STATUS])
    assert await vp.execute(status) == ok(3, [0x2_0002, 0x1_0001, 0x1_0000])
    vp = await enter_vtl1(part, mbec=mbec)
    assert await vp.execute(GetVpRegisters(names=[Reg.VSM_CODE_PAGE_OFFSETS])) == ok(1, [0x2_600F])
    assert await set_regs(vp, (Reg.VSM_VP_SECURE_CONFIG_VTL0, int(mbec))) == ok(1)
    assert await set_regs(vp, (Reg.VSM_PARTITION_CONFIG, 0x1F)) == ok(1)
    assert await vp.execute(GetVpRegisters(names=[Reg.VSM_PARTITION_CONFIG])) == ok(1, [0x1F])
    return vp


async def enable_synic(vp: Vp, *, simp: int = SIMP_ENABLED, sint0: int = SINT0_UNMASKED) -> None:
    """VTL1 enables its SynIC message page and SINT0, where OpenHCL posts secure intercepts.

    DOMAIN's scenarios take this for granted; a real secure kernel does it during boot, and
    OpenHCL drops an intercept message it cannot post (SIMP disabled, SINT0 masked).
    """
    assert vp.active_vtl == Vtl.VTL1
    assert await set_regs(vp, (Reg.SIPP, simp), (Reg.SINT0, sint0)) == ok(2)


async def arm(vp: Vp, control: int, *, cr0_mask: int = 0, cr4_mask: int = 0) -> None:
    """VTL1 writes the CR0/CR4 masks, then CrInterceptControl (which registers them)."""
    assert vp.active_vtl == Vtl.VTL1
    out = await set_regs(
        vp,
        (Reg.CR_INTERCEPT_CR0_MASK, cr0_mask),
        (Reg.CR_INTERCEPT_CR4_MASK, cr4_mask),
        (Reg.CR_INTERCEPT_CONTROL, control),
    )
    assert out == ok(3), out
    names = [Reg.CR_INTERCEPT_CONTROL, Reg.CR_INTERCEPT_CR0_MASK, Reg.CR_INTERCEPT_CR4_MASK]
    assert await vp.execute(GetVpRegisters(names=names)) == ok(3, [control, cr0_mask, cr4_mask])


async def return_to_vtl0(vp: Vp) -> None:
    """Fast VtlReturn from VTL1 (RAX/RCX are not reloaded)."""
    assert await vp.execute(VtlReturn(fast=True)) == VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=0)
    assert vp.active_vtl == Vtl.VTL0
