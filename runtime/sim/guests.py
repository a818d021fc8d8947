"""The guests of a seed: each partition's boot, one program per VP, and an inspector per partition.

A program draws its VP's next action from its role (``programs``: VTL0 or VTL1 actions, legal
and illegal), runs it through the world's history, and checks what DOMAIN 5 says about the
outcome (intercept atomicity, entry reasons, TLB locks released on return).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import trio
import trio.lowlevel

from actors import ActorCrashed, Busy, PartitionFailed, VpFailed, VpNotRunning
from protocol import (
    EnablePartitionVtl,
    EnableVpVtl,
    HvRegisterName as Reg,
    Intercepted,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    Wrmsr,
)
from protocol._x86 import EFER_LME, EFER_NXE, EFER_SCE, Msr

from ..testing import LONG_MODE_CR0, LONG_MODE_CR4, long_mode_context, peek
from .history import TRACKED, TRACKED_MSRS
from .programs import intercept_reply, vtl0_action, vtl1_action

if TYPE_CHECKING:
    import random

    from .._host import Vp
    from .world import World

__all__ = ("boot", "inspector", "program")

_SIMP: Final = 0x7F_F000 | 1
_SINT0: Final = 0x30 | 1 << 17


async def boot(world: World, lp: int) -> None:
    """Bring up Guest VSM on one partition (DOMAIN S1, S2), retrying crashed steps."""
    part = world.parts[lp]
    count = part.vp_count
    mbec = world.rng.random() < 0.5
    steps: list[tuple[int, Any]] = [
        (0, Wrmsr(msr=Msr.EFER, value=EFER_LME | EFER_NXE | EFER_SCE)),
        (0, MovToCr(cr=4, value=LONG_MODE_CR4)),
        (0, MovToCr(cr=0, value=LONG_MODE_CR0)),
        (0, EnablePartitionVtl(target_vtl=Vtl.VTL1, enable_mbec=mbec)),
        (0, EnableVpVtl(vp_index=0, target_vtl=Vtl.VTL1, context=long_mode_context(0x40_0000))),
        (0, VtlCall()),
        (0, SetVpRegisters(registers=[RegisterAssoc(name=Reg.VSM_PARTITION_CONFIG, value=0x1F)])),
        (
            0,
            SetVpRegisters(
                registers=[
                    RegisterAssoc(name=Reg.SIPP, value=_SIMP),
                    RegisterAssoc(name=Reg.SINT0, value=_SINT0),
                ]
            ),
        ),
    ]
    for ap in range(1, count):
        steps.append((0, EnableVpVtl(vp_index=ap, target_vtl=Vtl.VTL1, context=long_mode_context(0x40_0000))))
        steps.append(
            (0, StartVirtualProcessor(vp_index=ap, target_vtl=Vtl.VTL0, context=long_mode_context()))
        )
    steps.append((0, VtlReturn(fast=True)))
    for index, action in steps:
        error: BaseException | None = None
        for _ in range(50):
            error = (await world.call(lp, index, action, faults=False)).error
            if not isinstance(error, ActorCrashed):
                break
        if isinstance(error, PartitionFailed):
            return


async def program(world: World, lp: int, index: int) -> None:
    """The guest on VP ``index`` of partition ``lp``: its role's actions until the safety phase ends."""
    rng = world.rng_for("program", lp, index)
    world.active += 1
    try:
        while not world.safety_over:
            await world.pause_point()
            part = world.parts[lp]
            if part.failure is not None:
                return
            vp = part.vp(index)
            burst = world.injector.overload()
            if burst > 1:
                msr = rng.choice(tuple(TRACKED_MSRS))
                async with trio.open_nursery() as nursery:
                    for _ in range(burst):
                        nursery.start_soon(world.call, lp, index, Rdmsr(msr=msr))
                continue
            await _one_step(world, rng, lp, index, vp)
    finally:
        world.active -= 1
        if world.pausing and world.parked == world.active:
            world.all_parked.set()


