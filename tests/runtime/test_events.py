"""Engine events (``Runtime.subscribe``): what listeners hear, in order, and what they cost nobody."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio
import msgspec
import pytest

from protocol import (
    HvMessageType,
    HvRegisterName as Reg,
    HvStatus,
    HvVtlEntryReason,
    HypercallResult,
    Intercepted,
    MovToCr,
    Rdmsr,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlReturn,
    Wrmsr,
)
from protocol._x86 import CR0_ET, CR0_PE, CR0_PG, EFER_LMA, EFER_LME, EFER_SCE, Msr
from runtime import (
    CommitEvent,
    EngineEvent,
    FailureEvent,
    InterceptEvent,
    VtlSwitchEvent,
    execute_inline,
)
from runtime.testing import long_mode_context
from tests.guest import checked_runtime
from tests.scenarios._secure import arm, enable_synic, reg, return_to_vtl0, s1_setup

if TYPE_CHECKING:
    from runtime import Partition, Vp

_CR0_WRITE: Final = 0x1


async def _armed_vtl0(part: Partition) -> Vp:
    """VP 0 back in VTL0 with CR0.PG writes intercepted by VTL1, VTL0 in protected mode."""
    vp = await s1_setup(part)
    await enable_synic(vp)
    await arm(vp, _CR0_WRITE, cr0_mask=CR0_PG)
    out = await vp.execute(SetVpRegisters(registers=[reg(Reg.CR0, CR0_PE | CR0_ET)], target_vtl=Vtl.VTL0))
    assert out == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1)
    await return_to_vtl0(vp)
    return vp


async def test_switches_and_intercepts_in_order() -> None:
    """A VTL call is a switch with entry reason 1; an intercept is the message, then reason 2."""
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=2)
        heard: list[EngineEvent] = []
        unsubscribe = rt.subscribe(heard.append, commits=False)
        vp = await _armed_vtl0(part)
        switches = [e for e in heard if isinstance(e, VtlSwitchEvent)]
        assert switches[0] == VtlSwitchEvent(
            partition=part.partition_id, vp=0, from_vtl=Vtl.VTL0, to_vtl=Vtl.VTL1, entry_reason=1
        )
        assert switches[-1].to_vtl == Vtl.VTL0
        assert not any(isinstance(e, CommitEvent) for e in heard)  # commits=False
        heard.clear()
        out = await vp.execute(MovToCr(cr=0, value=CR0_PE | CR0_ET | CR0_PG))
        assert isinstance(out, Intercepted)
        assert heard == [
            InterceptEvent(partition=part.partition_id, vp=0, message=out.message),
            VtlSwitchEvent(
                partition=part.partition_id,
                vp=0,
                from_vtl=Vtl.VTL0,
                to_vtl=Vtl.VTL1,
                entry_reason=HvVtlEntryReason.INTERRUPT,
            ),
        ]
        assert out.message.message_type == HvMessageType.REGISTER_INTERCEPT
        unsubscribe()
        unsubscribe()  # harmless twice
        await return_to_vtl0(vp)
        assert len(heard) == 2  # nobody heard the return
        assert rt.statistics().listeners == 0


async def test_commit_events_count_commits_and_vmcs_writes() -> None:
    """Each commit event carries the commits and VMCS writes of one step, as the counters do."""
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=1, commit_policy="eager")
        commits: list[CommitEvent] = []
        rt.subscribe(lambda e: commits.append(e) if isinstance(e, CommitEvent) else None)
        vp = part.vp(0)
        before = vp.statistics()
        for _ in range(5):
            await vp.execute(Rdmsr(msr=Msr.LSTAR))
        await vp.tdx_state(Vtl.VTL0)  # an inspection commits what is staged
        after = vp.statistics()
        assert commits, "RIP advances commit"
        assert all(e.vtl == Vtl.VTL0 and e.vp == 0 for e in commits)
        assert sum(e.commits for e in commits) == after.commits - before.commits
        assert sum(e.vmcs_writes for e in commits) == after.vmcs_writes - before.vmcs_writes


async def test_window_commits_are_heard() -> None:
    """A commit made by the batch-window flusher (no step of the VP) is an event too."""
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=1, batch_window=0.001)
        heard: list[EngineEvent] = []
        committed = anyio.Event()
        rt.subscribe(lambda e: (heard.append(e), committed.set()))
        # GUEST_SYSENTER_CS is a VMCS field: its write waits for the window.
        await part.vp(0).execute(Wrmsr(msr=Msr.SYSENTER_CS, value=0x10))
        with anyio.fail_after(5):
            await committed.wait()
        assert isinstance(heard[0], CommitEvent)
        assert rt.statistics().scheduler.window_commits >= 1


async def test_failure_is_heard() -> None:
    """An invalid initial context (EFER without NXE) ends the partition: listeners hear why."""
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=3)
        failures: list[FailureEvent] = []
        failed = anyio.Event()

        def listen(event: EngineEvent) -> None:
            if isinstance(event, FailureEvent):
                failures.append(event)
                failed.set()

        rt.subscribe(listen, commits=False)
        bad = msgspec.structs.replace(long_mode_context(0x9000), efer=EFER_LME | EFER_LMA | EFER_SCE)
        await part.vp(0).execute(StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL0, context=bad))
        with anyio.fail_after(5):
            await failed.wait()
        (failure,) = failures  # one event for the whole partition
        assert failure.partition == part.partition_id
        assert "vp 2" in failure.reason
        assert "EFER" in failure.reason
        assert failure.reason == part.failure


async def test_a_raising_listener_is_detached_and_counted() -> None:
    """A listener's bug neither stops the runtime nor the other listeners."""
    async with checked_runtime() as rt:
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        heard: list[EngineEvent] = []

        def broken(event: EngineEvent) -> None:
            raise RuntimeError("listener bug")

        rt.subscribe(broken)
        rt.subscribe(heard.append)
        for _ in range(3):
            await vp.execute(Rdmsr(msr=Msr.LSTAR))
        await vp.tdx_state(Vtl.VTL0)
        stats = rt.statistics()
        assert stats.listener_errors == 1
        assert stats.listeners == 1
        assert heard


