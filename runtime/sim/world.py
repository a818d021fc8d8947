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
import random
from typing import TYPE_CHECKING

import msgspec
import trio
import trio.lowlevel

from ..testing import peek
from .faults import FaultInjector, FaultPlan
from .history import History

if TYPE_CHECKING:
    from typing import Any

    from .._host import Partition

__all__ = ("SeedResult", "Tracer", "World")


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


class Tracer(trio.abc.Instrument):
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


class World:
    """The state of one running seed (shared by its tasks; one trio thread)."""

    def __init__(self, seed: int, budget: int, plan: FaultPlan, rng: random.Random, tracer: Tracer) -> None:
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
