"""How the drivers of one phase run: arrival models, stop conditions, and the two ways to run.

A *lane* is one driver's sequence of operations (``operations``): when each is due (closed or
open loop), when the driver stops (its quota, the duration, the open-loop grace period), and
the guest program of each operation. ``run_phase`` runs every driver's lane, one of two ways:

* **driven** (real clock, or whenever asked): one task per driver; each action goes through
  its VP's mailbox (``workloads.drive``), so the latency measured is the simulator's own;
* **in-line** (virtual clock): one loop runs the operations in virtual-time order (always the
  driver whose clock is earliest, ties by driver index), each operation's actions executed
  synchronously in the scheduler (``workloads.run_inline``), yielding to the event loop every
  millisecond of wall time. Virtual latencies depend only on what each action did, so both ways
  give the same report byte for byte (a test compares them).
"""

from __future__ import annotations

import heapq
import time
from typing import TYPE_CHECKING, Final, TypeAlias

import anyio

from .._clock import Clock, RealClock, VirtualClock
from .._programs import Pacer
from .metrics import PhaseRecorder
from .records import OPEN_LOOP_GRACE
from .workloads import Driver, drive, run_inline

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .costs import CostModel
    from .records import ExperimentOptions, Progress
    from .workloads import Program

__all__ = ("MakeProgram", "Phase", "run_phase")

#: Timeline bucket width a phase starts with (it doubles as the phase grows).
_TIMELINE_START_NS: Final = {"real": 1_000_000, "virtual": 1_000}

#: A lane's operation ``k`` as a guest program returning its workload's name (None: no more).
MakeProgram: TypeAlias = "Callable[[Phase, Driver, int], Program[str] | None]"


class Phase:
    """Shared state of the drivers of one phase."""

    def __init__(self, options: ExperimentOptions, recorder: PhaseRecorder, origin: int, paced: bool) -> None:
        self.options = options
        self.recorder = recorder
        self.origin = origin
        self.done = 0
        self.failed = 0
        #: Open loop: operations whose intended start fell inside the duration but that had not
        #: started when the grace period ran out.
        self.never_started = 0
        self.drivers: list[Driver] = []
        duration = options.duration
        self.paced = paced and options.rate is not None
        self.duration_ns = None if duration is None else round(duration * 1e9)
        # Open loop with a duration: no operation starts after the duration plus the grace.
        self.deadline_ns = (
            None
            if not self.paced or self.duration_ns is None
            else self.duration_ns + round(self.duration_ns * OPEN_LOOP_GRACE)
        )

    def clock(self, start: int) -> Clock:
        return VirtualClock(start) if self.options.clock == "virtual" else RealClock()

    def stopped(self, driver: Driver, k: int, quota: int | None, intended: int | None) -> bool:
        if quota is not None:
            return k >= quota
        if self.duration_ns is None:
            return False
        now = intended if intended is not None else driver.clock.now()
        return now - self.origin >= self.duration_ns

    def intended(self, driver: Driver, k: int) -> int:
        """Open loop: when driver ``driver`` should start its operation ``k``."""
        rate = self.options.rate
        assert rate is not None  # only paced phases ask
        return self.origin + round((driver.index + k * self.options.drivers) * 1e9 / rate)

    def late(self, driver: Driver, k: int) -> bool:
        """True (and the rest of the driver's window counted) once the grace period is over."""
        if self.deadline_ns is None or driver.clock.now() - self.origin < self.deadline_ns:
            return False
        self.never_started += _in_window(self, driver.index) - k
        return True


