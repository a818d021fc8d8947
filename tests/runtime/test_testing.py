"""``runtime.testing``: readable outcomes (register values in hex) and the step timeline."""

from __future__ import annotations

import re

from protocol import (
    Completed,
    ExceptionInjected,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    Intercepted,
    InterceptMessage,
    Msr,
    Rdmsr,
    Vtl,
    VtlSwitched,
)
from runtime import open_runtime
from runtime.testing import Timeline, describe


def _message(**fields: int) -> InterceptMessage:
    return InterceptMessage(
        message_type=0x8001_0006,
        vp_index=0,
        instruction_length=3,
        access_type=1,
        rip=0xFFFF_F800_1234,
        rflags=0x202,
        **fields,
    )


def test_describe_shows_register_values_in_hex() -> None:
    """Values, RIPs, MSRs and GPAs are hex; registers are named; exceptions by mnemonic."""
    assert describe(
        HypercallResult(status=HvStatus.SUCCESS, reps_completed=2, values=[0x8005_0033, 255])
    ) == ("SUCCESS (reps 2) values 0x80050033, 0xff")
    assert describe(Completed(value=0xFEE0_0900)) == "completed, value 0xfee00900"
    assert describe(Completed()) == "completed"
    intercepted = describe(Intercepted(message=_message(register_name=Reg.CR0, value=0x8005_0033)))
    assert "register CR0 (0x40000) value 0x80050033" in intercepted
    assert "rip 0xfffff8001234" in intercepted
    assert "msr 0xc0000082" in describe(Intercepted(message=_message(msr=Msr.LSTAR)))
    assert "gpa 0x1000000" in describe(Intercepted(message=_message(gpa=0x100_0000)))
    assert (
        describe(ExceptionInjected(vector=13, error_code=0))
        == "exception #GP (vector 13, error code 0x0) injected"
    )
    assert describe(ExceptionInjected(vector=6)) == "exception #UD (vector 6) injected"
    assert describe(VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)) == "now in VTL1 (entry reason 1)"


async def test_timeline_and_tdx_state_read_in_hex() -> None:
    """A timeline line shows the outcome in hex; TdxL2State's repr shows its fields in hex."""
    lines: list[str] = []
    async with open_runtime(seed=1) as rt:
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        await Timeline(lines.append).step(vp, "read APIC_BASE", Rdmsr(msr=Msr.APIC_BASE))
        state = repr(await vp.tdx_state(Vtl.VTL0))
    assert lines == [f" 1. VP0 VTL0  {'read APIC_BASE':<58} -> completed, value 0xfee00900"]
    assert state.startswith("TdxL2State(vtl=Vtl.VTL0, efer=0x")
    assert "cr0_guest_host_mask=0xfffffffffffaffe1" in state
    assert re.search(r"vmcs_writes=\d+\b", state)  # a count: decimal
    assert re.search(r"commits=\d+\b", state)
