"""DOMAIN 6, S4 with the secure intercept: VTL0's CR0.PG write is intercepted, VTL1 emulates it.

Setup as S1 steps 1-7; VTL1 enables its SynIC message page and SINT0, then sets Cr0Mask = PG
and CrInterceptControl = Cr0Write (0x1). DOMAIN's S4 text does not mention the SynIC step, but
a real secure kernel does it, and OpenHCL cannot post the intercept message into a masked SINT0
(every SINT starts masked): the message would be dropped and VTL0 would re-execute the MOV for
ever. The dropped-message path and the slot rules of DOMAIN 7.3 (a disabled SIMP still gets
the message, EOM frees nothing, HvMessageTypeNone in the header does, MessagePending) are
tested at the end.

VTL0 runs in 32-bit protected mode with CR4.PAE (set by VTL1 through SetVpRegisters), sets
EFER.LME with WRMSR (not intercepted), then MOV CR0 with PG exits to VTL1 (DOMAIN 3.8). VTL1
completes the write with SetVpRegisters (Cr0, Rip + 3), and OpenHCL derives EFER.LMA and the
IA-32e entry control from it (DOMAIN 3.9, 4; invariant 1). Every test runs under both commit
policies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec
import pytest

from protocol import (
    ClearMessageSlot,
    Completed,
    GetVpRegisters,
    HvMessageType,
    HvRegisterName as Reg,
    HvStatus,
    HvVtlEntryReason,
    InterceptDropped,
    Intercepted,
    InterceptMessage,
    InterceptPosted,
    MovToCr,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlSwitched,
    Wrmsr,
)
from protocol._x86 import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    DEFAULT_CR0_GUEST_HOST_MASK,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    VMX_ENTRY_CONTROL_LONG_MODE_GUEST,
    Msr,
)
from tests.guest import checked_runtime, new_partition
from tests.scenarios._bringup import ok, status, vtl0_register
from tests.scenarios._secure import (
    SINT0_MASKED,
    SINT0_POLLING,
    SINT0_PROXY,
    SINT0_UNMASKED,
    arm,
    enable_synic,
    reg,
    regs,
    return_to_vtl0,
    s1_setup,
    set_regs,
)

if TYPE_CHECKING:
    from runtime import Partition, Vp

pytestmark = pytest.mark.parametrize("commit_policy", ["batched", "eager"])

_PROTECTED: Final = CR0_PE | CR0_ET
_PAGED: Final = CR0_PE | CR0_ET | CR0_PG
_LONG_EFER: Final = EFER_LME | EFER_LMA | EFER_NXE
_CR0_WRITE: Final = 0x1
_MOV_CR_LENGTH: Final = 3
_WRMSR_LENGTH: Final = 2


async def _prepared(part: Partition, *, sint0: int = SINT0_UNMASKED, simp: int | None = None) -> Vp:
    """S1 steps 1-7, VTL1's SynIC, Cr0Mask = PG with Cr0Write, VTL0 in protected mode; back in VTL0."""
    vp = await s1_setup(part)
    if simp is None:
        await enable_synic(vp, sint0=sint0)
    else:
        await enable_synic(vp, simp=simp, sint0=sint0)
    await arm(vp, _CR0_WRITE, cr0_mask=CR0_PG)
    # VTL0: 32-bit protected mode with PAE, paging off (as a boot loader leaves it).
    assert await set_regs(vp, (Reg.CR0, _PROTECTED), (Reg.CR4, CR4_PAE), target_vtl=Vtl.VTL0) == ok(2)
    await return_to_vtl0(vp)
    return vp


async def _set_lme(vp: Vp) -> None:
    """VTL0's WRMSR EFER = LME|NXE completes (EFER writes are not armed): LMA stays 0."""
    rip = (await regs(vp, Vtl.VTL0, Reg.RIP))[Reg.RIP]
    assert await vp.execute(Wrmsr(msr=Msr.EFER, value=EFER_LME | EFER_NXE)) == Completed()
    assert vp.active_vtl == Vtl.VTL0
    assert await regs(vp, Vtl.VTL0, Reg.EFER, Reg.RIP) == {
        Reg.EFER: EFER_LME | EFER_NXE,
        Reg.RIP: rip + _WRMSR_LENGTH,
    }
    tdx = await vp.tdx_state(Vtl.VTL0)
    assert tdx.efer == EFER_LME | EFER_NXE
    assert not tdx.entry_controls & VMX_ENTRY_CONTROL_LONG_MODE_GUEST
    assert not tdx.long_mode_guest


