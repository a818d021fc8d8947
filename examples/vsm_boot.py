"""Guest VSM bring-up on a 4-VP TDX partition, step by step (DOMAIN 6, S1 and S2).

S1: the BSP (VP 0) reads the VSM status registers, enables VTL1 for the partition and for
itself, calls into VTL1, and the secure kernel configures VSM (VP secure config, VTL protections,
CR intercepts) before returning. S2: VTL1 brings up an application processor (VP 1) with VTL1
enabled, and the refusals around it. One line per step with its outcome.
Run: ``python examples/vsm_boot.py [asyncio|trio]``.
"""

from __future__ import annotations

import sys

import anyio

from protocol import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    HV_VP_INDEX_SELF,
    Action,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    InitialVpContext,
    Outcome,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
)
from runtime import Vp, open_runtime
from runtime.testing import Timeline, long_mode_context

_TIMELINE = Timeline()


def context(rip: int) -> InitialVpContext:
    """A flat 64-bit initial context at CPL 0 (what a loader hands a secure kernel or an AP)."""
    return long_mode_context(rip, rsp=rip + 0x8000)


async def step(vp: Vp, label: str, action: Action, expect: HvStatus | None = HvStatus.SUCCESS) -> Outcome:
    """Run ``action`` on ``vp``, print the timeline line and check the expected status."""
    return await _TIMELINE.step(vp, label, action, expect=expect)


def set_one(name: Reg, value: int, target_vtl: Vtl | None = None) -> SetVpRegisters:
    """SetVpRegisters of one register."""
    return SetVpRegisters(registers=[RegisterAssoc(name=name, value=value)], target_vtl=target_vtl)


async def main() -> None:
    """S1 on VP 0, then S2: VTL1 on VP 0 brings up VP 1."""
    async with open_runtime(seed=1, check_invariants=True) as rt:
        part = await rt.create_partition(vp_count=4)
        bsp = part.vp(0)
        print("S1: BSP bring-up")
        status = [Reg.VSM_CAPABILITIES, Reg.VSM_PARTITION_STATUS, Reg.VSM_VP_STATUS]
        await step(bsp, "GetVpRegisters(capabilities, partition/VP status)", GetVpRegisters(names=status))
        enable = EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)
        await step(bsp, "EnablePartitionVtl(VTL1, MBEC)", enable)
        await step(bsp, "EnablePartitionVtl(VTL1) again", enable, HvStatus.INVALID_VTL_STATE)
        vp_enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=context(0x10_0000))
        await step(bsp, "EnableVpVtl(SELF, VTL1, 64-bit context)", vp_enable)
        await step(bsp, "EnableVpVtl(SELF, VTL1) again from VTL0", vp_enable, HvStatus.ACCESS_DENIED)
        tdx = await bsp.tdx_state(Vtl.VTL1)
        print(f"    VTL1 derived: EFER={tdx.efer:#x} IA-32e entry={int(tdx.long_mode_guest)}")
        await step(bsp, "VtlCall", VtlCall(), None)
        await step(
            bsp,
            "GetVpRegisters(VsmCodePageOffsets, VsmVpStatus)",
            GetVpRegisters(names=[Reg.VSM_CODE_PAGE_OFFSETS, Reg.VSM_VP_STATUS]),
        )
        await step(
            bsp, "SetVpRegisters(VsmVpSecureConfigVtl0 = MBEC)", set_one(Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x1)
        )
        await step(bsp, "SetVpRegisters(VsmPartitionConfig = 0x1F)", set_one(Reg.VSM_PARTITION_CONFIG, 0x1F))
        await step(
            bsp,
            "SetVpRegisters(VsmPartitionConfig = 0x1E)",
            set_one(Reg.VSM_PARTITION_CONFIG, 0x1E),
            HvStatus.INVALID_REGISTER_VALUE,
        )
        intercepts = SetVpRegisters(
            registers=[
                RegisterAssoc(name=Reg.CR_INTERCEPT_CR0_MASK, value=CR0_PE | CR0_PG),
                RegisterAssoc(name=Reg.CR_INTERCEPT_CR4_MASK, value=CR4_PAE),
                RegisterAssoc(name=Reg.CR_INTERCEPT_CONTROL, value=0x4043),
            ]
        )
        await step(bsp, "SetVpRegisters(Cr0Mask, Cr4Mask, CrInterceptControl 0x4043)", intercepts)
        await step(
            bsp,
            "EnableVpVtl(VP0, VTL1) from VTL1",
            EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=context(0x10_0000)),
            HvStatus.VTL_ALREADY_ENABLED,
        )

        print("S2: VTL1 brings up VP 1")
        ap_enable = EnableVpVtl(vp_index=1, target_vtl=Vtl.VTL1, context=context(0x30_0000))
        await step(bsp, "EnableVpVtl(VP1, VTL1)", ap_enable)
        ap_start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=context(0x40_0000))
        await step(bsp, "StartVirtualProcessor(VP1, VTL0)", ap_start)
        await step(bsp, "StartVirtualProcessor(VP1, VTL0) again", ap_start, HvStatus.INVALID_VP_STATE)
        await step(
            bsp,
            "StartVirtualProcessor(VP2, VTL1) before EnableVpVtl(VP2)",
            StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL1, context=context(0x50_0000)),
            HvStatus.INVALID_VP_STATE,
        )
        await step(
            bsp,
            "StartVirtualProcessor(VP0, VTL0) (itself)",
            StartVirtualProcessor(vp_index=0, target_vtl=Vtl.VTL0, context=context(0x50_0000)),
            HvStatus.INVALID_VP_INDEX,
        )
        ap = part.vp(1)
        rips = {vtl: (await ap.registers(vtl, [Reg.RIP]))[Reg.RIP] for vtl in (Vtl.VTL1, Vtl.VTL0)}
        print(
            f"    VP1 loaded: VTL1 at {rips[Vtl.VTL1]:#x}, VTL0 at {rips[Vtl.VTL0]:#x};"
            f" active {ap.active_vtl.name}"
        )
        await step(
            ap, "GetVpRegisters(VsmVpStatus) (VTL1 runs first)", GetVpRegisters(names=[Reg.VSM_VP_STATUS])
        )
        await step(ap, "VtlReturn(fast)", VtlReturn(fast=True), None)
        await step(
            bsp,
            "SetVpRegisters(VsmPartitionConfig = 0x5F, DenyLowerVtlStartup)",
            set_one(Reg.VSM_PARTITION_CONFIG, 0x5F),
        )
        await step(bsp, "VtlReturn(fast)", VtlReturn(fast=True), None)
        await step(
            bsp,
            "EnableVpVtl(VP2, VTL1) from VTL0",
            EnableVpVtl(vp_index=2, target_vtl=Vtl.VTL1, context=context(0x50_0000)),
            HvStatus.ACCESS_DENIED,
        )
        await step(
            bsp,
            "StartVirtualProcessor(VP3, VTL0) from VTL0",
            StartVirtualProcessor(vp_index=3, target_vtl=Vtl.VTL0, context=context(0x60_0000)),
            HvStatus.ACCESS_DENIED,
        )
        assert bsp.active_vtl == Vtl.VTL0
        assert ap.active_vtl == Vtl.VTL0
        print("VSM boot complete: VTL1 enabled on VP 0 and VP 1, both back in VTL0")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
