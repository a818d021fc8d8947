"""``open_runtime``: the host of many simulated partitions (``Runtime``).

The runtime owns one task group; every task it starts (the scheduler's runner and flusher) ends
when the ``async with`` block exits, and every partition is stopped then. The handles it gives
out (``Vp``, ``Partition``) are ``_handles``'.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec

from actors import PartitionConfig

from ._handles import (
    Partition as Partition,
    PartitionStatistics as PartitionStatistics,
    Vp as Vp,
    wrong_thread,
)
from ._journal import encode_checkpoint
from ._mailbox import current_backend
from ._scheduler import BatchingScheduler, SchedulerStatistics
from ._snapshot import decode_partition, restore_actors
from ._supervision import RestartPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ._cells import PartitionCells
    from ._events import EngineEvent

__all__ = ("Partition", "PartitionStatistics", "Runtime", "RuntimeStatistics", "Vp", "open_runtime")

ClockKind = Literal["real", "virtual"]


class RuntimeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of the whole runtime."""

    partitions: int
    vps: int
    scheduler: SchedulerStatistics
    #: Event listeners attached now, and those detached because they raised.
    listeners: int = 0
    listener_errors: int = 0


class Runtime:
    """Hosts partitions; made by ``open_runtime``."""

    def __init__(
        self, scheduler: BatchingScheduler, *, seed: int | None, clock: ClockKind, first_partition_id: int = 0
    ) -> None:
        self._scheduler = scheduler
        self._partitions: dict[int, Partition] = {}
        self._ids = itertools.count(first_partition_id)
        self.seed = seed
        self.clock = clock
        self.closed = False

    def __repr__(self) -> str:
        return f"<Runtime backend={self._scheduler.backend.name} partitions={len(self._partitions)}>"

    @property
    def backend(self) -> str:
        """``"asyncio"`` or ``"trio"``."""
        return self._scheduler.backend.name

    async def create_partition(self, **config: object) -> Partition:
        """Create a partition from ``PartitionConfig`` keywords; VP 0 runs from creation.

        Raises:
            ValueError: a bad or unknown configuration field (the message names it).
        """
        if threading.get_ident() != self._scheduler.thread:
            raise wrong_thread("create_partition", self)
        await anyio.lowlevel.checkpoint()
        if self.closed:
            msg = "create_partition failed: the runtime is closed"
            raise anyio.ClosedResourceError(msg)
        partition_config = PartitionConfig.from_keywords(**config)
        return self._add(self._scheduler.create_partition(next(self._ids), partition_config))

    async def restore_partition(self, data: bytes) -> Partition:
        """A new partition (new id) in exactly the state ``Partition.snapshot()`` encoded.

        Raises:
            ValueError: the data is damaged, foreign or of another version (a
                ``ProtocolError``); nothing is created.
        """
        if threading.get_ident() != self._scheduler.thread:
            raise wrong_thread("restore_partition", self)
        await anyio.lowlevel.checkpoint()
        if self.closed:
            msg = "restore_partition failed: the runtime is closed"
            raise anyio.ClosedResourceError(msg)
        snapshot = decode_partition(data)
        partition_id = next(self._ids)
        supervisor, actors = restore_actors(snapshot, partition_id)
        cells = self._scheduler.create_partition(
            partition_id, snapshot.config, supervisor=supervisor, actors=actors
        )
        for cell, vp in zip(cells.cells, snapshot.vps, strict=True):
            cell.base = encode_checkpoint(vp)  # the checkpoint a restart rebuilds from
        return self._add(cells)

    def _add(self, cells: PartitionCells) -> Partition:
        partition = Partition(self._scheduler, cells)
        self._partitions[cells.partition_id] = partition
        return partition

    @property
    def partitions(self) -> list[Partition]:
        """Every partition created so far."""
        return list(self._partitions.values())

    def partition(self, partition_id: int) -> Partition:
        """The partition with id ``partition_id`` (stopped ones included).

        Raises:
            KeyError: no partition has that id (the message names it).
        """
        partition = self._partitions.get(partition_id) if type(partition_id) is int else None
        if partition is None:
            msg = f"no partition with id {partition_id!r}"
            raise KeyError(msg)
        return partition

    def subscribe(
        self, listener: Callable[[EngineEvent], None], *, commits: bool = True
    ) -> Callable[[], None]:
        """Call ``listener`` with every engine event from now on; returns the unsubscribe function.

        Events (``runtime.VtlSwitchEvent``, ``InterceptEvent``, ``CommitEvent``, ``FailureEvent``)
        are delivered synchronously on the scheduler's runner, in the order they happened, so
        a listener must not block; one that raises is detached. ``commits=False`` leaves out
        ``CommitEvent``s, the most frequent kind. Without listeners the scheduler pays nothing
        for this; a listener costs a comparison of a few counters per step, plus the events.
        """
        return self._scheduler.listeners.add(listener, commits=commits)

    def statistics(self, *, reset_peaks: bool = False) -> RuntimeStatistics:
        """Counters of the runtime; ``reset_peaks`` starts the largest/longest-pass peaks afresh."""
        result = RuntimeStatistics(
            partitions=len(self._partitions),
            vps=sum(p.vp_count for p in self._partitions.values()),
            scheduler=self._scheduler.statistics(),
            listeners=len(self._scheduler.listeners),
            listener_errors=self._scheduler.listeners.errors,
        )
        if reset_peaks:
            self._scheduler.largest_pass = 0
            self._scheduler.longest_pass = 0.0
        return result

    def _close(self) -> None:
        self.closed = True
        for partition in self._partitions.values():
            if not partition._cells.stopped:  # the runtime owns its partitions
                self._scheduler.stop_partition(
                    partition._cells, lambda: anyio.ClosedResourceError("the runtime was closed")
                )