async def _one_step(world: World, rng: random.Random, lp: int, index: int, vp: Vp) -> None:
    state = peek(vp)
    vtl = state.active_vtl
    count = world.parts[lp].vp_count
    action = vtl0_action(rng, count) if vtl == Vtl.VTL0 else vtl1_action(rng, count)
    staged = state.vtls[0].staged_updates + state.vtls[1].staged_updates
    # Only when this action runs next (no cancelled call still in flight on the VP) does
    # the state now equal the state right before it: then check intercept atomicity.
    cell = vp._cell
    next_up = not cell.busy and not cell.mailbox.queue
    before = (
        state.read(Vtl.VTL0, Reg.RIP),
        {name: state.read(Vtl.VTL0, name) for name in (Reg.CR0, Reg.CR4, *TRACKED)},
    )
    result = await world.call(lp, index, action)
    outcome = result.outcome
    if isinstance(result.error, VpNotRunning):
        await trio.sleep(0.001)  # an AP nobody started yet
        return
    if isinstance(result.error, VpFailed | PartitionFailed):
        await trio.sleep(0.001)
        return
    state = peek(vp)  # the VP may have been restarted: a new state object
    if isinstance(outcome, VtlSwitched):
        if outcome.to_vtl == Vtl.VTL1:
            if staged:
                world.history.hit("vtl_call_with_updates_staged")
            reason = state.vtls[Vtl.VTL1].entry_reason
            if reason != 1:
                world.fail(f"partition {lp} vp {index}: a VTL call entered VTL1 with entry reason {reason}")
        elif state.vtl1 is not None and state.vtl1.tlb_locked:
            world.fail(f"partition {lp} vp {index}: VtlReturn left a TLB lock held (DOMAIN 5 item 13)")
    if isinstance(outcome, Intercepted):
        if staged:
            world.history.hit("intercept_while_updates_coalesced")
        after = (state.read(Vtl.VTL0, Reg.RIP), {name: state.read(Vtl.VTL0, name) for name in before[1]})
        if next_up and after != before:
            changed = {k.name: (before[1][k], after[1][k]) for k in before[1] if before[1][k] != after[1][k]}
            if before[0] != after[0]:
                changed["RIP"] = (before[0], after[0])
            world.fail(
                f"partition {lp} vp {index}: an intercepted {action!r} changed VTL0 {changed} (item 11)"
            )
        if state.active_vtl != Vtl.VTL1 or state.vtls[Vtl.VTL1].entry_reason != 2:
            world.fail(f"partition {lp} vp {index}: an intercept did not enter VTL1 with reason 2 (item 13)")
        for reply in intercept_reply(rng, outcome.message):
            done = await world.call(lp, index, reply)
            if isinstance(reply, VtlReturn) and isinstance(done.outcome, VtlSwitched):
                world.history.hit("intercept_handler_returns_to_vtl0")
            if done.status != "ok":
                break


async def inspector(world: World, lp: int) -> None:
    """Reads tracked registers now and then through inspections (linearizability reads)."""
    rng = world.rng_for("inspector", lp)
    world.active += 1
    try:
        while not world.safety_over:
            for _ in range(rng.randrange(5, 80)):  # a while, in steps (virtual time may stand still)
                await trio.lowlevel.checkpoint()
            await world.pause_point()
            part = world.parts[lp]
            if part.failure is not None:
                return
            index = rng.randrange(part.vp_count)
            vtl = rng.choice((Vtl.VTL0, Vtl.VTL1))
            start = world.history.tick()
            try:
                values = await part.vp(index).registers(vtl, list(TRACKED))
            except (ActorCrashed, Busy, PartitionFailed, trio.ClosedResourceError):
                continue  # nothing was read
            world.history.read_inspection((lp, index), int(vtl), values, start, world.history.tick())
    finally:
        world.active -= 1
        if world.pausing and world.parked == world.active:
            world.all_parked.set()
