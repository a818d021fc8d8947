"""The guest side of a workload: guest programs, the measured VP handle, its driver, and how they run.

A workload is a *guest program* (``runtime._programs``): a generator that yields
``(guest, action)`` and receives the outcome, with no I/O of its own. ``drive`` runs one through
the VPs' mailboxes (``vp.execute``; what a real-clock run measures), ``run_inline`` in the
scheduler, synchronously (virtual-clock runs: no event-loop round trip per action). Both measure
each action the same way (``Guest.begin`` and ``Guest.finish``: latency from its intended start
on the driver's clock; with the virtual clock the latency is the modelled cost of what the
action did, see ``runtime.lab.costs``), so the same seed gives the same report either way.
An action that crashed inside the simulator (``ActorCrashed``: it had no effect, the VP
restarted from its last committed state) is retried, up to ``CRASH_RETRIES`` times, and the
retry is part of the action's latency; the restart shows in the report's ``restarts`` counter.
``Guest`` also holds what a guest OS knows about itself without asking the simulator (the
CR0/CR4 values it set), so measuring never needs an inspection (which would force commits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, final

from actors import ActorCrashed

from ..._clock import VirtualClock
from ..._programs import execute_inline
from ...testing import LONG_MODE_CR0, LONG_MODE_CR4, long_mode_context
from ..costs import action_kind

if TYPE_CHECKING:
    from collections.abc import Generator

    from protocol import Action, Outcome

    from ..._clock import Clock
    from ..._host import Vp
    from ..costs import CostModel
    from ..metrics import PhaseRecorder
    from ..trace import VpTrace

__all__ = (
    "VTL0_CR0",
    "VTL0_CR4",
    "Driver",
    "Guest",
    "Program",
    "Unexpected",
    "drive",
    "long_mode_context",
    "run_inline",
)

#: How many times an action that crashed inside the simulator is retried before it fails.
CRASH_RETRIES: Final = 3

R = TypeVar("R")
#: A workload's guest program: yields (guest, action), receives the outcome, returns R.
Program: TypeAlias = "Generator[tuple[Guest, Action], Outcome, R]"

#: CR0 and CR4 of a 64-bit kernel (what every VTL0 runs with after boot).
VTL0_CR0: Final = LONG_MODE_CR0
VTL0_CR4: Final = LONG_MODE_CR4


class Unexpected(Exception):
    """Raised by a guest model when an outcome is not what the real guest would expect.

    The driver records it against the workload and carries on with the next operation; it
    differs from a simulator failure (``SimulationError``), which ends the experiment.
    """


@final
class Driver:
    """One load driver (a wrk2 "connection"): runs one guest operation at a time.

    ``start_at`` is the intended start of the operation about to run (open loop): the first
    action's latency is measured from it, so time spent waiting for this driver counts.
    """

    __slots__ = (
        "_cache",
        "clock",
        "commits",
        "costs",
        "index",
        "reads",
        "recorder",
        "start_at",
        "vclock",
        "writes",
    )

    def __init__(self, index: int, clock: Clock, recorder: PhaseRecorder, costs: CostModel | None) -> None:
        self.index = index
        self.clock = clock
        self.recorder = recorder
        # Virtual time needs the cost model; real time does not use it per action.
        self.vclock = clock if isinstance(clock, VirtualClock) else None
        self.costs = costs if self.vclock is not None else None
        self.start_at: int | None = None
        # Commits and modelled TDG.VP.RD / TDG.VP.WR of the operation running now.
        self.commits = 0
        self.reads = 0
        self.writes = 0
        self._cache: dict[tuple[str, str, int], int] = {}

    def cost_ns(self, action: str, outcome: str, switches: int, commits: int, reads: int, writes: int) -> int:
        """Modelled nanoseconds of one action (``CostModel.charge``, with its base part cached)."""
        costs = self.costs
        assert costs is not None  # only virtual drivers charge costs
        key = (action, outcome, switches)
        base = self._cache.get(key)
        if base is None:
            base = self._cache[key] = costs.charge(action_kind(action), outcome, switches, 0, 0, 0)
        return costs.ns(base + costs.tdcalls(reads, writes) + commits * costs.commit_fixed)

    def __repr__(self) -> str:
        return f"<Driver {self.index} t={self.clock.now()}>"


@final
class Guest:
    """One VP as a guest model drives it (see the module docstring)."""

    __slots__ = (
        "commits",
        "cr0",
        "cr4",
        "driver",
        "failed",
        "partition",
        "reads",
        "switches",
        "trace",
        "trace_vtl",
        "vp",
        "vp_index",
        "writes",
    )

    def __init__(self, vp: Vp, partition: int, vp_index: int, driver: Driver) -> None:
        self.vp = vp
        self.partition = partition
        self.vp_index = vp_index
        self.driver = driver
        self.trace: VpTrace | None = None
        self.trace_vtl = 0
        self.failed = False
        # What the guest OS knows about its VTL0 (set by boot, kept by the workloads).
        self.cr0 = VTL0_CR0
        self.cr4 = VTL0_CR4
        # The VP's counters at the end of the previous measured action.
        self.switches = 0
        self.commits = 0
        self.reads = 0
        self.writes = 0

    def __repr__(self) -> str:
        return f"<Guest partition={self.partition} vp={self.vp_index} {self.vp.active_vtl.name}>"

    def begin(self) -> int:
        """An action is about to run: its start (the intended start of an operation's first)."""
        driver = self.driver
        if self.trace is not None:
            self.trace_vtl = self.vp.active_vtl
        start = driver.start_at
        if start is None:
            return driver.clock.now()
        driver.start_at = None
        return start

    def finish(self, action: Action, outcome: Outcome, start: int) -> None:
        """The action begun at ``start`` returned ``outcome``: charge and record it."""
        driver = self.driver
        vclock = driver.vclock
        # The real clock is read before the bookkeeping below: that time is not the simulator's.
        end = driver.clock.now() if vclock is None else 0
        name = type(action).__name__
        outcome_name = type(outcome).__name__
        now_switches, now_commits, now_reads, now_writes = self.vp.counters()
        switches = now_switches - self.switches
        commits = now_commits - self.commits
        reads = now_reads - self.reads
        writes = now_writes - self.writes
        self.switches, self.commits = now_switches, now_commits
        self.reads, self.writes = now_reads, now_writes
        driver.commits += commits
        driver.reads += reads
        driver.writes += writes
        if vclock is not None:
            end = vclock.advance(driver.cost_ns(name, outcome_name, switches, commits, reads, writes))
        driver.recorder.record(name, outcome_name, end - start, end, commits, reads, writes)
        trace = self.trace
        if trace is not None:
            trace.action(
                name, outcome, start, end, self.trace_vtl, self.vp.active_vtl, commits, reads, writes
            )


async def drive(program: Program[R]) -> R:
    """Run a guest program through the VPs' mailboxes (``vp.execute``), measuring every action.

    An exception from an action is thrown into the program at its ``yield``.
    """
    try:
        item = next(program)
        while True:
            guest, action = item
            start = guest.begin()
            try:
                outcome = await guest.vp.execute(action)
            except ActorCrashed:
                try:
                    outcome = await _retry_driven(guest.vp, action)
                except Exception as exc:
                    item = program.throw(exc)
                    continue
            except Exception as exc:
                item = program.throw(exc)
                continue
            guest.finish(action, outcome, start)
            item = program.send(outcome)
    except StopIteration as stop:
        result: R = stop.value
        return result


def run_inline(program: Program[R]) -> R:
    """Run a guest program in the scheduler, synchronously (``runtime._programs``), measuring it.

    The same measurements as ``drive``; the VPs must be idle (nothing sent to them through
    their mailboxes). An exception from an action is thrown into the program at its ``yield``.
    """
    send = program.send
    outcome: Any = None
    try:
        item = next(program)
        while True:
            guest, action = item
            start = guest.begin()
            try:
                outcome = execute_inline(guest.vp, action)
            except ActorCrashed:
                try:
                    outcome = _retry_inline(guest.vp, action)
                except Exception as exc:
                    item = program.throw(exc)
                    continue
            except Exception as exc:
                item = program.throw(exc)
                continue
            guest.finish(action, outcome, start)
            item = send(outcome)
    except StopIteration as stop:
        result: R = stop.value
        return result


async def _retry_driven(vp: Vp, action: Action) -> Outcome:
    """Retry an action that crashed (it had no effect) up to ``CRASH_RETRIES`` times."""
    for _ in range(CRASH_RETRIES - 1):
        try:
            return await vp.execute(action)
        except ActorCrashed:
            pass
    return await vp.execute(action)


def _retry_inline(vp: Vp, action: Action) -> Outcome:
    """``_retry_driven`` in-line."""
    for _ in range(CRASH_RETRIES - 1):
        try:
            return execute_inline(vp, action)
        except ActorCrashed:
            pass
    return execute_inline(vp, action)
