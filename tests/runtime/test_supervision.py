"""Atomic actions and supervision (RELIABILITY G4, D1-D4): crashes are undone, VPs restart, limits hold."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
import sniffio
import trio
import trio.testing

from actors import GuestVsmState, VpSnapshot
from protocol import (
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    Wrmsr,
)
from protocol._x86 import Msr
from runtime import ActorCrashed, PartitionFailed, RestartPolicy, open_runtime
from runtime.testing import InjectedCrash, crash_at
from tests.guest import checked_runtime, long_mode_context, new_partition

_LENIENT = RestartPolicy(max_restarts=100, period=3600.0, backoff=0.0001, backoff_max=0.001)
_REGS = [Reg.RIP, Reg.RSP, Reg.RAX, Reg.LSTAR, Reg.CSTAR, Reg.CR0, Reg.EFER]


def _living_tasks() -> int:
    if sniffio.current_async_library() == "trio":
        return trio.lowlevel.current_statistics().tasks_living
    return len(asyncio.all_tasks())


async def _in_vtl1(rt: Any, **config: object) -> Any:
    """A partition whose VP 0 runs VTL1 (long mode), VP 1 started in VTL0."""
    part = await new_partition(rt, **config)
    vp = part.vp(0)
    out = await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))
    assert out == HypercallResult(status=HvStatus.SUCCESS)
    await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context()))
    await vp.execute(StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context()))
    await vp.execute(VtlCall())
    return part


async def _all_registers(vp: Any) -> tuple[dict[Reg, int], dict[Reg, int]]:
    return await vp.registers(Vtl.VTL0, _REGS), await vp.registers(Vtl.VTL1, _REGS)


@pytest.mark.parametrize("element", [1, 2, 3])
async def test_a_crash_at_element_k_of_set_vp_registers_has_no_effect(element: int) -> None:
    """G4 reproducer: a crash at element k undoes elements 1..k-1; the caller may retry; VP restarted."""
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        part = await _in_vtl1(rt)
        vp = part.vp(0)
        write = SetVpRegisters(
            target_vtl=Vtl.VTL0,
            registers=[
                RegisterAssoc(name=name, value=0x1000 + i)
                for i, name in enumerate((Reg.RSP, Reg.LSTAR, Reg.CSTAR))
            ],
        )
        before = await _all_registers(vp)
        stats = vp.statistics()
        with crash_at("stage", nth=element) as crashes, pytest.raises(ActorCrashed) as caught:
            await vp.execute(write)
        assert crashes == ["stage"]
        assert isinstance(caught.value.__cause__, InjectedCrash)
        assert caught.value.retriable
        assert (caught.value.partition_id, caught.value.vp_index) == (part.partition_id, 0)
        assert await _all_registers(vp) == before  # nothing of it applied, nor its completion
        assert vp.statistics().actions == stats.actions
        assert part.statistics().restarts == 1
        # VP 1 of the same partition was never touched; the retry applies everything.
        assert await part.vp(1).execute(Rdmsr(msr=Msr.EFER)) is not None
        assert await vp.execute(write) == HypercallResult(status=HvStatus.SUCCESS, reps_completed=3)
        assert (await vp.registers(Vtl.VTL0, [Reg.RSP, Reg.CSTAR])) == {Reg.RSP: 0x1000, Reg.CSTAR: 0x1002}


@pytest.mark.parametrize("point", ["commit", "commit.applied"])
async def test_a_crash_inside_a_commit_loses_no_acknowledged_write(point: str) -> None:
    """G4/C3: a crash in the VTL-entry commit undoes that action only; earlier acked writes survive."""
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        # A window that never closes on time: the VTL0 entry below, not the clock, commits the write.
        part = await _in_vtl1(rt, batch_window=3600.0)
        vp = part.vp(0)
        write = SetVpRegisters(target_vtl=Vtl.VTL0, registers=[RegisterAssoc(name=Reg.RSP, value=0xBEEF0)])
        assert await vp.execute(write) == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1)
        assert await vp.execute(VtlReturn(fast=True)) is not None  # staged for VTL0, acked
        with crash_at(point) as crashes, pytest.raises(ActorCrashed):
            await vp.execute(Rdmsr(msr=Msr.EFER))  # VTL0 entry commits the staged writes: crash
        assert crashes == [point]
        assert vp.active_vtl == Vtl.VTL0
        assert (await vp.registers(Vtl.VTL0, [Reg.RSP]))[Reg.RSP] == 0xBEEF0
        assert await vp.execute(Rdmsr(msr=Msr.EFER)) is not None


async def test_a_crash_in_a_context_load_is_retried_and_the_runtime_lives() -> None:
    """G4 reproducer: a crash applying a context (apply_controls) restarts the VP; the load still happens."""
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        part = await new_partition(rt)
        other = await new_partition(rt)
        vp = part.vp(0)
        await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))
        await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context()))
        await vp.execute(Rdmsr(msr=Msr.EFER))  # VP 0 applies its own VTL1 context here
        start = StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL0, context=long_mode_context(0x7000))
        with crash_at("controls") as crashes:
            assert await vp.execute(start) == HypercallResult(status=HvStatus.SUCCESS)
            # VP 2 applies the context on its own step (nobody waits on it): that step crashes.
            with anyio.fail_after(5):
                while not part.vp(2).statistics().running:  # noqa: ASYNC110  # no event to wait on
                    await anyio.sleep(0.001)
        assert crashes == ["controls"]
        assert part.statistics().restarts == 1
        assert (await part.vp(2).registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == 0x7000
        assert await other.vp(0).execute(Rdmsr(msr=Msr.EFER)) is not None


async def test_a_crash_in_a_window_commit_does_not_end_the_runtime() -> None:
    """G4 reproducer: the batch-window flusher's commit_all crashing restarts the VP, nothing more."""
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        # A window of 0.5 s: it cannot close before the crash point is armed below, even when a
        # loaded machine resumes this task late (with 1 ms it had, and nothing crashed).
        part = await _in_vtl1(rt, batch_window=0.5)
        vp = part.vp(0)
        write = SetVpRegisters(target_vtl=Vtl.VTL0, registers=[RegisterAssoc(name=Reg.RSP, value=0x4242)])
        await vp.execute(write)  # staged for VTL0 (and VTL1's completion): a window is open
        with crash_at("commit") as crashes:
            with anyio.fail_after(5):
                while not crashes:  # noqa: ASYNC110  # the window closes after batch_window
                    await anyio.sleep(0.001)
        with anyio.fail_after(5):
            while rt.statistics().scheduler.restarting:  # noqa: ASYNC110  # a counter to poll
                await anyio.sleep(0.001)
        assert rt.statistics().scheduler.crashes == 1
        assert (await vp.registers(Vtl.VTL0, [Reg.RSP]))[Reg.RSP] == 0x4242  # committed in the end


