"""The runtime host: lifecycle, configuration errors, stop semantics, isolation between partitions."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import sniffio

from actors import Busy, PartitionFailed, VpNotRunning
from protocol import (
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HvVtlEntryReason,
    HypercallResult,
    Rdmsr,
    Vtl,
    VtlCall,
    WriteVtlControl,
)
from protocol._x86 import RESET_RIP, Msr
from runtime import open_runtime
from tests.guest import checked_runtime, long_mode_context, new_partition


def _living_tasks() -> int:
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_statistics().tasks_living
    return len(asyncio.all_tasks())


async def test_nothing_outlives_the_runtime() -> None:
    """After open_runtime exits, every task it started has ended (RELIABILITY D3)."""
    before = _living_tasks()
    async with open_runtime() as rt:
        part = await new_partition(rt)
        await part.vp(0).execute(Rdmsr(msr=Msr.EFER))
        assert _living_tasks() > before
    await anyio.lowlevel.checkpoint()
    assert _living_tasks() == before


async def test_bad_config_names_the_field() -> None:
    """A bad or unknown PartitionConfig keyword raises ValueError naming the field."""
    async with open_runtime() as rt:
        with pytest.raises(ValueError, match="vp_count"):
            await rt.create_partition(vp_count=0)
        with pytest.raises(ValueError, match="vp_count"):
            await rt.create_partition(vp_count="4")
        with pytest.raises(ValueError, match="commit_policy"):
            await rt.create_partition(commit_policy="lazy")
        with pytest.raises(ValueError, match="bogus"):
            await rt.create_partition(bogus=1)
        with pytest.raises(ValueError, match="vp_count"):
            await rt.create_partition(vp_count=1025)
        # The runtime and a good partition still work afterwards.
        part = await rt.create_partition(vp_count=2)
        out = await part.vp(0).execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))
        assert out == HypercallResult(status=HvStatus.SUCCESS)


async def test_open_runtime_rejects_bad_options() -> None:
    """open_runtime refuses an unknown clock and a non-positive mailbox capacity."""
    with pytest.raises(ValueError, match="clock"):
        async with open_runtime(clock="wall"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="mailbox_capacity"):
        async with open_runtime(mailbox_capacity=0):
            pass


async def test_vp_handle_checks_its_index() -> None:
    """Partition.vp refuses an index outside 0..vp_count-1 with the partition in the message."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        with pytest.raises(ValueError, match="out of range"):
            part.vp(4)
        with pytest.raises(ValueError, match="out of range"):
            part.vp(-1)


async def test_an_ap_that_was_not_started_refuses_actions() -> None:
    """An AP runs only once started: execute raises VpNotRunning naming the VP."""
    async with checked_runtime() as rt:
        part = await new_partition(rt)
        with pytest.raises(VpNotRunning, match="vp 1"):
            await part.vp(1).execute(Rdmsr(msr=Msr.EFER))
        # Inspection works on a VP that is not running: it shows the reset state.
        regs = await part.vp(1).registers(Vtl.VTL0, [Reg.RIP])
        assert regs == {Reg.RIP: RESET_RIP}


async def test_inspection_refuses_vtl2_and_unknown_registers() -> None:
    """Inspection takes VTL0 or VTL1 and registers held in a register file."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        with pytest.raises(ValueError, match=r"VTL0 or Vtl\.VTL1"):
            await vp.tdx_state(Vtl.VTL2)
        with pytest.raises(ValueError, match="not held"):
            await vp.registers(Vtl.VTL0, [Reg.VSM_VP_STATUS])
        # The VP still serves actions afterwards.
        assert await vp.execute(Rdmsr(msr=Msr.EFER)) is not None


async def test_stopped_partition_refuses_and_others_carry_on() -> None:
    """After stop(), the partition's VPs raise ClosedResourceError; other partitions go on."""
    async with checked_runtime() as rt:
        first = await new_partition(rt)
        second = await new_partition(rt)
        await first.stop()
        with pytest.raises(anyio.ClosedResourceError, match=f"partition {first.partition_id}"):
            await first.vp(0).execute(Rdmsr(msr=Msr.EFER))
        out = await second.vp(0).execute(GetVpRegisters(names=[Reg.VSM_CAPABILITIES]))
        assert out == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1, values=[0x2_0002])


