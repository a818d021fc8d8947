"""Runs an experiment on Ray: its cells split over shard actors, phases in step, results merged.

``connect`` joins a Ray cluster (or starts a local one on this machine's cores) after the F7
checks of ``safety``; ``run_sharded`` runs one experiment on it:

1. the fleet's cells are split into ``shards`` shares of consecutive cells (``lab.cells``);
   each share goes to one ``ShardActor``, a whole tdvsm runtime in a Ray worker of its own,
   never an actor per VP (a Ray actor costs about 40 MiB and 1 ms a call);
2. every shard boots its partitions; when all have, the operations phase starts on each at
   the fleet's boot duration, as in one runtime;
3. the shards' results (msgspec bytes) merge into one ``RunData``: the report, plots, trace
   and ``compare`` input are a local run's, and with the virtual clock the same.

Ray semantics stay out of VSM semantics (RELIABILITY.md F8): a shard is a synchronous actor
(calls run one at a time, in order), with no restarts and no task retries (Ray would re-run
the constructor and lose the state anyway, and a retried phase would run twice), and a bound
on pending calls. A shard whose worker dies is *lost*: the experiment carries on with the
others, the lost shard's partitions are listed as failed in the phase it was lost in, with
Ray's reason, and its ``ShardReport`` says ``lost`` (README "Ray": what a loss costs).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import ray
from ray.exceptions import RayActorError

from ..lab.cells import Cells, ClusterReport, ShardReport
from ..lab.records import Progress
from .safety import check_address, check_local, token_configured
from .shard import ShardError, ShardHost
from .wire import Loss, PhaseResult, ShardOrders, ShardResult, decode, encode, merge_runs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..lab.costs import CostModel
    from ..lab.records import ExperimentOptions, RunData

__all__ = ("ClusterError", "ShardActor", "cluster_cpus", "connect", "run_sharded")

#: How often the coordinator asks the shards how far they are (s).
POLL_S: Final = 0.1
#: Pending calls a shard accepts; the coordinator never has more than three in flight.
MAX_PENDING_CALLS: Final = 16
#: How long the shard actors may take to start (a busy cluster may not find the CPUs).
START_TIMEOUT_S: Final = 120.0


class ClusterError(RuntimeError):
    """Raised when Ray cannot be started or reached (the message says why)."""


class _ShardActor:
    """The body of a shard actor: a ``ShardHost``; ``progress`` and ``pid`` answer while a phase runs."""

    def __init__(self, orders: bytes) -> None:
        self._host = ShardHost(orders)

    def boot(self) -> bytes:
        return self._host.boot()

    def operate(self, fleet_boot_ns: int) -> bytes:
        return self._host.operate(fleet_boot_ns)

    @ray.method(concurrency_group="watch")
    def progress(self) -> tuple[str, float, float]:
        return self._host.progress()

    @ray.method(concurrency_group="watch")
    def pid(self) -> int:
        return self._host.pid()


# Ray's stubs type neither a decorated class nor cluster_resources: the actor handle is Any.
_ray: Any = ray
#: The shard actor class: synchronous (one call at a time, in order), never restarted or retried.
ShardActor: Any = _ray.remote(
    num_cpus=1,
    max_restarts=0,
    max_task_retries=0,
    max_pending_calls=MAX_PENDING_CALLS,
    concurrency_groups={"watch": 1},
)(_ShardActor)


@contextmanager
def connect(address: str | None, *, num_cpus: int | None = None) -> Iterator[ClusterReport]:
    """Join the Ray cluster at ``address``, or start a local one (``num_cpus``: this machine's).

    If this process is already connected (a test's shared Ray), that connection is used and
    left open.

    Raises:
        UnsafeCluster: the F7 refusals (``safety``).
        ClusterError: Ray could not start or connect (the message says why).
    """
    if address is None:
        check_local()
    else:
        check_address(address)
    owned = not ray.is_initialized()
    if owned:
        try:
            if address is None:
                ray.init(
                    address="local",
                    num_cpus=num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:
            where = "start a local Ray" if address is None else f"connect to the Ray cluster at {address}"
            msg = f"could not {where}: {type(exc).__name__}: {_first_line(exc)}"
            if address is not None and not token_configured():
                # Ray turns token authentication on by itself only for clusters it starts.
                msg += (
                    "; if the cluster requires token authentication, set RAY_AUTH_MODE=token and "
                    "its token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
                )
            raise ClusterError(msg) from exc
    try:
        yield ClusterReport(
            backend="ray",
            ray_version=ray.__version__,
            address="local" if address is None else address,
            shards=0,
        )
    finally:
        if owned:
            ray.shutdown()


def cluster_cpus() -> int:
    """CPUs of the connected cluster."""
    return int(_ray.cluster_resources().get("CPU", 1))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Shard:
    """The coordinator's view of one shard."""

    def __init__(self, index: int, cells: range, partitions: range, drivers: range, actor: Any) -> None:
        self.index = index
        self.cells = cells
        self.partitions = partitions
        self.drivers = drivers
        self.actor = actor
        self.pid = 0
        self.done = 0.0
        self.boot: PhaseResult | None = None
        self.lost_in: str | None = None
        self.reason: str | None = None

    def report(self) -> ShardReport:
        return ShardReport(
            shard=self.index,
            cells=[self.cells.start, self.cells.stop],
            partitions=[self.partitions.start, self.partitions.stop],
            drivers=[self.drivers.start, self.drivers.stop],
            status="ok" if self.lost_in is None else "lost",
            lost_in=self.lost_in,
            reason=self.reason,
        )


def _phase(
    name: str,
    shards: list[_Shard],
    calls: dict[int, Any],
    progress: Progress,
    total: tuple[float, str],
    watch: Callable[[str, list[float], list[int]], None] | None,
) -> dict[int, bytes]:
    """Wait for one phase's calls (shard -> ObjectRef) with progress; lost shards are marked."""
    replies: dict[int, bytes] = {}
    pending = {ref: index for index, ref in calls.items()}
    by_index = {s.index: s for s in shards}
    progress.start(name, *total)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                index = pending.pop(ref)
                shard = by_index[index]
                try:
                    replies[index] = ray.get(ref)
                except RayActorError as exc:
                    shard.lost_in = name
                    shard.reason = (
                        f"lost with shard {index}: its Ray worker (pid {shard.pid}) died during the "
                        f"{name} phase ({type(exc).__name__}: {_first_line(exc)})"
                    )
            alive = [s for s in shards if s.lost_in is None and s.index in pending.values()]
            for shard, answer in zip(alive, _poll(alive), strict=True):
                if answer is not None and answer[0] == name:
                    shard.done = answer[1]
            done = [s.done for s in shards]
            progress.update(sum(done) / len(done) if total[1] == "s" else sum(done))
            if watch is not None:
                watch(name, done, [s.pid for s in shards])
    finally:
        progress.close()
    return replies


def _poll(shards: list[_Shard]) -> list[tuple[str, float, float] | None]:
    refs = []
    for shard in shards:
        try:
            refs.append(shard.actor.progress.remote())
        except ray.exceptions.PendingCallsLimitExceeded:
            refs.append(None)
    answers: list[tuple[str, float, float] | None] = []
    for ref in refs:
        if ref is None:
            answers.append(None)
            continue
        try:
            answers.append(ray.get(ref, timeout=5))
        except (RayActorError, ray.exceptions.GetTimeoutError, ray.exceptions.PendingCallsLimitExceeded):
            answers.append(None)  # lost (the phase's own call says so), or too busy to answer now
    return answers


def run_sharded(
    options: ExperimentOptions,
    costs: CostModel,
    shards: int,
    progress: Progress | None = None,
    *,
    watch: Callable[[str, list[float], list[int]], None] | None = None,
) -> RunData:
    """Run ``options`` on ``shards`` shard actors of the connected Ray cluster.

    ``watch`` sees every progress poll (phase, units done per shard, worker pids).

    Raises:
        ValueError: more shards than the experiment has cells.
        ShardError: a shard's experiment raised (as it would have in one runtime).
    """
    progress = progress or Progress()
    cells = Cells(options.partitions, options.vps, options.drivers)
    wall_start = time.perf_counter_ns()
    group: list[_Shard] = []
    # Every shard must run at once (each waits for the others between the phases): with more
    # shards than CPUs they share them.
    cpus = min(1.0, cluster_cpus() / shards)
    for index, share in enumerate(cells.split(shards)):
        orders = ShardOrders(shard=index, options=options, costs=costs, cells=(share.start, share.stop))
        actor = ShardActor.options(num_cpus=cpus).remote(encode(orders))
        group.append(_Shard(index, share, cells.partitions_of(share), cells.drivers_of(share), actor))
    try:
        try:
            pids = ray.get([s.actor.pid.remote() for s in group], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            msg = (
                f"{shards} shard actors did not start within {START_TIMEOUT_S:.0f} s "
                f"(cluster CPUs: {cluster_cpus()})"
            )
            raise ClusterError(msg) from None
        for shard, pid in zip(group, pids, strict=True):
            shard.pid = pid
        boots = _phase(
            "boot",
            group,
            {s.index: s.actor.boot.remote() for s in group},
            progress,
            (options.partitions, "partitions"),
            watch,
        )
        for shard in group:
            if shard.index in boots:
                shard.boot = decode(boots[shard.index], PhaseResult)
        live = [s for s in group if s.boot is not None]
        fleet_boot = max((s.boot.duration_ns for s in live if s.boot is not None), default=0)
        for shard in group:
            shard.done = 0.0
        total: tuple[float, str] = (
            (options.ops, "ops") if options.ops is not None else (options.duration or 0.0, "s")
        )
        ends = _phase(
            "operations" if options.mix.weights else "boot",
            live,
            {s.index: s.actor.operate.remote(fleet_boot) for s in live},
            progress if options.mix.weights else Progress(),
            total,
            watch,
        )
    except ray.exceptions.RayTaskError as exc:
        msg = f"a shard's experiment failed: {_first_line(exc)}"
        raise ShardError(msg) from exc
    finally:
        for shard in group:
            ray.kill(shard.actor, no_restart=True)
    return _merge(options, group, ends, wall_start)


def _merge(
    options: ExperimentOptions, group: list[_Shard], ends: dict[int, bytes], wall_start: int
) -> RunData:
    results: list[ShardResult] = []
    losses: list[Loss] = []
    for shard in group:
        if shard.index in ends:
            results.append(decode(ends[shard.index], ShardResult))
            continue
        assert shard.reason is not None  # a shard without a result was lost
        if shard.boot is None:
            failures = dict.fromkeys(shard.partitions, shard.reason)
            losses.append(Loss(phase="boot", failures=failures, vps=len(shard.partitions) * options.vps))
            continue
        # Lost after booting: its boot phase counts; in the operations its partitions leave the run.
        booted = shard.boot
        results.append(ShardResult(shard=shard.index, phases=[booted], traces=[], scheduler={}, wall_ns=0))
        if not options.mix.weights:
            continue
        failures = {p: shard.reason for p in shard.partitions if p not in booted.partition_failures}
        healthy = (len(shard.partitions) - booted.failed) * options.vps
        losses.append(Loss(phase="operations", failures=failures, vps=healthy))
    data = merge_runs(
        options,
        results,
        losses=losses,
        shards=[s.report() for s in group],
    )
    data.wall_ns = time.perf_counter_ns() - wall_start
    return data
