"""DOMAIN 6, S7: an MSR write intercept (opentmk ``hv_register_intercept``), DOMAIN 2.5 and 3.8.

VTL1 enables its SynIC message page and SINT0 (vector 0x30, auto-EOI), arms ApicBaseMsrWrite
(CrInterceptControl = 0x1000) and returns; VTL0's WRMSR of IA32_APIC_BASE (0x1B) becomes an MSR
intercept message {0x80010001, msr 0x1B, RAX = low 32 bits, RDX = high 32 bits} in VTL1's SINT0,
VTL1 is entered, and the write is not applied. Read bits and the SGX launch-control bit are not
supported on CVMs: InvalidRegisterValue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest

from protocol import (
    Completed,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    Intercepted,
    InterceptMessage,
    Vtl,
    Wrmsr,
)
from protocol._x86 import Msr
from tests.guest import checked_runtime, new_partition
from tests.scenarios._bringup import ok, status
from tests.scenarios._secure import (
    SIMP_ENABLED,
    SINT0_AUTO_EOI,
    enable_synic,
    regs,
    return_to_vtl0,
    s1_setup,
    set_regs,
)

if TYPE_CHECKING:
    from runtime import Partition, Vp

pytestmark = pytest.mark.parametrize("commit_policy", ["batched", "eager"])

_APIC_BASE_WRITE: Final = 0x1000
_MSR_INTERCEPT: Final = 0x8001_0001
#: EDX:EAX of the intercepted write: a different APIC base (bit 8 BSP cleared) with high bits.
_VALUE: Final = 0x0000_0001_FEE0_0800


async def _armed(part: Partition) -> Vp:
    """S1 steps 1-7; VTL1 enables SIMP and SINT0 (0x30, auto-EOI) and arms ApicBaseMsrWrite."""
    vp = await s1_setup(part)
    await enable_synic(vp, sint0=SINT0_AUTO_EOI)
    assert await vp.execute(GetVpRegisters(names=[Reg.SIPP, Reg.SINT0])) == ok(2, [SIMP_ENABLED, 0x2_0030])
    assert await set_regs(vp, (Reg.CR_INTERCEPT_CONTROL, _APIC_BASE_WRITE)) == ok(1)
    assert await vp.execute(GetVpRegisters(names=[Reg.CR_INTERCEPT_CONTROL])) == ok(1, [_APIC_BASE_WRITE])
    return vp


async def test_apic_base_write_is_intercepted(commit_policy: str) -> None:
    """VTL0 WRMSR 0x1B: MSR intercept {0x80010001, msr 0x1B, rax/rdx}; not applied; VTL1 entered."""
    async with checked_runtime() as rt:
        vp = await _armed(await new_partition(rt, commit_policy=commit_policy))
        await return_to_vtl0(vp)
        before = await regs(vp, Vtl.VTL0, Reg.APIC_BASE, Reg.RIP, Reg.RFLAGS)
        out = await vp.execute(Wrmsr(msr=Msr.APIC_BASE, value=_VALUE))
        message = InterceptMessage(
            message_type=_MSR_INTERCEPT,
            vp_index=0,
            instruction_length=2,
            access_type=1,  # WRITE
            rip=before[Reg.RIP],
            rflags=before[Reg.RFLAGS],
            execution_state=0,
            msr=0x1B,
            rax=0xFEE0_0800,
            rdx=0x1,
        )
        assert out == Intercepted(message=message)
        assert vp.active_vtl == Vtl.VTL1
        assert await vp.sint0_message(Vtl.VTL1) == message
        assert await regs(vp, Vtl.VTL0, Reg.APIC_BASE, Reg.RIP, Reg.RFLAGS) == before


async def test_same_write_completes_when_not_armed(commit_policy: str) -> None:
    """With CrInterceptControl back at 0 the WRMSR exits to OpenHCL only: no intercept.

    OpenHCL refuses an APIC base change (#GP) and accepts rewriting the current value.
    """
    async with checked_runtime() as rt:
        vp = await _armed(await new_partition(rt, commit_policy=commit_policy))
        assert await set_regs(vp, (Reg.CR_INTERCEPT_CONTROL, 0)) == ok(1)
        await return_to_vtl0(vp)
        before = await regs(vp, Vtl.VTL0, Reg.APIC_BASE, Reg.RIP)
        gp = ExceptionInjected(vector=13, error_code=0)
        assert await vp.execute(Wrmsr(msr=Msr.APIC_BASE, value=_VALUE)) == gp
        assert await vp.execute(Wrmsr(msr=Msr.APIC_BASE, value=before[Reg.APIC_BASE])) == Completed()
        assert vp.active_vtl == Vtl.VTL0
        assert await vp.sint0_message(Vtl.VTL1) is None
        assert await regs(vp, Vtl.VTL0, Reg.APIC_BASE, Reg.RIP) == {
            Reg.APIC_BASE: before[Reg.APIC_BASE],
            Reg.RIP: before[Reg.RIP] + 2,
        }


async def test_vtl1_apic_base_write_is_not_intercepted(commit_policy: str) -> None:
    """VTL1's own WRMSR 0x1B never produces an intercept (only VTL0 writes are intercepted)."""
    async with checked_runtime() as rt:
        vp = await _armed(await new_partition(rt, commit_policy=commit_policy))
        apic = (await regs(vp, Vtl.VTL1, Reg.APIC_BASE))[Reg.APIC_BASE]
        assert await vp.execute(Wrmsr(msr=Msr.APIC_BASE, value=apic)) == Completed()
        assert vp.active_vtl == Vtl.VTL1
        assert await vp.sint0_message(Vtl.VTL1) is None


@pytest.mark.parametrize(
    "control",
    [
        pytest.param(0x8, id="Ia32MiscEnableRead"),
        pytest.param(0x100_0000, id="MsrSgxLaunchControlWrite"),
        pytest.param(0x20, id="MsrLstarRead"),
        pytest.param(0x800, id="ApicBaseMsrRead"),
        pytest.param(0x2000, id="MsrEferRead"),
        pytest.param(0x1000 | 0x8, id="write-plus-read"),
        pytest.param(1 << 29, id="reserved-29"),
        pytest.param(1 << 63, id="reserved-63"),
    ],
)
async def test_unsupported_control_bits_are_refused(commit_policy: str, control: int) -> None:
    """A read bit, the SGX bit or a reserved bit: InvalidRegisterValue, 0 reps, control unchanged."""
    async with checked_runtime() as rt:
        vp = await _armed(await new_partition(rt, commit_policy=commit_policy))
        out = await set_regs(vp, (Reg.CR_INTERCEPT_CONTROL, control))
        assert out == status(HvStatus.INVALID_REGISTER_VALUE)
        assert await vp.execute(GetVpRegisters(names=[Reg.CR_INTERCEPT_CONTROL])) == ok(1, [_APIC_BASE_WRITE])
        await return_to_vtl0(vp)
        out = await vp.execute(Wrmsr(msr=Msr.APIC_BASE, value=_VALUE))
        assert isinstance(out, Intercepted)  # the earlier registration still holds
