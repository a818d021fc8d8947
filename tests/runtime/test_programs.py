"""Guest programs run in-line (``runtime._programs``): the driven path's outcomes, state and counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from protocol import (
    HV_VP_INDEX_SELF,
    Completed,
    EnablePartitionVtl,
    EnableVpVtl,
    HvStatus,
    HypercallResult,
    MovToCr,
    Msr,
    Rdmsr,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    Wrmsr,
)
from protocol._x86 import CR0_ET, CR0_PG
from runtime import PartitionFailed, VpNotRunning, open_runtime
from runtime._programs import Pacer, execute_inline, run_driven, run_inline
from runtime.testing import LONG_MODE_CR0, long_mode_context

if TYPE_CHECKING:
    from collections.abc import Generator

    from protocol import Action, Outcome
    from runtime import Partition, Vp


def bring_up(part: Partition) -> Generator[tuple[Vp, Action], Outcome, list[Outcome]]:
    """VTL1 on, a VTL call, an AP started (a supervisor request), the AP runs; all outcomes."""
    bsp, ap = part.vp(0), part.vp(1)
    outcomes = [(yield bsp, EnablePartitionVtl(target_vtl=Vtl.VTL1))]
    enable = EnableVpVtl(vp_index=HV_VP_INDEX_SELF, target_vtl=Vtl.VTL1, context=long_mode_context(0x40_0000))
    outcomes.append((yield bsp, enable))
    outcomes.append((yield bsp, VtlCall()))
    outcomes.append((yield bsp, MovToCr(cr=0, value=LONG_MODE_CR0)))
    outcomes.append((yield bsp, VtlReturn(fast=True)))
    start = StartVirtualProcessor(vp_index=1, target_vtl=Vtl.VTL0, context=long_mode_context(0x1000))
    outcomes.append((yield bsp, start))
    # The supervisor's control message to the AP has been applied: it runs now.
    assert ap.active_vtl == Vtl.VTL0
    outcomes.append((yield ap, Rdmsr(msr=Msr.APIC_BASE)))
    outcomes.append((yield ap, Wrmsr(msr=Msr.KERNEL_GS_BASE, value=0xFFFF_8000_0000_1000)))
    return outcomes


async def _state(part: Partition) -> list[object]:
    stats = part.statistics()
    return [
        await part.vp(0).tdx_state(Vtl.VTL0),
        await part.vp(0).tdx_state(Vtl.VTL1),
        await part.vp(1).tdx_state(Vtl.VTL0),
        [(vp.actions, vp.vtl_switches, vp.commits, vp.vmcs_writes, vp.staged_updates) for vp in stats.vps],
        stats.supervisor,
    ]


@pytest.mark.parametrize("policy", ["batched", "eager"])
async def test_inline_gives_the_driven_outcomes_state_and_counters(policy: str) -> None:
    """The same program in-line and driven: equal outcomes, TDX state, VP and supervisor counters."""
    results = []
    for inline in (False, True):
        async with open_runtime(seed=1, clock="virtual", check_invariants=True) as rt:
            part = await rt.create_partition(vp_count=2, commit_policy=policy)
            program = bring_up(part)
            outcomes = run_inline(program) if inline else await run_driven(program)
            results.append((outcomes, await _state(part)))
            stats = rt.statistics().scheduler
            if inline:  # the runner task ran for the inspections only, not for an action
                assert stats.passes - stats.inline_passes <= 3 < stats.inline_passes
    (driven, driven_state), (inline, inline_state) = results
    assert inline == driven
    assert inline_state == driven_state
    assert inline[0] == HypercallResult(status=HvStatus.SUCCESS)
    assert type(inline[-2]) is Completed


async def test_an_action_error_is_thrown_into_the_program() -> None:
    """VpNotRunning from an action surfaces at the program's yield, which may handle it."""

    def probe(vp: Vp) -> Generator[tuple[Vp, Action], Outcome, str]:
        try:
            yield vp, Rdmsr(msr=Msr.APIC_BASE)
        except VpNotRunning as exc:
            return f"caught: {exc}"
        return "ran"

    async with open_runtime(seed=1, clock="virtual") as rt:
        ap = (await rt.create_partition(vp_count=2)).vp(1)
        assert run_inline(probe(ap)).startswith("caught: vp 1")
        assert (await run_driven(probe(ap))).startswith("caught: vp 1")
        assert rt.statistics().scheduler.errors == 2


async def test_inline_runs_behind_queued_mail_and_refuses_a_stopped_partition() -> None:
    """A message queued by the mailbox path runs first (in mailbox order); a stopped partition
    refuses in-line actions as it refuses vp.execute."""
    async with open_runtime(seed=1, clock="virtual") as rt:
        part = await rt.create_partition(vp_count=1)
        vp = part.vp(0)
        # What vp.execute does before it waits: the action sits in the mailbox (no checkpoint yet).
        scheduler = vp._scheduler
        slot = scheduler.backend.slot()
        scheduler.post_action(vp._cell, Wrmsr(msr=Msr.KERNEL_GS_BASE, value=0xFFFF_8000_0000_2000), slot)
        assert execute_inline(vp, Rdmsr(msr=Msr.KERNEL_GS_BASE)) == Completed(value=0xFFFF_8000_0000_2000)
        assert slot.done()
        assert await slot == Completed()  # the driven caller gets its reply as usual
        await part.stop()
        with pytest.raises(anyio.ClosedResourceError, match="stopped"):
            execute_inline(vp, Rdmsr(msr=Msr.APIC_BASE))


async def test_pacer_says_when_a_slice_is_used_up() -> None:
    """due() turns true after slice_s of wall time; pause() checkpoints and starts a new slice."""
    pacer = Pacer(slice_s=0.0)
    assert pacer.due()
    long = Pacer(slice_s=3600)
    assert not long.due()
    with anyio.fail_after(5):
        await pacer.pause()


@pytest.mark.parametrize("inline", [False, True], ids=["driven", "inline"])
async def test_a_fatal_condition_ends_the_partition_on_either_path(inline: bool) -> None:
    """DOMAIN 7.2 in-line as driven: the VM entry after CR0.PG without PE fails the partition;
    every VP of it raises PartitionFailed with the reason, and another partition runs on."""

    def fatal(vp: Vp) -> Generator[tuple[Vp, Action], Outcome, str]:
        yield vp, MovToCr(cr=0, value=CR0_PG | CR0_ET)
        try:
            yield vp, Rdmsr(msr=Msr.APIC_BASE)  # VM entry: check 3 fails
        except PartitionFailed as exc:
            return str(exc)
        return "ran"

    async with open_runtime(seed=1, clock="virtual") as rt:
        doomed_part = await rt.create_partition(vp_count=1)
        other_part = await rt.create_partition(vp_count=1)
        program = fatal(doomed_part.vp(0))
        reason = run_inline(program) if inline else await run_driven(program)
        assert doomed_part.failure is not None
        assert reason == doomed_part.failure
        assert "check 3" in reason
        with pytest.raises(PartitionFailed):
            execute_inline(doomed_part.vp(0), Rdmsr(msr=Msr.APIC_BASE))
        assert type(execute_inline(other_part.vp(0), Rdmsr(msr=Msr.APIC_BASE))) is Completed
