"""The seed story: VTL1 puts VTL0 into long mode through SetVpRegisters (DOMAIN 6 S4's core).

VTL0 boots in 32-bit protected mode with PAE. VTL1 (the secure kernel) sets VTL0's EFER.LME and
then CR0.PG through HvCallSetVpRegisters. Nobody writes EFER.LMA: OpenHCL's TDX backing derives
it (LMA = LME AND PG) and sets the VM-entry "IA-32e mode guest" control, and so does tdvsm, in
one atomic commit. The story runs under both commit policies and prints the modelled TDCALLs
of VTL0 (DOMAIN 7.1): eager is OpenHCL's pattern, batched the write-back. Then the breakage:
the same steps without CR4.PAE are accepted, and VTL0's next VM entry ends the partition
(DOMAIN 7.2). Run: ``python examples/seed_scenario.py [asyncio|trio]``.
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
    Msr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
)
from runtime import PartitionFailed, Vp, open_runtime
from runtime.testing import long_mode_context

VTL1_ENTRY = 0xFFFF_8000_0010_0000
VTL1_CONTEXT = long_mode_context(VTL1_ENTRY, rsp=VTL1_ENTRY + 0x8000)


async def show(vp: Vp, label: str) -> None:
    """Print VTL0's committed execution mode."""
    state = await vp.tdx_state(Vtl.VTL0)
    print(
        f"{label:<34} EFER={state.efer:#07x} (LME={state.efer >> 8 & 1} LMA={state.efer >> 10 & 1})"
        f"  CR0={state.cr0:#010x} (PG={state.cr0 >> 31})  IA-32e entry={int(state.long_mode_guest)}"
        f"  TDG.VP.RD={state.vmcs_reads} TDG.VP.WR={state.vmcs_writes}"
    )


async def switch_to_long_mode(vp: Vp, *, pae: bool) -> None:
    """VSM on VP 0; VTL1 puts VTL0 in protected mode (with or without PAE), then LME, then PG."""
    await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True))
    await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=VTL1_CONTEXT))
    print(await vp.execute(VtlCall()))
    # VTL1 puts VTL0 into 32-bit protected mode (as a boot loader would have).
    protected = [
        RegisterAssoc(name=Reg.CR0, value=CR0_PE | CR0_ET),
        RegisterAssoc(name=Reg.CR4, value=CR4_PAE if pae else 0),
    ]
    print(await vp.execute(SetVpRegisters(registers=protected, target_vtl=Vtl.VTL0)))
    await show(vp, "VTL0 in protected mode:")
    lme = RegisterAssoc(name=Reg.EFER, value=EFER_LME | EFER_NXE)
    print(await vp.execute(SetVpRegisters(registers=[lme], target_vtl=Vtl.VTL0)))
    await show(vp, "after VTL1 sets EFER.LME:")
    pg = RegisterAssoc(name=Reg.CR0, value=CR0_PE | CR0_ET | CR0_PG)
    print(await vp.execute(SetVpRegisters(registers=[pg], target_vtl=Vtl.VTL0)))
    await show(vp, "after VTL1 sets CR0.PG:")
    print(await vp.execute(VtlReturn(fast=True)))


async def main() -> None:
    """Let VTL1 switch VTL0 to long mode under both policies; then the same without PAE."""
    async with open_runtime(seed=1, check_invariants=True) as rt:
        for policy in ("eager", "batched"):
            print(f"== commit policy {policy}")
            vp = (await rt.create_partition(vp_count=4, commit_policy=policy)).vp(0)
            await switch_to_long_mode(vp, pae=True)
            efer = (await vp.registers(Vtl.VTL0, [Reg.EFER]))[Reg.EFER]
            assert efer & EFER_LMA, "EFER.LMA must be derived"
            await show(vp, "VTL0 entered (its first commit):")
        print(f"VTL0 runs in long mode: EFER.LMA derived = {efer >> 10 & 1}")
        print("== without CR4.PAE: OpenHCL derives LMA anyway, and VTL0's VM entry fails")
        part = await rt.create_partition(vp_count=4)
        await switch_to_long_mode(part.vp(0), pae=False)
        try:
            await part.vp(0).execute(Rdmsr(msr=Msr.APIC_BASE))
        except PartitionFailed as exc:
            print(f"PartitionFailed: {exc}")
        assert part.failure is not None


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
