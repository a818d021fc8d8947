"""The batching scheduler: runs actors' messages in passes and decides when staged updates commit.

Actors have no task of their own (an idle VP costs only its state). A VP or supervisor with
mail sits on the ready queue; the scheduler's runner task takes a snapshot of that queue per
pass and runs one message of each actor in it (trio's batch discipline: work that becomes ready
during a pass waits for the next one, so no actor starves).

Commit points (the rules are in ``actors``; this module only decides *when*):

* VTL entry: a VP commits a VTL's staged updates before that VTL runs its next action;
* inspection: ``vp.registers`` / ``vp.tdx_state`` / ``vp.sint0_message`` commit first;
* a batch window closes: ``batch_max_updates`` staged updates of one (VP, VTL), or
  ``batch_window`` seconds after the first staged update (the flusher task below).

A step that raises ``PartitionFailed`` ends its whole partition (``fail_partition``, DOMAIN
7.2): every VP of it, callers already waiting included, gets ``PartitionFailed``; other
partitions are untouched.
"""

from __future__ import annotations

import heapq
import itertools
import types
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec

from actors import (
    PartitionConfig,
    PartitionFailed,
    PartitionSupervisor,
    SupervisorRequest,
    VpActor,
    check_vp_invariants,
)

from ._mailbox import Backend, Mailbox, ReplySlot, reply, reply_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

__all__ = ("BatchingScheduler", "PartitionCells", "SchedulerStatistics", "VpCell")

_ACTION: Final = 0
_INSPECT: Final = 1
_GENERATOR: Final = types.GeneratorType


class SchedulerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of the batching scheduler."""

    passes: int
    steps: int
    window_commits: int
    largest_pass: int
    errors: int
    inline_passes: int = 0


class VpCell:
    """The runtime side of one VP actor: its mailbox and scheduling state."""

    __slots__ = ("actor", "mailbox", "partition", "pending", "resume", "scheduled")

    def __init__(
        self, actor: VpActor, partition: PartitionCells, capacity: int, schedule: Callable[[VpCell], None]
    ) -> None:
        self.actor = actor
        self.partition = partition
        self.scheduled = False
        # A hypercall waiting for the supervisor: (generator, reply slot).
        self.pending: tuple[Any, ReplySlot] | None = None
        self.resume: tuple[bool, Any] | None = None
        self.mailbox: Mailbox[tuple[int, Any, ReplySlot]] = Mailbox(capacity, schedule, self)

    def __repr__(self) -> str:
        return f"<VpCell partition={self.partition.partition_id} {self.actor!r} depth={len(self.mailbox)}>"

    def __str__(self) -> str:
        st = self.actor.state
        return f"partition {self.partition.partition_id} vp {st.index} ({st.active_vtl.name})"


class PartitionCells:
    """The runtime side of one partition: the supervisor, its mailbox and the VP cells."""

    __slots__ = (
        "cells",
        "config",
        "failure",
        "partition_id",
        "requests",
        "scheduled",
        "stopped",
        "supervisor",
    )

    def __init__(self, partition_id: int, config: PartitionConfig, scheduler: BatchingScheduler) -> None:
        self.partition_id = partition_id
        self.config = config
        self.supervisor = PartitionSupervisor(partition_id, config)
        # Supervisor mailbox: short (one request per waiting VP at most), so a list will do.
        self.requests: list[tuple[SupervisorRequest, VpCell]] = []
        self.scheduled = False
        self.stopped = False
        #: Why the partition ended (DOMAIN 7.2), or None while it runs.
        self.failure: str | None = None
        view = self.supervisor.view
        capacity = scheduler.mailbox_capacity
        self.cells = [
            VpCell(VpActor(i, config, view), self, capacity, scheduler.schedule)
            for i in range(config.vp_count)
        ]


class BatchingScheduler:
    """Runs every actor of one runtime on one runner task, in snapshot passes.

    Only ``run`` and ``run_flusher`` are async (they are the tasks); posting is synchronous.
    """

    def __init__(self, backend: Backend, *, mailbox_capacity: int, check_invariants: bool) -> None:
        # The event loop's clock (what anyio.current_time and anyio.sleep use), looked up once:
        # anyio.current_time finds the backend again on every call.
        self._now = _loop_clock()
        self.backend = backend
        self.mailbox_capacity = mailbox_capacity
        self.check_invariants = check_invariants
        self._ready: deque[VpCell | PartitionCells] = deque()
        self._wakeup = backend.wakeup()
        self._dirty: dict[VpCell, float] = {}
        # Batch-window deadlines of the cells in ``_dirty``, as a heap of (deadline, seq, cell);
        # an entry whose cell has left ``_dirty`` (a stopped partition) is skipped when popped.
        self._deadlines: list[tuple[float, int, VpCell]] = []
        self._deadline_seq = itertools.count()
        self._flusher_wakeup = anyio.Event()
        self.passes = 0
        self.steps = 0
        self.window_commits = 0
        self.largest_pass = 0
        self.errors = 0
        self.inline_passes = 0

    def statistics(self) -> SchedulerStatistics:
        """Counters."""
        return SchedulerStatistics(
            passes=self.passes,
            steps=self.steps,
            window_commits=self.window_commits,
            largest_pass=self.largest_pass,
            errors=self.errors,
            inline_passes=self.inline_passes,
        )

    # ---- posting (synchronous) ------------------------------------------------------------------

    def schedule(self, cell: VpCell) -> None:
        """Put a VP cell on the ready queue unless it is already there or blocked."""
        if not cell.scheduled and (cell.pending is None or cell.resume is not None):
            cell.scheduled = True
            if not self._ready:
                self._wakeup.notify()
            self._ready.append(cell)

    def _schedule_partition(self, partition: PartitionCells) -> None:
        if not partition.scheduled:
            partition.scheduled = True
            if not self._ready:
                self._wakeup.notify()
            self._ready.append(partition)

    def post_action(self, cell: VpCell, action: object, slot: ReplySlot) -> None:
        """Queue a guest action for a VP."""
        cell.mailbox.put((_ACTION, action, slot))

    def post_inspection(self, cell: VpCell, inspect: Callable[[VpActor], object], slot: ReplySlot) -> None:
        """Queue an inspection; it runs in order with the VP's actions."""
        cell.mailbox.put((_INSPECT, inspect, slot))

    # ---- the runner ------------------------------------------------------------------------------

    def run_now(self) -> None:
        """Run passes in the caller, synchronously, until the ready queue is empty.

        The hook of in-line guest programs (``runtime._programs``): the same passes and steps as
        the runner task's, without waiting for the event loop to run it.
        """
        while self._ready:
            batch, self._ready = self._ready, deque()
            self.passes += 1
            self.inline_passes += 1
            for item in batch:
                item.scheduled = False
                if isinstance(item, VpCell):
                    self._step_vp(item)
                else:
                    self._step_partition(item)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The runner task: drain the ready queue pass by pass, park when it is empty."""
        task_status.started()
        wakeup = self._wakeup
        while True:
            if not self._ready:
                await wakeup.wait()
                continue
            batch, self._ready = self._ready, deque()
            self.passes += 1
            if len(batch) > self.largest_pass:
                self.largest_pass = len(batch)
            for item in batch:
                if isinstance(item, VpCell):
                    item.scheduled = False
                    self._step_vp(item)
                else:
                    item.scheduled = False
                    self._step_partition(item)
            if self._ready:
                # Let callers collect replies and post more before the next pass.
                await anyio.lowlevel.checkpoint()

    def _step_vp(self, cell: VpCell) -> None:
        actor = cell.actor
        self.steps += 1
        if cell.resume is not None:
            (ok, value), cell.resume = cell.resume, None
            generator, slot = cell.pending  # type: ignore[misc]  # set whenever resume is
            cell.pending = None
            self._drive(cell, generator, slot, ok, value)
        elif cell.mailbox:
            kind, payload, slot = cell.mailbox.get()
            try:
                result = actor.execute(payload) if kind == _ACTION else payload(actor)
            except PartitionFailed as exc:
                self._fatal(cell.partition, exc, slot)
            except Exception as exc:  # delivered to the caller: the actor carries on
                self.errors += 1
                reply_error(slot, exc)
            else:
                if type(result) is _GENERATOR:
                    self._drive(cell, result, slot, True, None)
                elif not self.check_invariants or self._invariants_hold(cell, slot):
                    reply(slot, result)
        elif actor.has_controls:
            try:
                actor.apply_controls()  # woken by the supervisor
            except PartitionFailed as exc:
                self._fatal(cell.partition, exc, None)
            else:
                if self.check_invariants:
                    check_vp_invariants(actor.state)  # nobody waits on this step: stop the runtime
        self._after_step(cell)

    def _invariants_hold(self, cell: VpCell, slot: ReplySlot) -> bool:
        """Check the step's invariants *before* replying: a slot that is set ignores ``fail``."""
        if self.check_invariants:
            try:
                check_vp_invariants(cell.actor.state)
            except Exception as exc:  # InternalError, delivered to the caller
                self.errors += 1
                reply_error(slot, exc)
                return False
        return True

    def _after_step(self, cell: VpCell) -> None:
        if cell not in self._dirty:
            vtls = cell.actor.state.vtls
            if vtls[0].staged_updates or vtls[1].staged_updates:
                now = self._dirty[cell] = self._now()
                deadline = now + cell.partition.config.batch_window
                heapq.heappush(self._deadlines, (deadline, next(self._deadline_seq), cell))
                self._flusher_wakeup.set()
        # Control messages that reached this VP while it waited on its own hypercall (its own
        # EnableVpVtl) are applied by its next action or inspection, as any VP's are: a step of
        # their own would race with the caller's resumption (trio orders a batch at random), so
        # the commit they make would land on this action or the next by chance.
        if cell.pending is None and cell.mailbox:
            self.schedule(cell)

    def _drive(self, cell: VpCell, generator: Any, slot: ReplySlot, ok: bool, value: Any) -> None:
        """Advance a hypercall generator to its next supervisor request or to its result."""
        try:
            request = generator.send(value) if ok else generator.throw(value)
        except StopIteration as stop:
            if self._invariants_hold(cell, slot):
                reply(slot, stop.value)
            return
        except PartitionFailed as exc:
            self._fatal(cell.partition, exc, slot)
            return
        except Exception as exc:
            self.errors += 1
            reply_error(slot, exc)
            return
        if not self._invariants_hold(cell, slot):
            generator.close()
            return
        cell.pending = (generator, slot)
        partition = cell.partition
        partition.requests.append((request, cell))
        self._schedule_partition(partition)

    def _step_partition(self, partition: PartitionCells) -> None:
        if not partition.requests:
            return
        request, cell = partition.requests.pop(0)
        self.steps += 1
        try:
            status, effects = partition.supervisor.handle(request)
        except Exception as exc:
            self.errors += 1
            cell.resume = (False, exc)
            self.schedule(cell)
        else:
            # The caller's hypercall completes before a target acts on its control message, as
            # in OpenHCL, where the target VP processes its wake reason later: a context load
            # that proves fatal ends the partition after the caller saw its status.
            cell.resume = (True, status)
            self.schedule(cell)
            for target, control in effects:
                target_cell = partition.cells[target]
                target_cell.actor.deliver(control)
                self.schedule(target_cell)
        if partition.requests:
            self._schedule_partition(partition)

    # ---- batch windows -----------------------------------------------------------------------------

    async def run_flusher(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit staged updates whose batch window (``batch_window`` seconds) has closed."""
        task_status.started()
        while True:
            await self._flusher_wakeup.wait()
            self._flusher_wakeup = anyio.Event()
            deadlines = self._deadlines
            while deadlines:
                # Earliest deadline first: O(log n) per dirty cell, not a scan of all of them.
                deadline, _, cell = deadlines[0]
                now = self._now()
                if deadline > now:
                    await anyio.sleep(deadline - now)
                    continue
                heapq.heappop(deadlines)
                if self._dirty.pop(cell, None) is None or cell.partition.stopped or cell.partition.failure:
                    continue
                cell.actor.state.commit_all()
                self.window_commits += 1
                if self.check_invariants:
                    check_vp_invariants(cell.actor.state)

    # ---- fatal errors ------------------------------------------------------------------------------

    def _fatal(self, partition: PartitionCells, exc: PartitionFailed, slot: ReplySlot | None) -> None:
        """A step raised ``PartitionFailed``: end its partition (once) and answer its caller."""
        if partition.failure is None:
            self.fail_partition(partition, f"partition {partition.partition_id} {exc}")
        if slot is not None:
            reply_error(slot, PartitionFailed(partition.failure))

    def fail_partition(self, partition: PartitionCells, reason: str) -> None:
        """End ``partition``: OpenHCL aborts on a fatal error, so every VP of it is lost (7.2).

        Every VP raises ``PartitionFailed(reason)`` from then on, from ``execute`` and from
        inspections; callers already waiting (queued messages, hypercalls parked on the
        supervisor) get it now. ``reason`` is kept as ``Partition.failure``; a second call
        keeps the first reason. Other partitions are untouched.
        """
        if partition.failure is not None:
            return
        partition.failure = reason
        for cell in partition.cells:
            cell.actor.fail(reason)
            for _, _, slot in cell.mailbox.drain():
                reply_error(slot, PartitionFailed(reason))
            if cell.pending is not None:
                generator, slot = cell.pending
                cell.pending = None
                cell.resume = None
                generator.close()
                reply_error(slot, PartitionFailed(reason))
            self._dirty.pop(cell, None)
        partition.requests.clear()

    # ---- shutdown ----------------------------------------------------------------------------------

    def stop_partition(self, partition: PartitionCells, error: BaseException) -> None:
        """Close every mailbox of ``partition`` and fail whatever was waiting."""
        partition.stopped = True
        for cell in partition.cells:
            cell.mailbox.closed = True
            for _, _, slot in cell.mailbox.drain():
                reply_error(slot, error)
            if cell.pending is not None:
                generator, slot = cell.pending
                cell.pending = None
                cell.resume = None
                generator.close()
                reply_error(slot, error)
            self._dirty.pop(cell, None)
        partition.requests.clear()


def _loop_clock() -> Callable[[], float]:
    """The running event loop's monotonic clock, in seconds."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.current_time
    import asyncio

    return asyncio.get_running_loop().time