async def test_a_crash_after_the_supervisor_answered_finishes_the_hypercall() -> None:
    """D4: past the supervisor's reply the hypercall is finished after the restart: one effect."""
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        rip = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        # The completion (RAX, then RIP) is staged after the supervisor's reply: crash there.
        with crash_at("stage") as crashes:
            out = await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))
        assert crashes == ["stage"]
        assert out == HypercallResult(status=HvStatus.SUCCESS)
        assert part.statistics().supervisor.requests == 1  # the partition was enabled once
        assert part.statistics().supervisor.guest_vsm == GuestVsmState.ENABLED
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == rip + 3
        assert part.statistics().restarts == 1


@pytest.mark.parametrize("point", ["commit", "stage", "supervisor"])
async def test_in_line_execution_restarts_without_waiting_for_the_backoff(point: str) -> None:
    """execute_inline: a crash gives ActorCrashed (or finishes the hypercall), and the next call runs."""
    from runtime._programs import execute_inline

    backoff = RestartPolicy(max_restarts=10, period=3600.0, backoff=60.0, backoff_max=60.0)
    async with checked_runtime(restart_policy=backoff) as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        rip = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        outs = []
        with crash_at(point) as crashes:
            for action in (EnablePartitionVtl(target_vtl=Vtl.VTL1), Rdmsr(msr=Msr.EFER)):
                try:
                    outs.append(execute_inline(vp, action))
                except ActorCrashed:
                    outs.append(execute_inline(vp, action))  # a minute before the backoff ends
        assert crashes == [point]
        assert outs[0] == HypercallResult(status=HvStatus.SUCCESS)
        assert part.statistics().restarts == 1
        assert part.statistics().supervisor.guest_vsm == GuestVsmState.ENABLED
        assert (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP] == rip + 3 + 2  # + the Rdmsr


@pytest.mark.parametrize("point", ["supervisor", "supervisor.applied"])
async def test_a_supervisor_crash_is_rolled_back_and_retried(point: str) -> None:
    """D1: the partition supervisor's state is rolled back and its request retried; the caller never knows."""
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        part = await new_partition(rt)
        vp = part.vp(0)
        await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))
        with crash_at(point) as crashes:
            out = await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context()))
        assert crashes == [point]
        assert out == HypercallResult(status=HvStatus.SUCCESS)
        assert part._cells.supervisor.state.vtl1_enable_called == [True, False, False, False]
        assert part.statistics().supervisor.requests == 2  # the crashed attempt counted nothing
        assert part.statistics().restarts == 1


