"""The chaos of a seed: partitions moved by snapshot and restore mid-run, failed ones replaced."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio
import trio.lowlevel

from actors import ActorCrashed, PartitionFailed

from .guests import boot, inspector, program

if TYPE_CHECKING:
    import random

    from .._host import Partition, Runtime
    from .world import World

__all__ = ("chaos", "spawn")

#: Failed partitions a seed replaces with new ones.
_REPLACEMENTS: Final = 10


async def chaos(world: World, rt: Runtime, nursery: trio.Nursery) -> None:
    """Moves partitions by snapshot and restore at seeded steps; replaces failed partitions.

    A partition that failed (restart intensity exceeded) is replaced by a new one, booted
    under the same faults, with programs of its own (at most ``_REPLACEMENTS`` times), so a
    seed keeps exploring after a partition dies. The task sleeps until a mark, a failure or
    the end of the safety phase wakes it (it spends no steps polling).
    """
    rng = world.rng_for("chaos")
    marks = sorted(rng.randrange(world.budget // 8, world.budget // 2) for _ in range(world.plan.snapshot))
    marks.append(world.budget)  # the end of the safety phase
    replaced: set[int] = set()
    tracer = world.tracer
    while not world.safety_over:
        tracer.wake = world.chaos_wakeup = trio.Event()
        tracer.wake_at = max(marks[0], tracer.steps + 1)
        await world.chaos_wakeup.wait()
        for lp, part in enumerate(list(world.parts)):
            if part.failure is not None and lp not in replaced and len(replaced) < _REPLACEMENTS:
                replaced.add(lp)
                await spawn(world, rt, nursery, _config_of(part))
        if len(marks) > 1 and tracer.steps >= marks[0]:
            marks.pop(0)
            await _pause_and_move(world, rt, rng)


async def _pause_and_move(world: World, rt: Runtime, rng: random.Random) -> None:
    while world.parked:  # the previous move's programs have not all woken up yet
        await trio.lowlevel.checkpoint()
    world.pausing, world.all_parked, world.resume = True, trio.Event(), trio.Event()
    if world.parked < world.active:
        await world.all_parked.wait()
    live = [lp for lp, part in enumerate(world.parts) if part.failure is None]
    try:
        if live:
            await _move(world, rt, rng.choice(live))
    finally:
        world.pausing = False
        world.resume.set()


def _config_of(part: Partition) -> dict[str, object]:
    config = part.config
    return {
        "vp_count": config.vp_count,
        "commit_policy": config.commit_policy,
        "batch_max_updates": config.batch_max_updates,
    }


async def spawn(world: World, rt: Runtime, nursery: trio.Nursery, config: dict[str, object]) -> None:
    """A new partition: created, booted, and given a program per VP and an inspector."""
    world.parts.append(await rt.create_partition(**config))
    lp = len(world.parts) - 1
    await boot(world, lp)
    for index in range(world.parts[lp].vp_count):
        nursery.start_soon(program, world, lp, index, name=f"program-{lp}-{index}")
    nursery.start_soon(inspector, world, lp, name=f"inspector-{lp}")


async def _move(world: World, rt: Runtime, lp: int) -> None:
    part = world.parts[lp]
    if part.failure is not None:
        return
    for _ in range(10):
        try:
            data = await part.snapshot()
            break
        except ActorCrashed:
            continue  # a crash while committing: the VP restarts, try again
        except PartitionFailed:
            return
    else:
        return
    copy = await rt.restore_partition(data)
    again = await copy.snapshot()
    if _without_id(again, copy.partition_id) != _without_id(data, part.partition_id):
        world.fail(f"partition {lp}: restore then snapshot gave a different state than the snapshot")
    await part.stop()
    world.parts[lp] = copy
    world.injector.note("snapshot")
    world.history.hit("snapshot_restore_mid_run")


def _without_id(data: bytes, partition_id: int) -> bytes:
    return data.partition(b"\n")[2].replace(b'"partition_id":%d' % partition_id, b"")
