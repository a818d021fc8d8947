"""DOMAIN 7.2: a fatal condition ends the whole partition, callers already waiting included.

``BatchingScheduler.fail_partition(partition, reason)`` is what a fatal step calls and what a
supervisor may call (issue 9's restart intensity): every VP raises ``PartitionFailed`` from
``execute`` and from inspections, queued actions and hypercalls parked on the supervisor get it
at once, ``Partition.failure`` keeps the first reason, and other partitions carry on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from actors import PartitionFailed, VpFailed
from protocol import (
    Completed,
    EnablePartitionVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    MovToCr,
    Rdmsr,
    StartVirtualProcessor,
    Vtl,
)
from protocol._x86 import CR0_ET, CR0_PG, Msr
from tests.guest import checked_runtime, long_mode_context

if TYPE_CHECKING:
    from runtime import Partition

_STATUS = GetVpRegisters(names=[Reg.VSM_VP_STATUS])


async def _started(part: Partition) -> None:
    """VP 0 starts VPs 1-3 in VTL0."""
    for index in range(1, part.vp_count):
        start = StartVirtualProcessor(vp_index=index, target_vtl=Vtl.VTL0, context=long_mode_context(0x1000))
        await part.vp(0).execute(start)


def test_vp_failed_is_partition_failed() -> None:
    """API.md: VpFailed, kept, is an alias of PartitionFailed."""
    assert VpFailed is PartitionFailed


async def test_fail_partition_fails_every_vp_and_keeps_the_first_reason() -> None:
    """The supervisor's entry point: every VP of the partition raises, the other partition runs."""
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=4)
        other = await rt.create_partition(vp_count=2)
        await _started(part)
        scheduler = rt._scheduler  # the engine object issue 9's supervisor holds
        scheduler.fail_partition(part._cells, "partition 0: restart intensity exceeded")
        scheduler.fail_partition(part._cells, "a second reason is ignored")
        assert part.failure == "partition 0: restart intensity exceeded"
        assert part.statistics().failure == part.failure
        for index in range(4):
            vp = part.vp(index)
            with pytest.raises(PartitionFailed, match="restart intensity exceeded"):
                await vp.execute(_STATUS)
            with pytest.raises(PartitionFailed, match="restart intensity exceeded"):
                await vp.registers(Vtl.VTL0, [Reg.RIP])
            with pytest.raises(PartitionFailed):
                await vp.tdx_state(Vtl.VTL1)
            with pytest.raises(PartitionFailed):
                await vp.sint0_message(Vtl.VTL1)
            assert vp.statistics().failed
        assert "FAILED" in repr(part)
        assert other.failure is None
        assert await other.vp(0).execute(EnablePartitionVtl(target_vtl=Vtl.VTL1)) is not None
        await part.stop()  # a failed partition still stops cleanly


async def test_callers_already_waiting_get_partition_failed() -> None:
    """VP 1 parks a hypercall on the supervisor and VPs 2-3 queue actions; then VP 0's MOV CR0
    (PG without PE, DOMAIN 7.4) is followed by an action whose VM entry fails: every waiting
    caller gets PartitionFailed with the same reason; nothing is left queued."""
    async with checked_runtime() as rt:
        part = await rt.create_partition(vp_count=4)
        await _started(part)
        vp0 = part.vp(0)
        assert await vp0.execute(MovToCr(cr=0, value=CR0_PG | CR0_ET)) == Completed()
        requests = part.statistics().supervisor.requests
        scheduler = rt._scheduler
        cells = part._cells.cells
        posts = [
            ("vp1-parked", 1, EnablePartitionVtl(target_vtl=Vtl.VTL1)),
            ("vp0-fatal", 0, Rdmsr(msr=Msr.APIC_BASE)),
            *((f"vp{index}-queued-{k}", index, _STATUS) for index in (2, 3) for k in range(3)),
        ]
        # Posted in one synchronous block, so the scheduler's first pass sees them in this order
        # on either backend: VP 1's hypercall runs up to its supervisor request, then VP 0's VM
        # entry fails the partition before VPs 2 and 3 (whose actions are queued) take a step.
        slots = {}
        for name, index, action in posts:
            slots[name] = scheduler.backend.slot()
            scheduler.post_action(cells[index], action, slots[name])
        results: dict[str, object] = {}
        for name, slot in slots.items():
            try:
                results[name] = await slot
            except PartitionFailed as exc:
                results[name] = exc
        assert part.failure is not None
        assert "vp 0 VTL0: VM entry failed" in part.failure
        assert "check 3 (CR0 and CR4 fixed bits)" in part.failure
        assert len(results) == 8
        for name, result in results.items():
            assert isinstance(result, PartitionFailed), (name, result)
            assert str(result) == part.failure
        stats = part.statistics()
        assert all(vp.failed for vp in stats.vps)
        assert stats.supervisor.requests == requests  # the parked request died with the partition
        with pytest.raises(PartitionFailed, match=re.escape(part.failure)):
            await part.vp(2).execute(_STATUS)
