"""Workloads as guest models: boot brings up Guest VSM, each operation does what it says."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from protocol import Completed, HvRegisterName as Reg, Rdmsr, Vtl, VtlCall
from protocol._x86 import CR0_WP, CR4_SMEP, Msr
from runtime import open_runtime
from runtime._clock import RealClock, VirtualClock
from runtime.lab.costs import CostModel
from runtime.lab.metrics import PhaseRecorder
from runtime.lab.workloads import (
    OPERATIONS,
    Driver,
    Guest,
    MixError,
    boot_partition,
    describe,
    drive,
    recover,
    resolve,
)
from runtime.lab.workloads._guest import VTL0_CR0, Unexpected

if TYPE_CHECKING:
    from protocol import Action, Outcome
    from runtime import Runtime
    from runtime.lab.workloads import Program


def _one(guest: Guest, action: Action) -> Program[Outcome]:
    return (yield guest, action)


async def _do(guest: Guest, action: Action) -> Outcome:
    """One measured action on ``guest`` (a one-action guest program, driven)."""
    return await drive(_one(guest, action))


async def booted(rt: Runtime, vps: int = 4, *, virtual: bool = False) -> tuple[list[Guest], PhaseRecorder]:
    """A partition brought up by the boot workload, and the recorder its actions went to."""
    partition = await rt.create_partition(vp_count=vps)
    recorder = PhaseRecorder(0, 1_000)
    clock = VirtualClock() if virtual else RealClock()
    driver = Driver(0, clock, recorder, CostModel())
    guests = [Guest(partition.vp(i), partition.partition_id, i, driver) for i in range(vps)]
    await boot_partition(guests, random.Random(1))
    return guests, recorder


async def test_boot_brings_up_guest_vsm_on_every_vp() -> None:
    """After boot every VP runs VTL0 in long mode, with VTL1 enabled and its intercepts registered."""
    async with open_runtime(seed=1, check_invariants=True) as rt:
        guests, recorder = await booted(rt)
        for guest in guests:
            vp = guest.vp
            assert vp.active_vtl == Vtl.VTL0
            vtl0 = await vp.tdx_state(Vtl.VTL0)
            assert vtl0.long_mode_guest
            assert vtl0.cr0_guest_host_mask & CR0_WP
            assert vtl0.cr4_guest_host_mask & CR4_SMEP
            assert (await vp.tdx_state(Vtl.VTL1)).long_mode_guest
            registers = await vp.registers(Vtl.VTL1, [Reg.SIPP])
            assert registers[Reg.SIPP] & 1
        assert recorder.unexpected_counts == {}
        assert recorder.outcomes[("StartVirtualProcessor", "HypercallResult")] == 3


@pytest.mark.parametrize("name", sorted(OPERATIONS))
async def test_operation_workloads_end_in_vtl0_without_surprises(name: str) -> None:
    """Twenty operations of each workload on a booted partition: no surprise, back in VTL0."""
    async with open_runtime(seed=1, check_invariants=True) as rt:
        guests, recorder = await booted(rt, 2)
        rng = random.Random(3)
        for _ in range(20):
            guest = guests[rng.randrange(2)]
            await drive(OPERATIONS[name].episode(guest, rng))
            assert guest.vp.active_vtl == Vtl.VTL0
        assert recorder.unexpected_counts == {}


async def test_intercept_storm_takes_a_secure_intercept_per_operation() -> None:
    """intercept-storm: each operation's VTL0 write is intercepted; VTL1 applies it."""
    async with open_runtime(seed=1) as rt:
        guests, recorder = await booted(rt, 1)
        rng = random.Random(1)
        for _ in range(10):
            await drive(OPERATIONS["intercept-storm"].episode(guests[0], rng))
        intercepted = sum(c for (_, outcome), c in recorder.outcomes.items() if outcome == "Intercepted")
        assert intercepted == 10
        cr0 = (await guests[0].vp.registers(Vtl.VTL0, [Reg.CR0]))[Reg.CR0]
        assert cr0 == guests[0].cr0


async def test_register_storm_leaves_vtl0_cr0_as_it_found_it() -> None:
    """register-storm toggles CR0.WP off and on from VTL1: VTL0's CR0 ends where it started."""
    async with open_runtime(seed=1) as rt:
        guests, _ = await booted(rt, 1)
        vp = guests[0].vp
        rip = (await vp.registers(Vtl.VTL0, [Reg.RIP]))[Reg.RIP]
        await drive(OPERATIONS["register-storm"].episode(guests[0], random.Random(2)))
        after = await vp.registers(Vtl.VTL0, [Reg.CR0, Reg.RIP])
        assert after[Reg.CR0] == VTL0_CR0
        assert after[Reg.RIP] > rip


async def test_protections_lifts_what_it_protected() -> None:
    """protections: after an operation VTL0 writes every page of its range without an intercept."""
    async with open_runtime(seed=1) as rt:
        guests, recorder = await booted(rt, 1)
        await drive(OPERATIONS["protections"].episode(guests[0], random.Random(4)))
        assert recorder.outcomes[("MemoryAccess", "Intercepted")] == 1
        assert recorder.outcomes[("MemoryAccess", "Completed")] == 1


async def test_virtual_latency_is_the_modelled_cost() -> None:
    """On a virtual clock an exit costs l2 exit + user-mode round trip + its VMCS writes."""
    async with open_runtime(seed=1, clock="virtual") as rt:
        guests, recorder = await booted(rt, 1, virtual=True)
        guest = guests[0]
        before = guest.driver.clock.now()
        assert type(await _do(guest, Rdmsr(msr=Msr.APIC_BASE))) is Completed
        elapsed = guest.driver.clock.now() - before
        costs = CostModel()
        base = costs.l2_exit_to_l1_and_reenter + costs.l1_user_mode_roundtrip
        assert (elapsed * costs.ghz - base) % costs.commit_overhead < 1
        assert recorder.actions > 0


async def test_recover_returns_to_vtl0_after_a_surprise() -> None:
    """A guest model left in VTL1 (an operation cut short) is brought back to VTL0 by ``recover``."""
    async with open_runtime(seed=1) as rt:
        guests, _ = await booted(rt, 1)
        guest = guests[0]
        await _do(guest, VtlCall())
        assert guest.vp.active_vtl == Vtl.VTL1
        assert await drive(recover(guest))
        assert guest.vp.active_vtl == Vtl.VTL0
        assert await drive(recover(guest))  # nothing to do in VTL0


async def test_pingpong_without_vsm_is_unexpected() -> None:
    """vtl-pingpong on a partition that never booted VSM gets #UD: an ``Unexpected``, not a crash."""
    async with open_runtime(seed=1) as rt:
        partition = await rt.create_partition(vp_count=1)
        driver = Driver(0, RealClock(), PhaseRecorder(0, 1_000), None)
        guest = Guest(partition.vp(0), 0, 0, driver)
        with pytest.raises(Unexpected, match="VtlCall"):
            await drive(OPERATIONS["vtl-pingpong"].episode(guest, random.Random(1)))


def test_resolve_names() -> None:
    """resolve: built-in names, the default mix, and unknown names refused in one message."""
    assert resolve("boot").weights == {}
    assert resolve("exits").weights == {"exits": 1.0}
    assert set(resolve("mixed").weights) == set(OPERATIONS)
    with pytest.raises(MixError, match="unknown workload 'nope'"):
        resolve("nope")
    names = [name for name, _ in describe()]
    assert names[0] == "boot"
    assert names[-1] == "mixed"
    assert all(summary for _, summary in describe())
