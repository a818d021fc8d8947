"""The seed story: VTL1 puts VTL0 into long mode through SetVpRegisters (DOMAIN 6 S4's core).

VTL0 boots in 32-bit protected mode with PAE. VTL1 (the secure kernel) sets VTL0's EFER.LME and
then CR0.PG through HvCallSetVpRegisters. Nobody writes EFER.LMA: OpenHCL's TDX backing derives
it (LMA = LME AND PG) and sets the VM-entry "IA-32e mode guest" control, and so does tdvsm, in
one atomic commit. Run: ``python examples/seed_scenario.py [asyncio|trio]``.
"""

from __future__ import annotations

import sys

import anyio

from protocol import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EnablePartitionVtl,
    EnableVpVtl,
    HvRegisterName as Reg,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
)
from runtime import Vp, open_runtime
from runtime.testing import long_mode_context

VTL1_ENTRY = 0xFFFF_8000_0010_0000
VTL1_CONTEXT = long_mode_context(VTL1_ENTRY, rsp=VTL1_ENTRY + 0x8000)


async def show(vp: Vp, label: str) -> None:
    """Print VTL0's committed execution mode."""
    state = await vp.tdx_state(Vtl.VTL0)
    print(
        f"{label:<34} EFER={state.efer:#07x} (LME={state.efer >> 8 & 1} LMA={state.efer >> 10 & 1})"
        f"  CR0={state.cr0:#010x} (PG={state.cr0 >> 31})  IA-32e entry={int(state.long_mode_guest)}"
        f"  commits={state.commits} vmcs_writes={state.vmcs_writes}"
    )


async def main() -> None:
    """Boot VSM on VP 0, let VTL1 switch VTL0 to long mode, print the derived state."""
    async with open_runtime(seed=1, check_invariants=True) as rt:
        part = await rt.create_partition(vp_count=4)
        vp = part.vp(0)
        await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True))
        await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=VTL1_CONTEXT))
        print(await vp.execute(VtlCall()))
        # VTL1 puts VTL0 into 32-bit protected mode with PAE (as a boot loader would have).
        protected = [
            RegisterAssoc(name=Reg.CR0, value=CR0_PE | CR0_ET),
            RegisterAssoc(name=Reg.CR4, value=CR4_PAE),
        ]
        print(await vp.execute(SetVpRegisters(registers=protected, target_vtl=Vtl.VTL0)))
        await show(vp, "VTL0 in protected mode:")
        lme = RegisterAssoc(name=Reg.EFER, value=EFER_LME | EFER_NXE)
        print(await vp.execute(SetVpRegisters(registers=[lme], target_vtl=Vtl.VTL0)))
        await show(vp, "after VTL1 sets EFER.LME:")
        pg = RegisterAssoc(name=Reg.CR0, value=CR0_PE | CR0_ET | CR0_PG)
        paging = SetVpRegisters(registers=[pg], target_vtl=Vtl.VTL0)
        print(await vp.execute(paging))
        await show(vp, "after VTL1 sets CR0.PG:")
        print(await vp.execute(VtlReturn(fast=True)))
        efer = (await vp.registers(Vtl.VTL0, [Reg.EFER]))[Reg.EFER]
        assert efer & EFER_LMA, "EFER.LMA must be derived"
        print(f"VTL0 runs in long mode: EFER.LMA derived = {efer >> 10 & 1}")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