async def _expected_message(vp: Vp, value: int, *, lma: bool = False) -> InterceptMessage:
    """The register intercept a MOV CR0 of ``value`` at VTL0's current RIP must produce."""
    state = await regs(vp, Vtl.VTL0, Reg.RIP, Reg.RFLAGS)
    return InterceptMessage(
        message_type=0x8001_0006,
        vp_index=0,
        instruction_length=_MOV_CR_LENGTH,
        access_type=1,  # WRITE
        rip=state[Reg.RIP],
        rflags=state[Reg.RFLAGS],
        execution_state=int(lma) << 4,  # CPL 0, VTL 0, EFER.LMA in bit 4
        register_name=0x0004_0000,
        value=value,
    )


async def _intercept_pg(vp: Vp) -> InterceptMessage:
    """VTL0's MOV CR0 with PG exits to VTL1 with the register-intercept message; nothing applied."""
    before = await regs(vp, Vtl.VTL0, Reg.CR0, Reg.EFER, Reg.RIP)
    message = await _expected_message(vp, _PAGED)
    out = await vp.execute(MovToCr(cr=0, value=_PAGED))
    assert out == Intercepted(message=message)
    assert message.message_type == HvMessageType.REGISTER_INTERCEPT
    assert message.register_name == Reg.CR0
    # Invariant 11: the write is not applied and RIP still points at the MOV.
    assert await regs(vp, Vtl.VTL0, Reg.CR0, Reg.EFER, Reg.RIP) == before
    assert before[Reg.CR0] == _PROTECTED
    assert not (await vp.tdx_state(Vtl.VTL0)).long_mode_guest
    # VTL1 is entered through its SINT0 (entry reason INTERRUPT, 2) with the message in the slot.
    assert vp.active_vtl == Vtl.VTL1
    assert await vp.sint0_message(Vtl.VTL1) == message
    assert (await vp.vtl_control(Vtl.VTL1)).entry_reason == HvVtlEntryReason.INTERRUPT
    return message


async def _check_long_mode(vp: Vp) -> None:
    """VTL0 is committed in long mode: CR0.PG, derived EFER.LMA, entry control bit 9."""
    assert await regs(vp, Vtl.VTL0, Reg.CR0, Reg.EFER) == {Reg.CR0: _PAGED, Reg.EFER: _LONG_EFER}
    tdx = await vp.tdx_state(Vtl.VTL0)
    assert tdx.cr0 & CR0_PG
    assert tdx.efer == _LONG_EFER
    assert tdx.entry_controls & VMX_ENTRY_CONTROL_LONG_MODE_GUEST
    assert tdx.long_mode_guest


