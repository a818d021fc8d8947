"""Run one seed: the runtime under faults, the safety then liveness phases, the final checks.

``run_seed`` is a pure function of its arguments (see ``world``): it returns what the seed did
and found as a ``SeedResult``, with the trace hash that a replay must reproduce.
"""

from __future__ import annotations

import itertools
import random
import traceback
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio
import trio.testing

from actors import FAULTS
from protocol import HvRegisterName as Reg, SimulationError

from .._host import open_runtime
from .._supervision import RestartPolicy
from .chaos import chaos, spawn
from .checks import Checks
from .faults import draw_plan
from .linearizability import check_history
from .world import SeedResult, Tracer, World

if TYPE_CHECKING:
    from .._host import Runtime

__all__ = ("LIVENESS_SECONDS", "run_seed")

#: Virtual seconds the liveness phase may take (10x the longest timeout a seed can draw).
LIVENESS_SECONDS: Final = 10.0


async def _main(world: World) -> dict[str, Any]:
    plan = world.plan
    policy = RestartPolicy(
        max_restarts=plan.max_restarts, period=plan.restart_period, backoff=0.0005, backoff_max=0.01
    )
    options: dict[str, Any] = {
        "seed": world.seed,
        "check_invariants": True,
        "mailbox_capacity": plan.mailbox_capacity,
        "restart_policy": policy,
        "pass_budget": plan.pass_budget,
    }
    async with open_runtime(**options) as rt:
        scheduler = rt._scheduler
        ticks = itertools.count()
        scheduler.pass_clock = lambda: float(next(ticks))  # deterministic: counts clock reads
        scheduler.pass_check_every = plan.pass_check_every
        checks = Checks(world, scheduler)
        scheduler.hooks = checks
        world.injector.on_crash = checks.injected
        previous, FAULTS.hook = FAULTS.hook, world.injector.hook
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(world.rng.randrange(1, 4)):
                    config: dict[str, object] = {
                        "vp_count": world.rng.randrange(1, 5),
                        "commit_policy": world.rng.choice(("batched", "eager")),
                        "batch_max_updates": world.rng.choice((2, 8, 64)),
                    }
                    await spawn(world, rt, nursery, config)
                nursery.start_soon(chaos, world, rt, nursery, name="chaos")
                await _liveness(world, nursery)
            world.injector.active = False
            await _drained(world, rt)
            finals = []
            for lp, part in enumerate(world.parts):
                if part.failure is None:
                    with trio.move_on_after(LIVENESS_SECONDS) as waited:
                        try:
                            finals.append(await part.snapshot())
                        except SimulationError as exc:  # faults are off: this is a bug
                            world.fail(f"partition {lp}: the final snapshot failed: {exc!r}")
                    if waited.cancelled_caught:
                        world.fail(f"no liveness: partition {lp}'s final snapshot did not complete")
        finally:
            FAULTS.hook = previous
        stats = rt.statistics().scheduler
        if stats.crashes != world.injector.counts["crash"]:
            world.fail(
                f"{stats.crashes} crashes in the runtime but {world.injector.counts['crash']} injected: "
                "a crash nobody injected (a bug), or an injected one nobody saw (swallowed)"
            )
        return {
            "finals": finals,
            "restarts": stats.restarts,
            "failed": stats.failed_partitions,
            "checks": checks,
        }


async def _liveness(world: World, nursery: trio.Nursery) -> None:
    """Wait for the safety phase to end, then for every program within LIVENESS_SECONDS."""
    while not world.safety_over:  # noqa: ASYNC110  # a step count, not an event, ends the phase
        await trio.sleep(0.001)
    world.injector.active = False
    with trio.move_on_after(LIVENESS_SECONDS) as scope:
        while len(nursery.child_tasks) > 0:  # noqa: ASYNC110  # the tasks end on their own
            await trio.sleep(0.001)
    if scope.cancelled_caught:
        world.fail(
            f"no liveness: {len(nursery.child_tasks)} guest tasks still busy after {LIVENESS_SECONDS} s"
        )
        nursery.cancel_scope.cancel()


async def _drained(world: World, rt: Runtime) -> None:
    """Every restart done, every mailbox empty, no hypercall waiting (liveness, A5)."""
    with trio.move_on_after(LIVENESS_SECONDS) as scope:
        while True:
            busy = [
                str(cell)
                for part in world.parts
                if part.failure is None
                for cell in part._cells.cells
                if cell.busy or len(cell.mailbox)
            ]
            if not busy and not rt.statistics().scheduler.restarting:
                return
            await trio.sleep(0.001)
    if scope.cancelled_caught:
        world.fail(f"no liveness: still busy after {LIVENESS_SECONDS} s: {busy[:3]}")


def _key_name(key: tuple[int, int, int, int]) -> str:
    partition, vp, vtl, name = key
    return f"partition {partition} vp {vp} VTL{vtl} {Reg(name).name}"


def run_seed(seed: int, steps: int) -> SeedResult:
    """Run one seed for ``steps`` trio task steps of safety phase; a pure function of its arguments."""
    rng = random.Random(seed)
    plan = draw_plan(rng)
    tracer = Tracer()
    world = World(seed, steps, plan, rng, tracer)
    core = trio._core._run
    saved = (core._ALLOW_DETERMINISTIC_SCHEDULING, core._r.getstate())
    core._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]  # trio's own switch (RELIABILITY §3)
    core._r.seed(seed)
    clock = trio.testing.MockClock(autojump_threshold=0)
    outcome: dict[str, Any] = {"finals": [], "restarts": 0, "failed": 0}
    try:
        outcome = trio.run(_main, world, clock=clock, instruments=[tracer])
    except Exception as exc:  # a seed never raises: what went wrong is its failure
        world.fail(f"the seed raised {''.join(traceback.format_exception_only(exc)).strip()[:2000]}")
    finally:
        core._ALLOW_DETERMINISTIC_SCHEDULING = saved[0]  # type: ignore[misc]
        core._r.setstate(saved[1])
    history = world.history
    histories = {_key_name(key): (history.initial.get(key, 0), ops) for key, ops in history.ops.items()}
    for verdict in check_history(histories):
        if not verdict.linearizable:
            world.fail(f"{verdict.key} is not linearizable: {verdict.explanation}")
    digest = tracer.digest
    for final in outcome["finals"]:
        digest.update(final)
    digest.update(msgspec.json.encode([world.history.outcomes, world.injector.counts, world.failures]))
    return SeedResult(
        seed=seed,
        steps=steps,
        plan=plan,
        trace=digest.hexdigest(),
        failures=world.failures,
        faults=world.injector.counts,
        crash_points=world.injector.crash_points,
        sometimes=world.history.sometimes,
        calls=world.history.calls,
        outcomes=world.history.outcomes,
        restarts=outcome["restarts"],
        failed_partitions=outcome["failed"],
        registers_checked=len(histories),
        virtual_seconds=round(clock.current_time(), 6),
    )
