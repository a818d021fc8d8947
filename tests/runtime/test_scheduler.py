"""The batching scheduler: commit points, batch windows, fault containment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from actors import UnsupportedAction
from protocol import (
    EnablePartitionVtl,
    EnableVpVtl,
    HvRegisterName as Reg,
    HvStatus,
    Hypercall,
    HypercallCode,
    HypercallResult,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlReturn,
    Wrmsr,
)
from protocol._x86 import Msr
from tests.guest import checked_runtime, long_mode_context, new_partition

if TYPE_CHECKING:
    from runtime import Partition, Runtime


async def _in_vtl1(rt: Runtime, **config: object) -> Partition:
    part = await new_partition(rt, **config)
    vp = part.vp(0)
    assert await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) == HypercallResult(
        status=HvStatus.SUCCESS
    )
    await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context()))
    await vp.execute(VtlCall())
    return part


def _set_rsp(value: int) -> SetVpRegisters:
    return SetVpRegisters(registers=[RegisterAssoc(name=Reg.RSP, value=value)], target_vtl=Vtl.VTL0)


async def test_updates_to_vtl0_coalesce_until_vtl0_is_entered() -> None:
    """Batched: VTL1's writes to VTL0 stay staged (no commit) until VTL0 runs again."""
    async with checked_runtime() as rt:
        part = await _in_vtl1(rt, batch_window=3600.0)
        vp = part.vp(0)
        commits_before = vp.statistics().commits
        for value in range(0x1000, 0x1010):
            await vp.execute(_set_rsp(value))
        stats = vp.statistics()
        # Only VTL1's own hypercall completions (RAX, RIP) committed, one per action entry.
        assert stats.staged_updates >= 1
        await vp.execute(VtlReturn(fast=True))
        await vp.execute(Rdmsr(msr=Msr.EFER))  # VTL0 entry: one commit for all 16 writes
        state = await vp.tdx_state(Vtl.VTL0)
        assert (await vp.registers(Vtl.VTL0, [Reg.RSP]))[Reg.RSP] == 0x100F
        assert vp.statistics().commits - commits_before < 16 + 16
        assert state.commits >= 1


async def test_eager_commits_every_register() -> None:
    """Eager: every accepted register commits at once, so VTL0 commits once per write."""
    async with checked_runtime() as rt:
        part = await _in_vtl1(rt, commit_policy="eager")
        vp = part.vp(0)
        before = (await vp.tdx_state(Vtl.VTL0)).commits
        for value in range(0x1000, 0x1010):
            await vp.execute(_set_rsp(value))
        after = (await vp.tdx_state(Vtl.VTL0)).commits
        assert after - before == 16


async def test_inspection_commits_staged_updates() -> None:
    """vp.tdx_state is a commit point: it never shows registers and derived state out of step."""
    async with checked_runtime() as rt:
        part = await _in_vtl1(rt, batch_window=3600.0)
        vp = part.vp(0)
        await vp.execute(_set_rsp(0x4242))
        before = part.statistics().vps[0].staged_updates
        assert before >= 1
        state = await vp.tdx_state(Vtl.VTL0)
        assert part.statistics().vps[0].staged_updates < before
        assert (await vp.registers(Vtl.VTL0, [Reg.RSP]))[Reg.RSP] == 0x4242
        assert state.commits >= 1


@pytest.mark.parametrize(("max_updates", "left_staged"), [(4, 1 + 2), (64, 5 + 2)])
async def test_count_window_commits_after_max_updates(max_updates: int, left_staged: int) -> None:
    """batch_max_updates closes the window: the (VP, VTL) commits when that many are staged."""
    async with checked_runtime() as rt:
        part = await _in_vtl1(rt, batch_max_updates=max_updates, batch_window=3600.0)
        vp = part.vp(0)
        registers = [RegisterAssoc(name=Reg.RSP, value=v) for v in range(0x10, 0x14)]
        await vp.execute(SetVpRegisters(registers=registers, target_vtl=Vtl.VTL0))
        # VTL0 holds the VtlCall's RIP advance plus 4 writes = 5 updates; with a window of 4 the
        # fourth closed it (1 left). VTL1 holds its own hypercall completion (RAX, RIP) = 2.
        assert part.statistics().vps[0].staged_updates == left_staged


async def test_an_actions_own_completion_opens_no_window() -> None:
    """A RIP advance touches no VMCS field: it commits after its step; a VMCS field waits (7.1)."""
    async with checked_runtime() as rt:
        part = await new_partition(rt, batch_window=3600.0)
        vp = part.vp(0)
        await vp.execute(Rdmsr(msr=Msr.EFER))
        commits = vp.statistics().commits
        await vp.execute(Rdmsr(msr=Msr.EFER))
        assert (vp.statistics().commits, vp.statistics().staged_updates) == (commits + 1, 0)
        assert not rt._scheduler._dirty
        await vp.execute(Wrmsr(msr=Msr.SYSENTER_CS, value=0x10))
        assert vp.statistics().staged_updates == 2  # GUEST_SYSENTER_CS and the RIP advance
        assert list(rt._scheduler._dirty) == [part._cells.cells[0]]
        assert rt.statistics().scheduler.window_commits == 0


async def test_time_window_commits_without_any_action() -> None:
    """batch_window closes the window: staged updates commit with no action and no inspection."""
    async with checked_runtime() as rt:
        # 0.2 s: the window cannot close before the first check, even on a loaded machine.
        part = await _in_vtl1(rt, batch_window=0.2)
        vp = part.vp(0)
        await vp.execute(_set_rsp(0x77))
        assert part.statistics().vps[0].staged_updates >= 1
        with anyio.fail_after(5):
            # Poll a counter: a flusher commit has no event to wait on.
            while part.statistics().vps[0].staged_updates:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert rt.statistics().scheduler.window_commits >= 1


async def test_a_failing_step_fails_only_its_caller() -> None:
    """An exception in one VP's step reaches that caller; the VP and its neighbours carry on."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        other = await new_partition(rt)
        vp = part.vp(0)
        with pytest.raises(UnsupportedAction, match="FLUSH_VIRTUAL_ADDRESS_SPACE"):
            await vp.execute(Hypercall(code=HypercallCode.FLUSH_VIRTUAL_ADDRESS_SPACE))
        with pytest.raises(TypeError, match="not a guest action"):
            await vp.execute("VtlCall")  # type: ignore[arg-type]
        assert await vp.execute(Rdmsr(msr=Msr.EFER)) is not None
        assert await other.vp(0).execute(Rdmsr(msr=Msr.EFER)) is not None
        # The non-action never reached a step: it was refused where it entered execute.
        assert rt.statistics().scheduler.errors == 1


async def test_many_vps_progress_concurrently() -> None:
    """Concurrent callers on many VPs of many partitions all complete, each in order."""
    async with checked_runtime() as rt:
        parts = [await new_partition(rt) for _ in range(8)]
        done: list[int] = []

        async def drive(part: Partition) -> None:
            vp = part.vp(0)
            for _ in range(20):
                out = await vp.execute(Rdmsr(msr=Msr.EFER))
                assert out is not None
            done.append(part.partition_id)

        async with anyio.create_task_group() as tg:
            for part in parts:
                tg.start_soon(drive, part)
        assert sorted(done) == [p.partition_id for p in parts]
        assert rt.statistics().scheduler.largest_pass > 1