async def test_setup_arms_cr0_pg(commit_policy: str) -> None:
    """Setup: Cr0Mask=PG and CrInterceptControl=0x1 succeed; VTL0's VMCS CR0 mask covers PG."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        tdx = await vp.tdx_state(Vtl.VTL0)
        assert tdx.cr0_guest_host_mask == DEFAULT_CR0_GUEST_HOST_MASK | CR0_PG
        assert await regs(vp, Vtl.VTL0, Reg.CR0, Reg.CR4, Reg.EFER) == {
            Reg.CR0: _PROTECTED,
            Reg.CR4: CR4_PAE,
            Reg.EFER: EFER_NXE,
        }
        await _set_lme(vp)


async def test_mov_cr0_pg_is_intercepted(commit_policy: str) -> None:
    """MOV CR0 with PG: register intercept {0x80010006, Cr0, new value, WRITE, MOV's RIP, length 3}."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        await _set_lme(vp)
        message = await _intercept_pg(vp)
        assert message.value == _PAGED
        assert message.access_type == 1
        assert message.instruction_length == _MOV_CR_LENGTH


async def test_vtl1_emulates_the_write_and_lma_is_derived(commit_policy: str) -> None:
    """VTL1 SetVpRegisters(VTL0 Cr0=new, Rip=old+3): Success, 2 reps, no re-intercept; LMA derived."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        await _set_lme(vp)
        message = await _intercept_pg(vp)
        emulate = set_regs(
            vp,
            (Reg.CR0, message.value or 0),
            (Reg.RIP, message.rip + message.instruction_length),
            target_vtl=Vtl.VTL0,
        )
        assert await emulate == ok(2)
        assert vp.active_vtl == Vtl.VTL1  # VTL1's own hypercall: nothing intercepted
        await _check_long_mode(vp)
        # Nobody wrote LMA, yet VTL1 reads it back through GetVpRegisters.
        assert await vtl0_register(vp, Reg.EFER) == _LONG_EFER
        assert await vtl0_register(vp, Reg.RIP) == message.rip + _MOV_CR_LENGTH


async def test_fast_return_resumes_vtl0_in_long_mode(commit_policy: str) -> None:
    """Fast VtlReturn: VTL0 resumes after the MOV, and its next hypercall result is 64-bit in RAX."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        await _set_lme(vp)
        message = await _intercept_pg(vp)
        resume = message.rip + _MOV_CR_LENGTH
        assert await set_regs(vp, (Reg.CR0, _PAGED), (Reg.RIP, resume), target_vtl=Vtl.VTL0) == ok(2)
        await return_to_vtl0(vp)
        assert await regs(vp, Vtl.VTL0, Reg.RIP) == {Reg.RIP: resume}
        await _check_long_mode(vp)
        # The hypercall ABI tells the modes apart: 32-bit puts the result in EDX:EAX, long mode
        # in RAX. One rep completed = 1 << 32: only a 64-bit write leaves RAX = 0x1_0000_0000.
        before = await regs(vp, Vtl.VTL0, Reg.RAX, Reg.RDX)
        out = await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        assert out == ok(1, [0x3_0010])  # VTL0 active, VP MBEC on, VTL0 and VTL1 enabled here
        assert await regs(vp, Vtl.VTL0, Reg.RAX, Reg.RDX, Reg.RIP) == {
            Reg.RAX: 1 << 32,
            Reg.RDX: before[Reg.RDX],
            Reg.RIP: resume + 3,
        }


async def test_intercept_stays_armed_in_long_mode(commit_policy: str) -> None:
    """Back in long mode, clearing PG is intercepted too; the header now reports EFER.LMA = 1."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        await _set_lme(vp)
        message = await _intercept_pg(vp)
        # DOMAIN 7.3: EOM does not free the SINT0 slot; HvMessageTypeNone in its header does.
        assert await set_regs(vp, (Reg.EOM, 0)) == ok(1)
        assert await vp.sint0_message(Vtl.VTL1) == message
        assert await vp.execute(ClearMessageSlot()) == Completed()
        assert await vp.sint0_message(Vtl.VTL1) is None
        resume = message.rip + _MOV_CR_LENGTH
        assert await set_regs(vp, (Reg.CR0, _PAGED), (Reg.RIP, resume), target_vtl=Vtl.VTL0) == ok(2)
        await return_to_vtl0(vp)
        expected = await _expected_message(vp, _PROTECTED, lma=True)
        assert await vp.execute(MovToCr(cr=0, value=_PROTECTED)) == Intercepted(message=expected)
        await _check_long_mode(vp)
        assert await regs(vp, Vtl.VTL0, Reg.RIP) == {Reg.RIP: resume}


async def test_efer_lma_written_while_paging_off_is_overridden(commit_policy: str) -> None:
    """Variant: VTL1 writes Efer=LME|LMA|NXE while CR0.PG=0: committed LME|NXE, entry bit 9 = 0."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        await _set_lme(vp)
        await _intercept_pg(vp)
        assert await set_regs(vp, (Reg.EFER, _LONG_EFER), target_vtl=Vtl.VTL0) == ok(1)
        assert await vtl0_register(vp, Reg.EFER) == EFER_LME | EFER_NXE
        tdx = await vp.tdx_state(Vtl.VTL0)
        assert tdx.efer == EFER_LME | EFER_NXE
        assert not tdx.entry_controls & VMX_ENTRY_CONTROL_LONG_MODE_GUEST
        assert not tdx.long_mode_guest
        assert (await regs(vp, Vtl.VTL0, Reg.CR0))[Reg.CR0] == _PROTECTED


# ---- the dropped-message path (DOMAIN 3.8 "Delivery") ---------------------------------------------


async def _dropped(vp: Vp, value: int, reason: str) -> None:
    """MOV CR0 exits but VTL1's SINT0 refuses the message: dropped, VTL0 stays, nothing applied.

    A full slot keeps its message and gets the MessagePending flag (DOMAIN 7.3).
    """
    before = await regs(vp, Vtl.VTL0, Reg.CR0, Reg.EFER, Reg.RIP)
    held = await vp.sint0_message(Vtl.VTL1)
    message = await _expected_message(vp, value, lma=bool(before[Reg.EFER] & EFER_LMA))
    out = await vp.execute(MovToCr(cr=0, value=value))
    assert isinstance(out, InterceptDropped), out
    assert out.message == message
    assert reason in out.reason
    assert vp.active_vtl == Vtl.VTL0
    assert await regs(vp, Vtl.VTL0, Reg.CR0, Reg.EFER, Reg.RIP) == before
    pending = None if held is None else msgspec.structs.replace(held, message_pending=True)
    assert await vp.sint0_message(Vtl.VTL1) == pending


async def _call_vtl1(vp: Vp) -> None:
    assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)