async def test_full_mailbox_raises_busy() -> None:
    """A VP's bounded mailbox refuses the message past its capacity with Busy, losing nothing."""
    async with open_runtime(mailbox_capacity=2) as rt:
        vp = (await new_partition(rt)).vp(0)
        results: list[object] = []
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                results.append(await vp.execute(Rdmsr(msr=Msr.EFER)))
            except Busy as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
        # Every call ended: either completed or refused with Busy, never lost.
        assert len(results) + len(errors) == 5
        assert errors
        assert all("mailbox full" in str(e) for e in errors)
        assert vp.statistics().actions == len(results)


async def test_statistics_count_actions_and_partitions() -> None:
    """Runtime, partition and VP statistics count what happened."""
    async with checked_runtime() as rt:
        part = await new_partition(rt, vp_count=2)
        vp = part.vp(0)
        for _ in range(3):
            await vp.execute(Rdmsr(msr=Msr.EFER))
        stats = part.statistics()
        assert [v.actions for v in stats.vps] == [3, 0]
        assert stats.mailbox_high_water >= 1
        runtime_stats = rt.statistics()
        assert runtime_stats.partitions == 1
        assert runtime_stats.vps == 2
        assert runtime_stats.scheduler.steps >= 3


async def test_vtl_control_shows_entry_reason_and_return_values() -> None:
    """vp.vtl_control reads VTL1's VP-assist VTL control block: entry reason and return RAX/RCX."""
    async with checked_runtime() as rt:
        vp = (await new_partition(rt)).vp(0)
        await vp.execute(EnablePartitionVtl(target_vtl=Vtl.VTL1))
        await vp.execute(EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context()))
        assert (await vp.vtl_control(Vtl.VTL1)).entry_reason == HvVtlEntryReason.RESERVED
        await vp.execute(VtlCall())
        await vp.execute(WriteVtlControl(return_rax=0x1234, return_rcx=0x5678))
        control = await vp.vtl_control(Vtl.VTL1)
        assert control.entry_reason == HvVtlEntryReason.VTL_CALL
        assert (control.return_rax, control.return_rcx) == (0x1234, 0x5678)
        assert not control.vina_asserted


async def test_failed_partition_fails_every_vp_and_others_carry_on() -> None:
    """fail_partition: waiting and later calls raise PartitionFailed(reason); others go on (G5)."""
    async with checked_runtime() as rt:
        doomed = await new_partition(rt)
        other = await new_partition(rt)
        scheduler = rt._scheduler
        # A caller already waiting: its action sits in VP 1's mailbox (VP 1 is not scheduled
        # before the failure because the failure happens synchronously right after posting).
        slot = scheduler.backend.slot()
        scheduler.post_action(doomed._cells.cells[0], Rdmsr(msr=Msr.EFER), slot)
        scheduler.fail_partition(doomed._cells, "VM entry failed: check 1 (IA-32e mode guest)")
        with pytest.raises(PartitionFailed) as waiting:
            await slot
        assert str(waiting.value) == "VM entry failed: check 1 (IA-32e mode guest)"
        assert doomed.failure == str(waiting.value)
        for index in range(doomed.vp_count):
            with pytest.raises(PartitionFailed, match="check 1"):
                await doomed.vp(index).execute(Rdmsr(msr=Msr.EFER))
            with pytest.raises(PartitionFailed, match="check 1"):
                await doomed.vp(index).registers(Vtl.VTL0, [Reg.RIP])
        assert doomed.statistics().failure == doomed.failure
        assert "FAILED" in repr(doomed)
        assert rt.statistics().scheduler.failed_partitions == 1
        out = await other.vp(0).execute(GetVpRegisters(names=[Reg.VSM_CAPABILITIES]))
        assert out == HypercallResult(status=HvStatus.SUCCESS, reps_completed=1, values=[0x2_0002])
        assert other.failure is None