async def test_subscribe_refuses_a_non_callable() -> None:
    async with checked_runtime() as rt:
        with pytest.raises(TypeError, match="callable"):
            rt.subscribe(42)  # type: ignore[arg-type]


async def test_no_listener_runs_the_plain_step() -> None:
    """Without listeners the observed step is never entered (the zero-cost claim)."""
    async with checked_runtime() as rt:
        scheduler = rt._scheduler
        entered: list[object] = []
        original = scheduler._step_vp_observed
        scheduler._step_vp_observed = lambda cell: (entered.append(cell), original(cell))  # type: ignore[method-assign]
        vp = (await rt.create_partition(vp_count=1)).vp(0)
        await vp.execute(Rdmsr(msr=Msr.LSTAR))
        assert entered == []
        unsubscribe = rt.subscribe(lambda e: None)
        await vp.execute(Rdmsr(msr=Msr.LSTAR))
        assert len(entered) == 1
        unsubscribe()
        await vp.execute(Rdmsr(msr=Msr.LSTAR))
        assert len(entered) == 1


async def test_events_name_their_partition_and_vp() -> None:
    """The same action on two partitions gives two events, each naming its own partition."""
    async with checked_runtime() as rt:
        parts = [await rt.create_partition(vp_count=1) for _ in range(2)]
        heard: list[EngineEvent] = []
        rt.subscribe(heard.append, commits=False)
        for part in parts:
            await s1_setup(part)
        calls = [e for e in heard if isinstance(e, VtlSwitchEvent) and e.to_vtl == Vtl.VTL1]
        assert [(e.partition, e.vp) for e in calls] == [(p.partition_id, 0) for p in parts]


async def test_in_line_programs_are_heard_too() -> None:
    """Actions run in-line (``execute_inline``, the virtual-clock path) report the same events."""
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=1)
        await s1_setup(part)  # leaves VP 0 in VTL1
        heard: list[EngineEvent] = []
        rt.subscribe(heard.append, commits=False)
        assert execute_inline(part.vp(0), VtlReturn(fast=True)).to_vtl == Vtl.VTL0  # type: ignore[union-attr]
        assert heard == [
            VtlSwitchEvent(
                partition=part.partition_id, vp=0, from_vtl=Vtl.VTL1, to_vtl=Vtl.VTL0, entry_reason=0
            )
        ]