async def test_a_supervisor_crash_restarts_every_vp_one_for_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """D1 one_for_all: with the supervisor, every VP restarts from its last committed state,
    torn down last-first and started first-first; other partitions are untouched."""
    import actors
    from runtime import _failures  # the restarts (BatchingScheduler's failure handling)

    torn_down: list[int] = []
    started: list[int] = []
    real_rebuild, real_checkpoint = _failures.rebuild, _failures.checkpoint

    def rebuild(*args: Any, **kwargs: Any) -> Any:
        torn_down.append(kwargs["index"])
        return real_rebuild(*args, **kwargs)

    def checkpoint(actor: Any) -> bytes:
        started.append(actor.state.index)
        return real_checkpoint(actor)

    async with checked_runtime(restart_policy=_LENIENT) as rt:
        # VP 0 in VTL1, VP 1 running VTL0, VPs 2 and 3 not started; no window closes meanwhile.
        part = await _in_vtl1(rt, commit_policy="batched", batch_window=3600.0)
        other = await new_partition(rt)
        assert await other.vp(0).execute(Rdmsr(msr=Msr.EFER)) is not None
        # VP 1 has a staged, uncommitted update (a VMCS field's, in its window): it must survive.
        assert await part.vp(1).execute(Wrmsr(msr=Msr.SYSENTER_CS, value=0x10)) is not None
        cells = part._cells.cells
        before = [cell.actor for cell in cells]
        states = [actors.snapshot_vp(actor) for actor in before]
        assert cells[1].actor.state.vtls[0].staged_updates
        others = [cell.actor for cell in other._cells.cells]
        monkeypatch.setattr(_failures, "rebuild", rebuild)
        monkeypatch.setattr(_failures, "checkpoint", checkpoint)
        vp = part.vp(0)
        with crash_at("supervisor") as crashes:
            out = await vp.execute(
                StartVirtualProcessor(vp_index=2, target_vtl=Vtl.VTL0, context=long_mode_context())
            )
        assert crashes == ["supervisor"]
        assert out == HypercallResult(status=HvStatus.SUCCESS)  # the retried request
        assert torn_down == [3, 2, 1, 0]
        assert started[:3] == [1, 2, 3]  # VP 0 waited on the supervisor: it kept its journal
        assert all(cell.actor is not old for cell, old in zip(cells, before, strict=True))
        # The same state, but for what the retried StartVirtualProcessor did (VP 2 runs now).
        assert [actors.snapshot_vp(cell.actor) for cell in cells][1::2] == states[1::2]
        assert cells[1].actor.state.vtls[0].staged_updates
        assert part.statistics().restarts == 1  # one restart event, as OTP counts it
        assert [cell.actor for cell in other._cells.cells] == others
        assert other.statistics().restarts == 0
        monkeypatch.undo()
        assert await part.vp(2).execute(Rdmsr(msr=Msr.EFER)) is not None
        assert await part.vp(1).execute(Rdmsr(msr=Msr.EFER)) is not None


async def test_restart_intensity_boundary() -> None:
    """D2: max_restarts crashes within the period: still running; one more: PartitionFailed everywhere."""
    policy = RestartPolicy(max_restarts=2, period=3600.0, backoff=0.0001)
    async with checked_runtime(restart_policy=policy) as rt:
        part = await new_partition(rt)
        other = await new_partition(rt)
        vp = part.vp(0)
        write = SetVpRegisters(registers=[RegisterAssoc(name=Reg.RBX, value=1)])
        for _ in range(2):
            with crash_at("stage"), pytest.raises(ActorCrashed):
                await vp.execute(write)
        assert part.failure is None
        assert await vp.execute(Rdmsr(msr=Msr.EFER)) is not None  # MaxR: still running
        with crash_at("stage"), pytest.raises(PartitionFailed, match="restart intensity"):
            await vp.execute(write)
        assert part.failure is not None
        assert "2 restarts in 3600 s" in part.failure
        for index in range(4):
            with pytest.raises(PartitionFailed):
                await part.vp(index).execute(Rdmsr(msr=Msr.EFER))
        stats = rt.statistics().scheduler
        assert (stats.crashes, stats.restarts, stats.failed_partitions) == (3, 2, 1)
        out = await other.vp(0).execute(GetVpRegisters(names=[Reg.VSM_CAPABILITIES]))
        assert out == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1, values=[0x2_0002])