@pytest.mark.parametrize(
    ("sint0", "reason"),
    [
        pytest.param(SINT0_MASKED, "masked", id="sint0-masked"),
        pytest.param(SINT0_UNMASKED | SINT0_PROXY, "proxy", id="sint0-proxy"),
    ],
)
async def test_message_dropped_until_vtl1_fixes_its_synic(
    commit_policy: str, sint0: int, reason: str
) -> None:
    """SINT0 masked or a proxy: InterceptDropped (slot untouched); after VTL1 fixes SINT0, delivered."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy), sint0=sint0)
        await _set_lme(vp)
        await _dropped(vp, _PAGED, reason)
        await _dropped(vp, _PAGED, reason)  # VTL0 re-executes the MOV: the same drop
        await _call_vtl1(vp)
        assert await set_regs(vp, (Reg.SINT0, SINT0_UNMASKED)) == ok(1)
        await return_to_vtl0(vp)
        await _intercept_pg(vp)


async def test_message_posted_with_simp_disabled(commit_policy: str) -> None:
    """DOMAIN 7.3 (a change from the first round, which dropped it): post_message never looks at
    SIMP enablement, so the message is written (into OpenHCL's overlay page) and SINT0 fires.
    With no message page mapped, VTL1's ClearMessageSlot cannot reach the slot; once VTL1
    enables SIMP it can."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy), simp=0x80 << 12)
        await _set_lme(vp)
        message = await _intercept_pg(vp)
        assert await vp.execute(ClearMessageSlot()) == Completed()
        assert await vp.sint0_message(Vtl.VTL1) == message  # no SIMP: the write missed the slot
        assert await set_regs(vp, (Reg.SIPP, 0x80 << 12 | 1)) == ok(1)
        assert await vp.execute(ClearMessageSlot()) == Completed()
        assert await vp.sint0_message(Vtl.VTL1) is None


async def test_polling_sint0_gets_the_message_but_vtl1_is_not_entered(commit_policy: str) -> None:
    """DOMAIN 7.3: a polling SINT raises no interrupt. The message is in the slot, VTL0 stays
    active and its MOV did not complete (InterceptPosted); re-executing it finds the slot full."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy), sint0=SINT0_POLLING)
        await _set_lme(vp)
        before = await regs(vp, Vtl.VTL0, Reg.CR0, Reg.RIP)
        expected = await _expected_message(vp, _PAGED, lma=False)
        assert await vp.execute(MovToCr(cr=0, value=_PAGED)) == InterceptPosted(message=expected)
        assert vp.active_vtl == Vtl.VTL0
        assert await regs(vp, Vtl.VTL0, Reg.CR0, Reg.RIP) == before
        assert await vp.sint0_message(Vtl.VTL1) == expected
        assert (await vp.vtl_control(Vtl.VTL1)).entry_reason != HvVtlEntryReason.INTERRUPT
        await _dropped(vp, _PAGED, "previous message")  # MessagePending is set once
        await _dropped(vp, _PAGED, "previous message")
        # VTL1 runs only when called; it finds the message and MessagePending, and frees the slot.
        await _call_vtl1(vp)
        assert await vp.sint0_message(Vtl.VTL1) == msgspec.structs.replace(expected, message_pending=True)
        assert await vp.execute(ClearMessageSlot()) == Completed()
        assert await vp.sint0_message(Vtl.VTL1) is None


@pytest.mark.parametrize("eom", ["set_vp_registers", "wrmsr"])
async def test_message_dropped_while_slot_busy_until_cleared(commit_policy: str, eom: str) -> None:
    """The slot still full: the next intercept is dropped and sets MessagePending. DOMAIN 7.3
    changed the first round's expectation: EOM (either way) frees nothing; HvMessageTypeNone
    in the header (ClearMessageSlot) does, and the next intercept is delivered."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        await _set_lme(vp)
        first = await _intercept_pg(vp)
        resume = first.rip + _MOV_CR_LENGTH
        assert await set_regs(vp, (Reg.CR0, _PAGED), (Reg.RIP, resume), target_vtl=Vtl.VTL0) == ok(2)
        await return_to_vtl0(vp)  # the slot still holds the first message
        await _dropped(vp, _PROTECTED, "previous message")
        pending = msgspec.structs.replace(first, message_pending=True)
        assert await vp.sint0_message(Vtl.VTL1) == pending
        await _call_vtl1(vp)
        if eom == "wrmsr":
            assert await vp.execute(Wrmsr(msr=0x4000_0084, value=0)) == Completed()
        else:
            assert await set_regs(vp, (Reg.EOM, 0)) == ok(1)
        assert await vp.sint0_message(Vtl.VTL1) == pending  # EOM does nothing to the slot
        assert await vp.execute(ClearMessageSlot(sint=1)) == Completed()  # another slot
        assert await vp.sint0_message(Vtl.VTL1) == pending
        assert await vp.execute(ClearMessageSlot()) == Completed()
        assert await vp.sint0_message(Vtl.VTL1) is None
        await return_to_vtl0(vp)
        expected = await _expected_message(vp, _PROTECTED, lma=True)
        assert await vp.execute(MovToCr(cr=0, value=_PROTECTED)) == Intercepted(message=expected)
        assert vp.active_vtl == Vtl.VTL1
        assert await vp.sint0_message(Vtl.VTL1) == expected
        await _check_long_mode(vp)  # the intercepted PG clear was not applied


async def test_vtl0_cannot_free_vtl1s_slot(commit_policy: str) -> None:
    """VTL0's own EOM and ClearMessageSlot touch VTL0's SynIC, not VTL1's: the drop persists."""
    async with checked_runtime() as rt:
        vp = await _prepared(await new_partition(rt, commit_policy=commit_policy))
        await _set_lme(vp)
        first = await _intercept_pg(vp)
        resume = first.rip + _MOV_CR_LENGTH
        assert await set_regs(vp, (Reg.RIP, resume), target_vtl=Vtl.VTL0) == ok(1)  # skip the MOV
        await return_to_vtl0(vp)
        assert await vp.execute(Wrmsr(msr=0x4000_0084, value=0)) == Completed()
        assert await vp.execute(ClearMessageSlot()) == Completed()
        assert await vp.sint0_message(Vtl.VTL1) == first
        await _dropped(vp, _PAGED, "previous message")
        # Nor can VTL0 reach VTL1's SynIC registers.
        out = await vp.execute(SetVpRegisters(registers=[reg(Reg.EOM, 0)], target_vtl=Vtl.VTL1))
        assert out == status(HvStatus.ACCESS_DENIED)
        assert await vp.sint0_message(Vtl.VTL1) == msgspec.structs.replace(first, message_pending=True)
