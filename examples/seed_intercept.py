"""The seed story with the real secure intercept (DOMAIN 6, S4; DOMAIN 3.8, 3.9).

VTL1 (the secure kernel) arms a CR0 intercept on PG. VTL0, in 32-bit protected mode with PAE,
sets EFER.LME itself (WRMSR, not intercepted) and then executes MOV CR0 with PG: the write exits
to OpenHCL, which does not apply it but posts a register-intercept message to VTL1's SINT0 and
enters VTL1. VTL1 emulates the MOV with SetVpRegisters (CR0, then RIP past the instruction); that
path derives EFER.LMA = LME AND PG and the IA-32e entry control, and VTL0 resumes in long mode.
One line per step. Run: ``python examples/seed_intercept.py [asyncio|trio]``.
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
    HV_VP_INDEX_SELF,
    Action,
    ClearMessageSlot,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HypercallResult,
    Intercepted,
    MovToCr,
    Msr,
    Outcome,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
    Wrmsr,
)
from runtime import Vp, open_runtime
from runtime.testing import Timeline, long_mode_context

_TIMELINE = Timeline()
VTL1_CONTEXT = long_mode_context(0xFFFF_8000_0010_0000, rsp=0xFFFF_8000_0010_8000)
PROTECTED = CR0_PE | CR0_ET
PAGED = PROTECTED | CR0_PG


async def step(vp: Vp, label: str, action: Action) -> Outcome:
    """Run ``action`` on ``vp`` and print the timeline line."""
    return await _TIMELINE.step(vp, label, action)


async def mode(vp: Vp, label: str) -> bool:
    """Print VTL0's committed execution mode; return whether it is in long mode."""
    state = await vp.tdx_state(Vtl.VTL0)
    print(
        f"{'':10}{label:<62}    VTL0 CR0={state.cr0:#010x} EFER={state.efer:#06x} "
        f"(LME={state.efer >> 8 & 1} LMA={state.efer >> 10 & 1}) IA-32e entry={int(state.long_mode_guest)}"
    )
    return state.long_mode_guest


def assoc(*pairs: tuple[Reg, int]) -> list[RegisterAssoc]:
    """SetVpRegisters elements."""
    return [RegisterAssoc(name=name, value=value) for name, value in pairs]


async def main() -> None:
    """Boot VSM on VP 0, arm the CR0.PG intercept, let VTL0 hit it and VTL1 emulate it."""
    async with open_runtime(seed=1, check_invariants=True) as rt:
        vp = (await rt.create_partition(vp_count=4)).vp(0)
        await step(
            vp, "EnablePartitionVtl(VTL1, MBEC)", EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=True)
        )
        await step(
            vp,
            "EnableVpVtl(SELF, VTL1)",
            EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=VTL1_CONTEXT),
        )
        await step(vp, "VtlCall", VtlCall())
        setup = assoc((Reg.VSM_VP_SECURE_CONFIG_VTL0, 0x1), (Reg.VSM_PARTITION_CONFIG, 0x1F))
        await step(
            vp, "SetVpRegisters(VsmVpSecureConfigVtl0, VsmPartitionConfig)", SetVpRegisters(registers=setup)
        )
        # A secure kernel enables its SynIC message page and SINT0 so that messages can arrive.
        synic = assoc((Reg.SIPP, 0x80 << 12 | 1), (Reg.SINT0, 0x30))
        await step(vp, "SetVpRegisters(SIMP enabled, SINT0 vector 0x30)", SetVpRegisters(registers=synic))
        arm = assoc((Reg.CR_INTERCEPT_CR0_MASK, CR0_PG), (Reg.CR_INTERCEPT_CONTROL, 0x1))
        await step(
            vp, "SetVpRegisters(Cr0Mask = PG, CrInterceptControl = Cr0Write)", SetVpRegisters(registers=arm)
        )
        vtl0 = assoc((Reg.CR0, PROTECTED), (Reg.CR4, CR4_PAE))
        await step(
            vp,
            "SetVpRegisters(VTL0 CR0 = PE|ET, CR4 = PAE)",
            SetVpRegisters(registers=vtl0, target_vtl=Vtl.VTL0),
        )
        await step(vp, "VtlReturn(fast)", VtlReturn(fast=True))
        await mode(vp, "VTL0 in 32-bit protected mode:")
        await step(
            vp, "WRMSR EFER = LME|NXE (not intercepted)", Wrmsr(msr=Msr.EFER, value=EFER_LME | EFER_NXE)
        )
        await mode(vp, "after VTL0 sets EFER.LME:")
        out = await step(vp, "MOV CR0, PE|ET|PG", MovToCr(cr=0, value=PAGED))
        assert isinstance(out, Intercepted), out
        message = out.message
        assert await vp.sint0_message(Vtl.VTL1) == message
        assert not await mode(vp, "the MOV was not applied:")
        emulate = assoc((Reg.CR0, message.value or 0), (Reg.RIP, message.rip + message.instruction_length))
        await step(
            vp,
            "SetVpRegisters(VTL0 CR0 = new value, RIP += 3)",
            SetVpRegisters(registers=emulate, target_vtl=Vtl.VTL0),
        )
        assert await mode(vp, "after VTL1 emulates the MOV:")
        out = await step(
            vp, "GetVpRegisters(VTL0 EFER)", GetVpRegisters(names=[Reg.EFER], target_vtl=Vtl.VTL0)
        )
        assert isinstance(out, HypercallResult)
        assert out.values[0] & EFER_LMA
        # The secure kernel frees the SINT0 slot by writing HvMessageTypeNone into its header
        # (EOM would not free it, DOMAIN 7.3).
        await step(vp, "ClearMessageSlot(SINT0)", ClearMessageSlot())
        await step(vp, "VtlReturn(fast)", VtlReturn(fast=True))
        await step(vp, "GetVpRegisters(VsmVpStatus)", GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        rax = (await vp.registers(Vtl.VTL0, [Reg.RAX]))[Reg.RAX]
        print(f"    the result came back in RAX as one 64-bit value: RAX={rax:#x}")
        assert rax == 1 << 32
        print("VTL0 resumed in long mode after the intercepted MOV CR0: EFER.LMA derived = 1")


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1] if len(sys.argv) > 1 else "asyncio")