@asynccontextmanager
async def open_runtime(
    *,
    seed: int | None = None,
    clock: ClockKind = "real",
    mailbox_capacity: int = 1024,
    check_invariants: bool = False,
    restart_policy: RestartPolicy | None = None,
    pass_budget: float = 0.0001,
    first_partition_id: int = 0,
) -> AsyncIterator[Runtime]:
    """Open a runtime; on exit every partition is stopped and every task it started has ended.

    It runs on the event loop of the calling task: trio, or asyncio's own loop or uvloop
    (``anyio.run(..., backend_options={"use_uvloop": True})``; the extra ``uvloop``).

    Args:
        seed: seed of the workloads' random choices (the same seed gives the same run).
        clock: ``"real"`` or ``"virtual"`` time. With ``"virtual"`` no batch window closes on
            wall time (windows close by count and at commit points only), so what commits when
            depends only on the actions; measurements in virtual time are ``runtime.experiment``'s.
        mailbox_capacity: bound of each VP's mailbox; a full one raises ``Busy``.
        check_invariants: check DOMAIN section 5's invariants after every step and commit; a
            violation is a crash of that step (``ActorCrashed`` to its caller, its cause the
            ``InternalError``); meant for tests.
        restart_policy: how crashed VPs are restarted (OTP defaults: 1 restart in 5 s).
        pass_budget: seconds a scheduler pass may hold the event loop before it yields (the
            rest of its batch goes first in the next pass; due batch windows are closed after
            it in what is left). With 0.1 ms a host's 1 ms timer lag p99 stayed at 0.72-0.92x
            its lag beside a raw asyncio fleet (P8), the fleet at 1.0x its throughput (P2).
        first_partition_id: id of the first partition created; the next ones count up from it
            (a shard hosting partitions ``k..`` of a larger fleet numbers them as the fleet does).
    """
    if clock not in ("real", "virtual"):
        msg = f"open_runtime: clock must be 'real' or 'virtual', got {clock!r}"
        raise ValueError(msg)
    if type(mailbox_capacity) is not int or mailbox_capacity < 1:
        msg = f"open_runtime: mailbox_capacity must be a positive int, got {mailbox_capacity!r}"
        raise ValueError(msg)
    budget: object = pass_budget  # checked at run time: callers are not all type-checked
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not budget > 0:
        msg = f"open_runtime: pass_budget must be a positive number of seconds, got {budget!r}"
        raise ValueError(msg)
    policy: object = restart_policy
    if policy is not None and not isinstance(policy, RestartPolicy):
        msg = f"open_runtime: restart_policy must be a RestartPolicy, got {policy!r}"
        raise TypeError(msg)
    scheduler = BatchingScheduler(
        current_backend(),
        mailbox_capacity=mailbox_capacity,
        check_invariants=check_invariants,
        restart_policy=restart_policy,
        pass_budget=pass_budget,
        seed=seed,
    )
    if type(first_partition_id) is not int or first_partition_id < 0:
        msg = f"open_runtime: first_partition_id must be an int >= 0, got {first_partition_id!r}"
        raise ValueError(msg)
    runtime = Runtime(scheduler, seed=seed, clock=clock, first_partition_id=first_partition_id)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await tg.start(scheduler.timers.run)
        if clock == "real":
            # Virtual time has no wall clock to close batch windows on: they close by count
            # (batch_max_updates) and at the commit points, so a seeded run is reproducible.
            await tg.start(scheduler.run_flusher)
        try:
            yield runtime
        finally:
            runtime._close()  # the owner closes its runtime
            tg.cancel_scope.cancel()
