"""What an experiment is and what it measured: options, counters, phase and run records, progress.

``ExperimentOptions`` defines one run (the report repeats it); ``RunData`` and ``PhaseData`` hold
what ``run_experiment`` measured; ``Counters`` are the runtime's counters summed over a fleet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, final

import msgspec

from .workloads import Mix

if TYPE_CHECKING:
    from .._host import Runtime
    from .cells import ShardReport
    from .metrics import PhaseRecorder
    from .trace import VpTrace

__all__ = (
    "OPEN_LOOP_GRACE",
    "RATE_HELD",
    "BackendName",
    "partition_failures",
    "ClockName",
    "Counters",
    "ExperimentOptions",
    "PhaseData",
    "PolicyName",
    "Progress",
    "RunData",
    "collect_counters",
)

#: Open loop with a duration: the grace period, as a fraction of the duration. Late operations
#: still start until the duration plus the grace has passed; those due inside the duration that
#: had not started by then are counted (``never_started``), not run.
OPEN_LOOP_GRACE: Final = 0.1
#: Open loop: an achieved rate under this fraction of the target is reported as not held.
RATE_HELD: Final = 0.95

#: ``ray``: the run's cells are sharded over Ray actors (``runtime.cluster``), each an asyncio runtime.
BackendName = Literal["asyncio", "trio", "ray"]
ClockName = Literal["real", "virtual"]
PolicyName = Literal["batched", "eager"]


class ExperimentOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that defines one run (the report repeats it)."""

    partitions: int
    vps: int
    workload: str
    mix: Mix
    duration: float | None
    ops: int | None
    drivers: int
    rate: float | None
    backend: BackendName
    clock: ClockName
    commit_policy: PolicyName
    seed: int
    trace_vps: int


class Counters(msgspec.Struct, frozen=True, kw_only=True):
    """Runtime counters summed over every VP (from ``statistics()``)."""

    actions: int = 0
    vtl_switches: int = 0
    commits: int = 0
    vmcs_reads: int = 0
    vmcs_writes: int = 0
    staged_updates: int = 0
    supervisor_requests: int = 0
    failed_vps: int = 0
    restarts: int = 0  # VP and supervisor restarts after crashes inside the simulator
    failed_partitions: int = 0  # partitions that ended (PartitionFailed): a gauge
    mailbox_high_water_max: int = 0
    mailbox_high_water_mean: float = 0.0

    def minus(self, before: Counters) -> Counters:
        """The additive counters' growth since ``before`` (gauges are kept as they are now)."""
        return msgspec.structs.replace(
            self,
            actions=self.actions - before.actions,
            vtl_switches=self.vtl_switches - before.vtl_switches,
            commits=self.commits - before.commits,
            vmcs_reads=self.vmcs_reads - before.vmcs_reads,
            vmcs_writes=self.vmcs_writes - before.vmcs_writes,
            supervisor_requests=self.supervisor_requests - before.supervisor_requests,
            restarts=self.restarts - before.restarts,
        )


@final
class PhaseData:
    """What one phase measured; ``partition_failures`` maps the partitions a fatal condition
    ended during the phase (DOMAIN 7.2) to their reasons."""

    __slots__ = (
        "counters",
        "duration_ns",
        "failed",
        "grace_ns",
        "name",
        "never_started",
        "partition_failures",
        "rate",
        "recorder",
        "wall_ns",
    )

    def __init__(
        self,
        name: str,
        recorder: PhaseRecorder,
        duration_ns: int,
        wall_ns: int,
        counters: Counters,
        failed: int,
        partition_failures: dict[int, str] | None = None,
    ) -> None:
        self.name = name
        self.recorder = recorder
        self.duration_ns = duration_ns
        self.wall_ns = wall_ns
        self.counters = counters
        self.failed = failed
        self.partition_failures = partition_failures or {}
        #: Open loop: the target rate, the operations due inside the duration that never
        #: started, and the grace period (None when the phase was not paced).
        self.rate: float | None = None
        self.never_started = 0
        self.grace_ns: int | None = None


@final
class RunData:
    """What one run measured: its phases, the sampled traces and a few wall-clock facts."""

    __slots__ = ("options", "origin", "phases", "scheduler", "shards", "traces", "wall_ns")

    def __init__(self, options: ExperimentOptions) -> None:
        self.options = options
        #: The shards of a sharded run (``runtime.cluster``); None for a run on one runtime.
        self.shards: list[ShardReport] | None = None
        self.phases: list[PhaseData] = []
        self.traces: list[VpTrace] = []
        self.origin = 0
        self.wall_ns = 0
        self.scheduler: dict[str, int] = {}


class Progress:
    """Receives progress; the CLI shows it as a progress bar. The default shows nothing."""

    def start(self, phase: str, total: float, unit: str) -> None:
        """A phase starts; ``total`` units of ``unit`` are expected."""

    def update(self, done: float) -> None:
        """``done`` units are complete."""

    def close(self) -> None:
        """The phase ended."""


def collect_counters(rt: Runtime) -> Counters:
    """The counters of every partition of ``rt``, summed (gauges: max and mean)."""
    actions = switches = commits = reads = writes = staged = requests = failed = restarts = ended = 0
    high_max = 0
    high_sum = 0
    partitions = rt.partitions
    for partition in partitions:
        stats = partition.statistics()
        requests += stats.supervisor.requests
        restarts += stats.restarts
        ended += stats.failure is not None
        high_sum += stats.mailbox_high_water
        high_max = max(high_max, stats.mailbox_high_water)
        for vp in stats.vps:
            actions += vp.actions
            switches += vp.vtl_switches
            commits += vp.commits
            reads += vp.vmcs_reads
            writes += vp.vmcs_writes
            staged += vp.staged_updates
            failed += vp.failed
    return Counters(
        actions=actions,
        vtl_switches=switches,
        commits=commits,
        vmcs_reads=reads,
        vmcs_writes=writes,
        staged_updates=staged,
        supervisor_requests=requests,
        failed_vps=failed,
        restarts=restarts,
        failed_partitions=ended,
        mailbox_high_water_max=high_max,
        mailbox_high_water_mean=round(high_sum / len(partitions), 3) if partitions else 0.0,
    )


def partition_failures(rt: Runtime) -> dict[int, str]:
    """Partition id -> reason, for every partition of ``rt`` a fatal condition ended (7.2)."""
    return {p.partition_id: p.failure for p in rt.partitions if p.failure is not None}