def test_otp_defaults_and_restarts_outside_the_period() -> None:
    """D2: defaults are OTP's (1 in 5 s); crashes further apart than the period never add up."""
    assert (RestartPolicy().max_restarts, RestartPolicy().period) == (1, 5.0)
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=-1)

    async def main() -> list[float]:
        restarts = []
        async with open_runtime(seed=3) as rt:  # default policy
            vp = (await rt.create_partition(vp_count=1)).vp(0)
            write = SetVpRegisters(registers=[RegisterAssoc(name=Reg.RBX, value=1)])
            for _ in range(3):
                with crash_at("stage"), pytest.raises(ActorCrashed):
                    await vp.execute(write)
                restarts.append(trio.current_time())
                await trio.sleep(5.5)  # virtual: MockClock
            assert rt.partitions[0].failure is None
            with crash_at("stage", times=2):  # two within 5 s: the second fails the partition
                with pytest.raises(ActorCrashed):
                    await vp.execute(write)
                with pytest.raises(PartitionFailed, match=r"1 restarts in 5 s"):
                    await vp.execute(write)
        return restarts

    times = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(times) == 3


def test_backoff_is_exponential_with_jitter_on_the_virtual_clock() -> None:
    """The n-th restart in a period waits backoff * 2**(n-1) .. (1 + jitter) times that (MockClock)."""

    async def main() -> list[float]:
        delays = []
        policy = RestartPolicy(max_restarts=5, period=3600.0, backoff=1.0, backoff_max=100.0, jitter=0.5)
        async with open_runtime(seed=7, restart_policy=policy) as rt:
            vp = (await rt.create_partition(vp_count=1)).vp(0)
            write = SetVpRegisters(registers=[RegisterAssoc(name=Reg.RBX, value=1)])
            for _ in range(4):
                with crash_at("stage"), pytest.raises(ActorCrashed):
                    await vp.execute(write)
                crashed = trio.current_time()
                await vp.execute(Rdmsr(msr=Msr.EFER))  # served once the VP is back
                delays.append(trio.current_time() - crashed)
        return delays

    first = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for n, delay in enumerate(first):
        assert 2**n <= delay <= 1.5 * 2**n
    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == first  # seeded jitter


async def test_in_flight_requests_to_a_crashed_vp_get_exactly_one_outcome() -> None:
    """D4: of ten queued actions, the crashed one gets ActorCrashed and every other its outcome."""
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        vp = (await new_partition(rt)).vp(0)
        outcomes: list[object] = []

        async def call(i: int) -> None:
            write = SetVpRegisters(registers=[RegisterAssoc(name=Reg.RBX, value=i)])
            try:
                outcomes.append(await vp.execute(write))
            except ActorCrashed as exc:
                outcomes.append(exc)

        with crash_at("stage", nth=3):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(call, i)
        assert len(outcomes) == 10
        crashed = [o for o in outcomes if isinstance(o, ActorCrashed)]
        assert len(crashed) == 1
        assert vp.statistics().actions == 9


async def test_no_task_outlives_the_runtime_and_no_crash_is_swallowed() -> None:
    """D3: after crashes and restarts, the task count returns to its baseline; every crash is counted."""
    before = _living_tasks()
    async with checked_runtime(restart_policy=_LENIENT) as rt:
        part = await _in_vtl1(rt)
        vp = part.vp(0)
        injected: list[str] = []
        write = SetVpRegisters(target_vtl=Vtl.VTL0, registers=[RegisterAssoc(name=Reg.RSP, value=8)])
        for point in ("stage", "commit", "stage", "commit.applied"):
            with crash_at(point) as crashes:
                try:
                    await vp.execute(write)
                    await vp.execute(VtlReturn(fast=True))
                    await vp.execute(Rdmsr(msr=Msr.EFER))
                    await vp.execute(VtlCall())
                except ActorCrashed:
                    pass
            injected += crashes
        assert rt.statistics().scheduler.crashes == len(injected) == 4
        assert part.statistics().restarts == 4
    await anyio.lowlevel.checkpoint()
    assert _living_tasks() == before


async def test_restarts_go_through_the_snapshot_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarts rebuild the VP from snapshot bytes: a codec that drops a field shows up at once."""
    import runtime._journal

    async with checked_runtime(restart_policy=_LENIENT) as rt:
        part = await _in_vtl1(rt)
        vp = part.vp(0)
        decoded: list[VpSnapshot] = []
        real = runtime._journal._VP_SNAPSHOT

        class Spy:
            def decode(self, data: bytes) -> VpSnapshot:
                decoded.append(real.decode(data))
                return decoded[-1]

        for _ in range(runtime._journal.JOURNAL_LIMIT // 2):  # enough inputs for a checkpoint
            await vp.execute(Rdmsr(msr=Msr.EFER))
        assert vp._cell.base is not None
        monkeypatch.setattr(runtime._journal, "_VP_SNAPSHOT", Spy())
        with crash_at("stage"), pytest.raises(ActorCrashed):
            await vp.execute(SetVpRegisters(registers=[RegisterAssoc(name=Reg.RBX, value=3)]))
        assert len(decoded) == 1
        assert decoded[0].state.vtl1 is not None  # the checkpoint it rebuilt from had VTL1
