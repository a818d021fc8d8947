"""One seed of the deterministic simulation: partitions, guest programs, faults, checks, a trace.

Everything runs in one ``trio.run`` with ``MockClock(autojump_threshold=0)`` (virtual time
that jumps whenever every task waits) and trio's scheduler made deterministic and seeded (the
private ``_ALLOW_DETERMINISTIC_SCHEDULING`` and ``_r`` of ``trio._core._run``, RELIABILITY
section 3). Every random choice comes from ``random.Random`` seeded from the seed; the
scheduler's passes are timed by a counting clock, not the wall. So a seed is a pure function:
the same seed and step budget give the same trace hash, whatever ``PYTHONHASHSEED`` is.

A seed runs a *safety* phase (guest programs and faults until ``steps`` trio task steps have
run), then a *liveness* phase (faults off: every program finishes, every restart completes,
every mailbox drains, within 10 virtual seconds, or the seed fails with "no liveness").
After every step it checks DOMAIN 5's invariants (the engine checks each VP's; ``Checks`` the
partition's and the transitions), and at the end the injected crashes against the runtime's
count, the snapshot round trip, and the linearizability of every tracked register.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import traceback
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio
import trio.lowlevel
import trio.testing

from actors import FAULTS, ActorCrashed, Busy, PartitionFailed, VpFailed, VpNotRunning
from protocol import (
    EnablePartitionVtl,
    EnableVpVtl,
    HvRegisterName as Reg,
    Intercepted,
    MovToCr,
    Rdmsr,
    RegisterAssoc,
    SetVpRegisters,
    SimulationError,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    Wrmsr,
)
from protocol._x86 import EFER_LME, EFER_NXE, EFER_SCE, Msr

from .._host import open_runtime
from .._supervision import RestartPolicy
from ..testing import LONG_MODE_CR0, LONG_MODE_CR4, long_mode_context, peek
from .checks import Checks
from .faults import FaultInjector, FaultPlan, draw_plan
from .history import TRACKED, TRACKED_MSRS, History
from .linearizability import check_history
from .programs import intercept_reply, vtl0_action, vtl1_action

if TYPE_CHECKING:
    from .._host import Partition, Runtime, Vp

__all__ = ("SeedResult", "run_seed")

#: Virtual seconds the liveness phase may take (10x the longest timeout a seed can draw).
LIVENESS_SECONDS: Final = 10.0
#: Failed partitions a seed replaces with new ones.
_REPLACEMENTS: Final = 10
_SIMP: Final = 0x7F_F000 | 1
_SINT0: Final = 0x30 | 1 << 17


class SeedResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one seed did and found; ``failures`` is empty when every check passed."""

    seed: int
    steps: int
    plan: FaultPlan
    trace: str
    failures: list[str]
    faults: dict[str, int]
    crash_points: dict[str, int]
    sometimes: dict[str, int]
    calls: int
    outcomes: dict[str, int]
    restarts: int
    failed_partitions: int
    registers_checked: int
    virtual_seconds: float

    @property
    def ok(self) -> bool:
        """True when the seed passed."""
        return not self.failures


class _Tracer(trio.abc.Instrument):
    """Counts trio task steps and hashes the order they ran in (task name per step).

    ``wake_at`` (a step count) and ``wake`` let the chaos task sleep until a given step
    without spending steps polling: virtual time stands still while tasks are busy.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.digest = hashlib.sha256()
        self.wake_at = -1
        self.wake: trio.Event | None = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        self.digest.update(task.name.encode())
        if self.steps == self.wake_at and self.wake is not None:
            self.wake.set()


class _World:
    """The state of one running seed (shared by its tasks; one trio thread)."""

    def __init__(self, seed: int, budget: int, plan: FaultPlan, rng: random.Random, tracer: _Tracer) -> None:
        self.seed = seed
        self.budget = budget
        self.plan = plan
        self.rng = rng
        self.tracer = tracer
        self.injector = FaultInjector(plan, random.Random(rng.getrandbits(64)))
        self.history = History()
        self.failures: list[str] = []
        self.parts: list[Partition] = []
        self.stopping = False
        self.pausing = False
        self.parked = 0
        self.active = 0
        self.all_parked = trio.Event()
        self.resume = trio.Event()
        self.chaos_wakeup = trio.Event()

    def fail(self, message: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(message)

    @property
    def safety_over(self) -> bool:
        if not self.stopping and self.tracer.steps >= self.budget:
            self.stopping = True
        return self.stopping

    def rng_for(self, *parts: object) -> random.Random:
        """A generator of its own for one task, from the seed (str seeds hash with sha512)."""
        return random.Random("/".join(map(str, (self.seed, *parts))))

    async def pause_point(self) -> None:
        """Where programs wait while a partition is being moved (snapshot and restore).

        Invariant: while ``pausing`` and ``parked == active``, no guest call is in flight.
        """
        while self.pausing:
            resume = self.resume
            self.parked += 1
            if self.parked == self.active:
                self.all_parked.set()
            await resume.wait()
            self.parked -= 1

    async def call(self, lp: int, index: int, action: Any, *, faults: bool = True) -> Any:
        """Execute through the history, with the plan's cancellation; return the ``Call``."""
        vp = self.parts[lp].vp(index)
        cancel = self.injector.cancel_after() if faults else None
        state = peek(vp)
        staged = state.vtls[0].staged_updates + state.vtls[1].staged_updates
        result = await self.history.call(vp, (lp, index), action, cancel_after=cancel)
        if result.status == "cancelled":
            self.injector.note("cancel")
            if staged:
                self.history.hit("cancel_while_updates_staged")
        return result


async def _boot(world: _World, lp: int) -> None:
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


async def _program(world: _World, lp: int, index: int) -> None:
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


async def _one_step(world: _World, rng: random.Random, lp: int, index: int, vp: Vp) -> None:
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


async def _inspector(world: _World, lp: int) -> None:
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


async def _chaos(world: _World, rt: Runtime, nursery: trio.Nursery) -> None:
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
                await _spawn(world, rt, nursery, _config_of(part))
        if len(marks) > 1 and tracer.steps >= marks[0]:
            marks.pop(0)
            await _pause_and_move(world, rt, rng)


async def _pause_and_move(world: _World, rt: Runtime, rng: random.Random) -> None:
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


async def _spawn(world: _World, rt: Runtime, nursery: trio.Nursery, config: dict[str, object]) -> None:
    """A new partition: created, booted, and given a program per VP and an inspector."""
    world.parts.append(await rt.create_partition(**config))
    lp = len(world.parts) - 1
    await _boot(world, lp)
    for index in range(world.parts[lp].vp_count):
        nursery.start_soon(_program, world, lp, index, name=f"program-{lp}-{index}")
    nursery.start_soon(_inspector, world, lp, name=f"inspector-{lp}")


async def _move(world: _World, rt: Runtime, lp: int) -> None:
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


async def _main(world: _World) -> dict[str, Any]:
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
                    await _spawn(world, rt, nursery, config)
                nursery.start_soon(_chaos, world, rt, nursery, name="chaos")
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


async def _liveness(world: _World, nursery: trio.Nursery) -> None:
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


async def _drained(world: _World, rt: Runtime) -> None:
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
    tracer = _Tracer()
    world = _World(seed, steps, plan, rng, tracer)
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
