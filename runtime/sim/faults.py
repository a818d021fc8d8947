"""The swarm fault plan of one seed and the injector that carries it out, counting every fault.

Swarm testing (VOPR): each seed turns each fault type on or off and draws its rates, so some
seeds hammer one fault and others combine several; a fault that is never off finds less. The
plan is drawn from the seed's own ``random.Random`` before anything runs and printed with the
seed, so a failure names it. Fault types:

* ``crash``: an internal exception at a fault point of a step (``actors.FAULT_POINTS``: element
  k of a SetVpRegisters, inside a commit, inside a context load; and around a supervisor step);
* ``slow_vp``: a VP's next step waits (virtual time), as a descheduled vCPU would;
* ``cancel``: a caller is cancelled after a random number of checkpoints;
* ``overload``: bursts of calls at a VP with a tiny mailbox, so some get ``Busy``;
* ``snapshot``: the partition is snapshotted mid-run and the guests move to the restored copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

__all__ = ("FAULT_TYPES", "FaultInjector", "FaultPlan", "InjectedFault", "draw_plan")

#: Every fault type, in report order.
FAULT_TYPES: Final = ("crash", "slow_vp", "cancel", "overload", "snapshot")


class InjectedFault(Exception):  # a deliberate crash, not an error of the harness
    """Raised at a fault point by the injector: stands for a bug inside the simulator."""


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Which faults one seed turns on, and how hard (swarm configuration)."""

    crash: float  # probability of a crash at each fault point reached (0: off)
    slow_vp: float  # probability that a VP step waits first
    slow_ms: float  # the longest such wait, virtual milliseconds
    cancel: float  # probability that a guest call is cancelled
    overload: float  # probability that a guest step is a burst of calls instead
    snapshot: int  # snapshot/restore migrations during the safety phase
    mailbox_capacity: int
    max_restarts: int
    restart_period: float
    pass_budget: int  # scheduler pass budget in clock reads (a deterministic pass clock)
    pass_check_every: int  # steps between the pass's clock reads

    def enabled(self) -> list[str]:
        """The fault types this plan turns on."""
        on = {
            "crash": self.crash > 0,
            "slow_vp": self.slow_vp > 0,
            "cancel": self.cancel > 0,
            "overload": self.overload > 0,
            "snapshot": self.snapshot > 0,
        }
        return [name for name in FAULT_TYPES if on[name]]

    def describe(self) -> str:
        """One line: the options of this plan."""
        return " ".join(f"{name}={getattr(self, name)}" for name in self.__struct_fields__)


def draw_plan(rng: random.Random) -> FaultPlan:
    """A swarm plan: each fault type on with probability 1/2, with rates drawn from VOPR-like ranges."""

    def maybe(low: float, high: float) -> float:
        return round(rng.uniform(low, high), 4) if rng.random() < 0.5 else 0.0

    return FaultPlan(
        crash=maybe(0.002, 0.03),
        slow_vp=maybe(0.005, 0.05),
        slow_ms=round(rng.uniform(0.1, 10.0), 2),
        cancel=maybe(0.01, 0.15),
        overload=maybe(0.01, 0.05),
        snapshot=rng.choice((0, 0, 1, 2)),
        mailbox_capacity=rng.choice((2, 4, 8, 1024)),
        max_restarts=rng.choice((1, 3, 10, 100, 1000, 1000, 1000, 1000)),
        restart_period=rng.choice((0.001, 0.05, 5.0)),
        pass_budget=rng.choice((1, 2, 8, 1 << 30)),
        pass_check_every=rng.choice((1, 2, 4, 32)),
    )


class FaultInjector:
    """Carries out a ``FaultPlan`` with the seed's RNG; counts each fault it injects.

    ``hook`` goes into ``actors.FAULTS.hook`` (crashes at fault points) and ``before_step`` into
    the scheduler (slow VPs); the guest programs ask ``cancel_after`` and ``overload``.
    ``active`` is False in the liveness phase: no new faults then.
    """

    def __init__(self, plan: FaultPlan, rng: random.Random) -> None:
        self.plan = plan
        self._rng = rng
        self.active = True
        self.counts: dict[str, int] = dict.fromkeys(FAULT_TYPES, 0)
        self.crash_points: dict[str, int] = {}
        self.on_crash: Callable[[str], None] | None = None

    def hook(self, point: str) -> None:
        """A fault point is reached: raise ``InjectedFault`` with the plan's probability."""
        if self.active and self.plan.crash and self._rng.random() < self.plan.crash:
            self.counts["crash"] += 1
            self.crash_points[point] = self.crash_points.get(point, 0) + 1
            if self.on_crash is not None:
                self.on_crash(point)
            msg = f"injected crash at {point}"
            raise InjectedFault(msg)

    def before_step(self, cell: object) -> float:
        """Seconds the VP's next step waits first (a slow vCPU), or 0."""
        plan = self.plan
        if self.active and plan.slow_vp and self._rng.random() < plan.slow_vp:
            self.counts["slow_vp"] += 1
            return self._rng.uniform(0.0001, plan.slow_ms / 1000)
        return 0.0

    def cancel_after(self) -> int | None:
        """How many checkpoints a guest call may pass before it is cancelled (None: it is not).

        The program counts the fault (``note("cancel")``) only when the cancellation landed.
        """
        if self.active and self.plan.cancel and self._rng.random() < self.plan.cancel:
            return self._rng.randrange(0, 3)
        return None

    def note(self, kind: str) -> None:
        """Count one fault of ``kind`` that a guest program carried out."""
        self.counts[kind] += 1

    def overload(self) -> int:
        """How many calls a guest step fires at once (1: a normal step)."""
        if self.active and self.plan.overload and self._rng.random() < self.plan.overload:
            self.counts["overload"] += 1
            return self._rng.randrange(8, 32)
        return 1