def _in_window(phase: Phase, index: int) -> int:
    """Operations driver ``index`` is meant to start inside the duration (open loop)."""
    rate, n, duration_ns = phase.options.rate, phase.options.drivers, phase.duration_ns
    assert rate is not None
    assert duration_ns is not None
    # Operation i (driver i % n) is due at round(i / rate): count the i due before the end.
    total = max(0, int(duration_ns * rate / 1e9))
    while total > 0 and round((total - 1) * 1e9 / rate) >= duration_ns:
        total -= 1
    while round(total * 1e9 / rate) < duration_ns:
        total += 1
    return max(0, (total - index + n - 1) // n)


def operations(
    phase: Phase, driver: Driver, quota: int | None, make: MakeProgram
) -> Iterator[tuple[int | None, Program[str]]]:
    """Driver ``driver``'s operations: (intended start or None, guest program), lazily.

    Each is decided only once the previous one has run, since a closed loop's stop condition
    reads the driver's clock.
    """
    paced = phase.paced
    k = 0
    while True:
        intended = phase.intended(driver, k) if paced else None
        if phase.stopped(driver, k, quota, intended) or phase.late(driver, k):
            return
        program = make(phase, driver, k)
        if program is None:
            return
        yield intended, program
        k += 1


def _begin(driver: Driver, intended: int | None) -> int:
    driver.commits = driver.reads = driver.writes = 0
    if intended is None:
        return driver.clock.now()
    driver.start_at = intended
    return intended


def _end(phase: Phase, driver: Driver, workload: str, start: int) -> None:
    driver.start_at = None
    recorder = phase.recorder
    recorder.record_episode(workload, driver.clock.now() - start, driver.commits, driver.reads, driver.writes)
    phase.done += 1


async def _driven_lane(phase: Phase, driver: Driver, quota: int | None, make: MakeProgram) -> None:
    clock = driver.clock
    for intended, program in operations(phase, driver, quota, make):
        if intended is not None:
            await clock.wait_until(intended)
        start = _begin(driver, intended)
        workload = await drive(program)
        _end(phase, driver, workload, start)


async def _inline_lanes(
    phase: Phase, quotas: list[int | None], make: MakeProgram, tick: Callable[[], None]
) -> None:
    """Every driver's lane in one loop, operation by operation in virtual-time order."""
    lanes = [operations(phase, d, q, make) for d, q in zip(phase.drivers, quotas, strict=True)]
    ready = [(driver.clock.now(), driver.index) for driver in phase.drivers]
    heapq.heapify(ready)
    pacer = Pacer()
    while ready:
        _, index = ready[0]
        driver = phase.drivers[index]
        step = next(lanes[index], None)
        if step is None:
            heapq.heappop(ready)
            continue
        intended, program = step
        if intended is not None:
            clock = driver.vclock
            assert clock is not None  # in-line lanes run on virtual clocks only
            clock.skip_to(intended)
        start = _begin(driver, intended)
        _end(phase, driver, run_inline(program), start)
        heapq.heapreplace(ready, (driver.clock.now(), index))
        if pacer.due():
            tick()
            await pacer.pause()


async def _ticker(progress: Progress, measure: Callable[[], float]) -> None:
    while True:
        await anyio.sleep(0.1)
        progress.update(measure())


async def run_phase(
    name: str,
    options: ExperimentOptions,
    origin: int,
    progress: Progress,
    total: tuple[float, str],
    make: MakeProgram,
    costs: CostModel,
    *,
    paced: bool,
    quota: int | Callable[[int], int | None] | None,
    inline: bool,
) -> tuple[Phase, int]:
    """Run one phase with ``options.drivers`` drivers; return it and its wall-clock nanoseconds.

    ``quota`` is every driver's number of operations (None: until the duration ends), or a
    function of the driver's index; ``inline`` runs the lanes in-line (virtual clock only).
    """
    recorder = PhaseRecorder(origin, _TIMELINE_START_NS[options.clock])
    phase = Phase(options, recorder, origin, paced)
    phase.drivers = [Driver(d, phase.clock(origin), recorder, costs) for d in range(options.drivers)]
    quotas = [quota(d) if callable(quota) else quota for d in range(options.drivers)]
    wall_start = time.perf_counter_ns()
    progress.start(name, *total)
    if total[1] == "s":
        virtual = options.clock == "virtual"

        def measure() -> float:
            if virtual:
                return sum(d.clock.now() - origin for d in phase.drivers) / len(phase.drivers) / 1e9
            return (time.perf_counter_ns() - wall_start) / 1e9

    else:

        def measure() -> float:
            return phase.done

    try:
        if inline:
            await _inline_lanes(phase, quotas, make, lambda: progress.update(measure()))
        else:
            async with anyio.create_task_group() as outer:
                outer.start_soon(_ticker, progress, measure)
                async with anyio.create_task_group() as tg:
                    for driver, share in zip(phase.drivers, quotas, strict=True):
                        tg.start_soon(_driven_lane, phase, driver, share, make)
                outer.cancel_scope.cancel()
        progress.update(measure())
    finally:
        progress.close()
    return phase, time.perf_counter_ns() - wall_start
