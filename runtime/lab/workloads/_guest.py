"""The guest side of a workload: a measured VP handle, its driver, and the guest's own knowledge.

A workload is a guest model: it performs actions on a VP through ``Guest.do``, which measures
each one (latency from its intended start, on the driver's clock; with the virtual clock the
latency is the modelled cost of what the action did, see ``runtime.costs``) and records it.
``Guest`` also holds what a guest OS knows about itself without asking the simulator (the
CR0/CR4 values it set), so measuring never needs an inspection (which would force commits).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

from ..._clock import VirtualClock
from ...testing import LONG_MODE_CR0, LONG_MODE_CR4, long_mode_context
from ..costs import action_kind

if TYPE_CHECKING:
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
    "Unexpected",
    "long_mode_context",
)

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

    async def do(self, action: Action) -> Outcome:
        """Perform ``action`` on the VP and record its latency; a checkpoint."""
        driver = self.driver
        start = driver.start_at
        if start is None:
            start = driver.clock.now()
        else:
            driver.start_at = None
        trace = self.trace
        vp = self.vp
        vtl = vp.active_vtl if trace is not None else 0
        outcome = await vp.execute(action)
        vclock = driver.vclock
        # The real clock is read before the bookkeeping below: that time is not the simulator's.
        end = driver.clock.now() if vclock is None else 0
        name = type(action).__name__
        outcome_name = type(outcome).__name__
        now_switches, now_commits, now_reads, now_writes = vp.counters()
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
        if trace is not None:
            trace.action(name, outcome, start, end, vtl, vp.active_vtl, commits, reads, writes)
        return outcome

    def sync_counters(self) -> None:
        """Take the VP's counters as the baseline of the next measured action."""
        self.switches, self.commits, self.reads, self.writes = self.vp.counters()
