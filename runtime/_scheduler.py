"""The batching scheduler: runs actors' messages in passes and decides when staged updates commit.

Actors have no task of their own (an idle VP costs only its state). A VP or supervisor with
mail sits on the ready queue; the scheduler's runner task takes a snapshot of that queue per
pass and runs one message of each actor in it (trio's batch discipline: work that becomes ready
during a pass waits for the next one, so no actor starves). A pass stops early, leaving the
rest of its snapshot first in line, once it has run ``pass_budget`` seconds: no pass holds the
event loop for long, so the host's own tasks stay responsive.

Commit points (the rules are in ``actors``; this module only decides *when*):

* VTL entry: a VP commits a VTL's staged updates before that VTL runs its next action;
* inspection: ``vp.registers`` / ``vp.tdx_state`` / ``vp.sint0_message`` commit first;
* a batch window closes: ``batch_max_updates`` staged updates of one (VP, VTL), or
  ``batch_window`` seconds after the first staged update (the flusher task below).

Every input of a VP is journaled (``_journal``) before it runs. A step that raises a refusal
(a ``SimulationError`` a rule raises on purpose) answers its caller with it; any other
exception is a crash, handled by ``_crash``: the VP is rebuilt in its last committed state, the
caller gets ``ActorCrashed`` (or, for a hypercall the supervisor had already answered, the
input is retried), and the VP restarts after a backoff (``_supervision``), unless the
partition's restart intensity is exceeded: then the partition fails.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
import types
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import msgspec

from actors import FAULTS, ActorCrashed, PartitionFailed, check_vp_invariants

from ._cells import PartitionCells, VpCell
from ._events import FailureEvent, Listeners, marks, report, switch_marks
from ._journal import (
    J_COMMIT,
    J_CONTROLS,
    J_DELIVER,
    J_RESUME,
    J_VIEW,
    JOURNAL_LIMIT,
    ReplayError,
    checkpoint,
    is_refusal,
    rebuild,
)
from ._mailbox import reply, reply_error
from ._supervision import RestartPolicy, Timers

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

    from actors import VpActor

    from ._mailbox import Backend, ReplySlot

__all__ = ("BatchingScheduler", "PartitionCells", "SchedulerStatistics", "StepHooks", "VpCell")

_ACTION: Final = 0
_INSPECT: Final = 1
_GENERATOR: Final = types.GeneratorType
#: Steps between two looks at the clock within a pass (``pass_check_every``'s default).
_CLOCK_EVERY: Final = 32


class StepHooks(Protocol):
    """What a deterministic simulation (``runtime.sim``) sees of every step."""

    def before_vp_step(self, cell: VpCell) -> float:
        """Seconds the VP's step waits first (a slow vCPU), or 0 to run it now."""
        ...

    def after_step(self, partition: PartitionCells) -> None:
        """A step of one of ``partition``'s actors ran (check its invariants here)."""
        ...

    def crashed(self, where: str, error: BaseException) -> None:
        """A step of the actor ``where`` crashed with ``error`` (before it is undone)."""
        ...


class SchedulerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of the batching scheduler.

    ``errors`` counts steps that raised (refusals and crashes); ``crashes`` those that were
    crashes; ``restarts`` the restarts that followed; ``failed_partitions`` the partitions that
    failed (restart intensity exceeded, or a fatal condition). ``longest_pass_ns`` is the
    longest a pass held the event loop; ``cut_passes`` the passes the time budget cut short.
    """

    passes: int
    steps: int
    window_commits: int
    largest_pass: int
    errors: int
    crashes: int = 0
    restarts: int = 0
    failed_partitions: int = 0
    restarting: int = 0
    longest_pass_ns: int = 0
    cut_passes: int = 0
    inline_passes: int = 0


class BatchingScheduler:
    """Runs every actor of one runtime on one runner task, in snapshot passes.

    Only ``run``, ``run_flusher`` and the timer task are async; posting is synchronous.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        mailbox_capacity: int,
        check_invariants: bool,
        restart_policy: RestartPolicy | None = None,
        pass_budget: float = 0.0001,
        pass_clock: Callable[[], float] = time.perf_counter,
        seed: int | None = None,
    ) -> None:
        # The event loop's clock (what anyio.current_time and anyio.sleep use), looked up once:
        # anyio.current_time finds the backend again on every call.
        self._now = _loop_clock()
        #: The thread the runtime was opened in: the only one allowed to call it.
        self.thread = threading.get_ident()
        self.backend = backend
        self.new_slot = backend.slot
        self.mailbox_capacity = mailbox_capacity
        self.check_invariants = check_invariants
        self.restart_policy = restart_policy if restart_policy is not None else RestartPolicy()
        self.pass_budget = pass_budget
        #: Times passes (wall clock; a simulation passes a deterministic one).
        self.pass_clock = pass_clock
        #: Steps between two looks at ``pass_clock`` within a pass; shorter passes never look.
        self.pass_check_every = _CLOCK_EVERY
        self.timers = Timers(self._now)
        self._rng = random.Random(seed)  # backoff jitter
        # Restarts waiting for their backoff: cell or partition -> (token, restart).
        self._backoffs: dict[VpCell | PartitionCells, tuple[object, Callable[[], None]]] = {}
        self._ready: deque[VpCell | PartitionCells] = deque()
        self._wakeup = backend.wakeup()
        self._dirty: dict[VpCell, float] = {}
        # Batch-window deadlines of the cells in ``_dirty``, as a heap of (deadline, seq, cell);
        # an entry whose cell has left ``_dirty`` (a stopped partition) is skipped when popped.
        self._deadlines: list[tuple[float, int, VpCell]] = []
        self._deadline_seq = itertools.count()
        self._flusher_wakeup = anyio.Event()
        #: Event listeners (``Runtime.subscribe``); ``listeners.emit`` is None without any.
        self.listeners = Listeners(on_change=self._choose_step)
        self.passes = 0
        self.steps = 0
        self.window_commits = 0
        self.largest_pass = 0
        self.errors = 0
        self.crashes = 0
        self.restarts = 0
        self.failed_partitions = 0
        self.longest_pass = 0.0
        self.cut_passes = 0
        self.restarting = 0
        self.inline_passes = 0
        self._hooks: StepHooks | None = None
        #: The step of a VP cell: ``_step_vp``, or ``_hooked_step_vp`` while hooks are set, in
        #: ``_step_vp_observed`` while listeners are attached (``_choose_step``).
        self._inner_step: Callable[[VpCell], None] = self._step_vp
        self._step: Callable[[VpCell], None] = self._step_vp

    @property
    def hooks(self) -> StepHooks | None:
        """A simulation's view into every step (``StepHooks``); None in normal runs."""
        return self._hooks

    @hooks.setter
    def hooks(self, hooks: StepHooks | None) -> None:
        self._hooks = hooks
        self._choose_step()

    def _choose_step(self) -> None:
        """Pick the VP step for the hooks and listeners now set: the plain one costs nothing."""
        self._inner_step = self._step_vp if self._hooks is None else self._hooked_step_vp
        self._step = self._inner_step if self.listeners.emit is None else self._step_vp_observed

    def statistics(self) -> SchedulerStatistics:
        """Counters."""
        return SchedulerStatistics(
            passes=self.passes,
            steps=self.steps,
            window_commits=self.window_commits,
            largest_pass=self.largest_pass,
            errors=self.errors,
            crashes=self.crashes,
            restarts=self.restarts,
            failed_partitions=self.failed_partitions,
            restarting=self.restarting,
            longest_pass_ns=int(self.longest_pass * 1e9),
            cut_passes=self.cut_passes,
            inline_passes=self.inline_passes,
        )

    def create_partition(self, partition_id: int, config: Any, **restored: Any) -> PartitionCells:
        """The cells of a new partition (``restored``: its supervisor and VP actors)."""
        return PartitionCells(
            partition_id,
            config,
            capacity=self.mailbox_capacity,
            schedule=self.schedule,
            policy=self.restart_policy,
            **restored,
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
        if not partition.scheduled and not partition.restarting:
            partition.scheduled = True
            if not self._ready:
                self._wakeup.notify()
            self._ready.append(partition)

    def post_action(self, cell: VpCell, action: object, slot: ReplySlot) -> None:
        """Queue a guest action for a VP."""
        cell.mailbox.put((_ACTION, action, slot))

    def post_inspection(self, cell: VpCell, inspect: Callable[[Any], object], slot: ReplySlot) -> None:
        """Queue an inspection; it runs in order with the VP's actions."""
        cell.mailbox.put((_INSPECT, inspect, slot))

    def post_partition_operation(
        self, partition: PartitionCells, operation: Callable[[PartitionCells], object], slot: ReplySlot
    ) -> None:
        """Run ``operation`` once every VP of ``partition`` is between inputs (a snapshot)."""
        if partition.stopped:
            raise partition.cells[0].closed_error()
        partition.operations.append((operation, slot))  # bounded: one per waiting caller
        self._schedule_partition(partition)

    # ---- the runner ------------------------------------------------------------------------------

    def run_now(self) -> None:
        """Run passes in the caller, synchronously, until the ready queue is empty.

        The hook of in-line guest programs (``runtime._programs``): the same passes and steps as
        the runner task's (journaled and supervised alike), without waiting for the event loop.
        """
        while self._ready:
            batch, self._ready = self._ready, deque()
            self.passes += 1
            self.inline_passes += 1
            for item in batch:
                item.scheduled = False
                if type(item) is VpCell:
                    self._step(item)
                else:
                    self._step_partition(item)  # type: ignore[arg-type]  # a PartitionCells

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
            clock = self.pass_clock
            started = clock()
            if len(batch) <= self.pass_check_every:  # short pass: no clock reads in between
                if len(batch) > self.largest_pass:
                    self.largest_pass = len(batch)
                for item in batch:
                    item.scheduled = False
                    if type(item) is VpCell:
                        self._step(item)
                    else:
                        self._step_partition(item)  # type: ignore[arg-type]  # a PartitionCells
            else:
                self._long_pass(batch, started + self.pass_budget)
            elapsed = clock() - started
            if elapsed > self.longest_pass:
                self.longest_pass = elapsed
            if self._ready:
                # Let callers collect replies and post more before the next pass.
                await anyio.lowlevel.checkpoint()

    def _long_pass(self, batch: deque[VpCell | PartitionCells], deadline: float) -> None:
        """Run ``batch``, looking at the clock every few steps; past ``deadline``, stop early.

        What is left of the batch goes first in the next pass, after the loop has run.
        """
        self.largest_pass = max(self.largest_pass, len(batch))
        clock = self.pass_clock
        every = countdown = self.pass_check_every
        while batch:
            item = batch.popleft()
            item.scheduled = False
            if type(item) is VpCell:
                self._step(item)
            else:
                self._step_partition(item)  # type: ignore[arg-type]  # a PartitionCells
            countdown -= 1
            if not countdown:
                countdown = every
                if batch and clock() > deadline:
                    batch.extend(self._ready)
                    self._ready = batch
                    self.cut_passes += 1
                    return

    def _hooked_step_vp(self, cell: VpCell) -> None:
        """``_step_vp`` between the hooks' ``before_vp_step`` and ``after_step``."""
        hooks = self._hooks
        assert hooks is not None  # the step while hooks are set
        delay = hooks.before_vp_step(cell)
        if delay > 0:
            self._pause(cell, delay)
            return
        self._step_vp(cell)
        hooks.after_step(cell.partition)

    def _step_vp(self, cell: VpCell) -> None:
        actor = cell.actor
        self.steps += 1
        journal = cell.journal
        if cell.resume is not None:
            (ok, value), cell.resume = cell.resume, None
            generator, slot = cell.pending  # type: ignore[misc]  # set whenever resume is
            cell.pending = None
            journal += (J_RESUME, (ok, value))
            self._drive(cell, generator, slot, ok, value)
        elif cell.mailbox.queue:
            kind, payload, slot = cell.mailbox.queue.popleft()
            journal.append(kind)
            journal.append(payload)
            try:
                result = actor.execute(payload) if kind == _ACTION else payload(actor)
                if self.check_invariants and type(result) is not _GENERATOR:
                    check_vp_invariants(actor.state)
            except Exception as exc:
                self._failed(cell, slot, exc)
            else:
                if type(result) is _GENERATOR:
                    self._drive(cell, result, slot, True, None, first=True)
                else:
                    reply(slot, result)
        elif actor.has_controls:
            journal += (J_CONTROLS, None)
            try:
                actor.apply_controls()  # woken by the supervisor
                if self.check_invariants:
                    check_vp_invariants(actor.state)
            except Exception as exc:
                self._failed(cell, None, exc)
        self._after_step(cell)

    def _step_vp_observed(self, cell: VpCell) -> None:
        """The VP's step (hooked or not), then tell the listeners what it changed on the VP."""
        st = cell.actor.state
        pick = marks if self.listeners.commits else switch_marks
        before = pick(st)
        self._inner_step(cell)
        if pick(st) != before:
            report(self.listeners, cell.partition.partition_id, st, before)

    def _after_step(self, cell: VpCell) -> None:
        # (A restarting cell is marked scheduled and busy: schedule and the flusher skip it.)
        if cell not in self._dirty:  # _arm_window, inlined (hot path)
            vtls = cell.actor.state.vtls
            if vtls[0].staged_updates or vtls[1].staged_updates:
                now = self._dirty[cell] = self._now()
                deadline = now + cell.partition.config.batch_window
                heapq.heappush(self._deadlines, (deadline, next(self._deadline_seq), cell))
                self._flusher_wakeup.set()
        if cell.pending is None:
            if len(cell.journal) >= JOURNAL_LIMIT:
                cell.base = checkpoint(cell.actor)
                cell.base_view = cell.partition.view
                cell.journal.clear()
            # Control messages that reached this VP while it waited on its own hypercall (its own
            # EnableVpVtl) are applied by its next action or inspection, as any VP's are: a step
            # of their own would race with the caller's resumption (trio orders a batch at
            # random), so the commit they make would land on this action or the next by chance.
            if cell.mailbox.queue:
                self.schedule(cell)

    def _arm_window(self, cell: VpCell) -> None:
        if cell not in self._dirty:
            vtls = cell.actor.state.vtls
            if vtls[0].staged_updates or vtls[1].staged_updates:
                now = self._dirty[cell] = self._now()
                deadline = now + cell.partition.config.batch_window
                heapq.heappush(self._deadlines, (deadline, next(self._deadline_seq), cell))
                self._flusher_wakeup.set()

    def _drive(
        self, cell: VpCell, generator: Any, slot: ReplySlot, ok: bool, value: Any, *, first: bool = False
    ) -> None:
        """Advance a hypercall generator to its next supervisor request or to its result."""
        try:
            request = generator.send(value) if ok else generator.throw(value)
            if self.check_invariants:
                check_vp_invariants(cell.actor.state)
        except StopIteration as stop:
            try:
                if self.check_invariants:
                    check_vp_invariants(cell.actor.state)
            except Exception as exc:
                self._failed(cell, slot, exc, retry=None if first else (ok, value))
            else:
                reply(slot, stop.value)
            if cell.partition.operations:
                self._schedule_partition(cell.partition)
            return
        except Exception as exc:
            self._failed(cell, slot, exc, retry=None if first else (ok, value))
            if cell.partition.operations:
                self._schedule_partition(cell.partition)
            return
        cell.pending = (generator, slot)
        partition = cell.partition
        partition.requests.append((request, cell))
        self._schedule_partition(partition)

    def _step_partition(self, partition: PartitionCells) -> None:
        if partition.stopped:
            return
        if not partition.requests:
            if partition.operations and partition.quiet:
                self._run_operations(partition)
            return
        request, cell = partition.requests.pop(0)
        self.steps += 1
        state = partition.supervisor.state
        saved = state.checkpoint()
        requests = partition.supervisor.requests
        try:
            if FAULTS.hook is not None:
                FAULTS.hook("supervisor")
            status, effects = partition.supervisor.handle(request)
            if FAULTS.hook is not None:
                FAULTS.hook("supervisor.applied")
        except Exception as exc:
            if is_refusal(exc):
                self.errors += 1
                cell.resume = (False, exc)
            else:
                state.rollback(saved)
                partition.supervisor.requests = requests
                partition.requests.insert(0, (request, cell))
                self._supervisor_crashed(partition, exc)
                return
        else:
            view = partition.supervisor.view()
            if view is not partition.view:
                partition.view = view
                for each in partition.cells:
                    _note_view(each, view)
            # The caller's hypercall completes before a target acts on its control message, as
            # in OpenHCL, where the target VP processes its wake reason later: a context load
            # that proves fatal ends the partition after the caller saw its status.
            cell.resume = (True, status)
            self.schedule(cell)
            for target, control in effects:
                target_cell = partition.cells[target]
                target_cell.journal += (J_DELIVER, control)
                target_cell.actor.deliver(control)
                self.schedule(target_cell)
        self.schedule(cell)
        if partition.requests or partition.operations:
            self._schedule_partition(partition)
        if self.hooks is not None:
            self.hooks.after_step(partition)

    def _run_operations(self, partition: PartitionCells) -> None:
        operations, partition.operations = partition.operations, []
        for operation, slot in operations:
            try:
                result = operation(partition)
            except Exception as exc:  # delivered to its caller (a snapshot that failed)
                self.errors += 1
                reply_error(slot, exc)
            else:
                reply(slot, result)

    # ---- crashes and restarts ----------------------------------------------------------------------

    def _failed(
        self, cell: VpCell, slot: ReplySlot | None, exc: Exception, *, retry: tuple[bool, Any] | None = None
    ) -> None:
        """A step of ``cell`` raised ``exc``: answer a refusal, or handle a crash."""
        self.errors += 1
        if is_refusal(exc):
            if isinstance(exc, PartitionFailed):  # a rule met a fatal condition (DOMAIN 7.2)
                partition = cell.partition
                if partition.failure is None:
                    self.fail_partition(partition, f"partition {partition.partition_id} {exc}")
                if slot is not None:
                    reply_error(slot, PartitionFailed(partition.failure))
            elif slot is not None:
                reply_error(slot, exc)
            return
        self._crash(cell, slot, exc, retry)

    def _crash(
        self, cell: VpCell, slot: ReplySlot | None, exc: Exception, retry: tuple[bool, Any] | None
    ) -> None:
        """Undo the crashed input, answer its caller and restart the VP (or fail the partition).

        ``retry`` is the supervisor's reply when the crash was in the resumption of a hypercall
        the supervisor had already answered: its partition-wide effect happened, so the
        hypercall is not undone but finished once the VP is back (same reply, same input).
        """
        self.crashes += 1
        partition = cell.partition
        index = cell.actor.state.index
        where = f"partition {partition.partition_id} vp {index}"
        if self.hooks is not None:
            self.hooks.crashed(where, exc)
        del cell.journal[-2:]  # the crashed input: it never happened
        try:
            actor, waiting = rebuild(
                cell.base,
                cell.base_view,
                cell.journal,
                index=index,
                config=partition.config,
                view=partition.supervisor.view,
            )
        except Exception as rebuild_error:
            reason = f"{where} crashed ({exc!r}) and could not be restarted: {rebuild_error}"
            if slot is not None:
                reply_error(slot, PartitionFailed(reason))
            self.fail_partition(partition, reason)
            return
        cell.actor = actor
        self._dirty.pop(cell, None)
        delay = partition.history.admit(self._now(), self._rng)
        if delay is None:
            policy = self.restart_policy
            reason = (
                f"{where} crashed ({exc!r}) and partition {partition.partition_id} exceeded its "
                f"restart intensity ({policy.max_restarts} restarts in {policy.period:g} s)"
            )
            if slot is not None:
                reply_error(slot, PartitionFailed(reason))
            self.fail_partition(partition, reason)
            return
        if retry is not None and waiting is not None and slot is not None:
            cell.pending, cell.resume = (waiting, slot), retry
        elif slot is not None:
            message = (
                f"{where} crashed running an input ({exc!r}): it had no effect; the VP restarts "
                "from its last committed state, retry the call"
            )
            error = ActorCrashed(
                message, partition_id=partition.partition_id, vp_index=index, step=self.steps
            )
            error.__cause__ = exc
            reply_error(slot, error)
        partition.restarts += 1
        self.restarts += 1
        self.restarting += 1
        cell.restarting = True
        cell.scheduled = True  # off the ready queue until the restart (see VpCell)
        self._after_backoff(cell, delay, lambda: self._restarted(cell))

    def _restarted(self, cell: VpCell) -> None:
        """The backoff is over: the VP serves its mailbox again."""
        self.restarting -= 1
        cell.restarting = False
        cell.scheduled = False
        partition = cell.partition
        if partition.stopped:
            return
        if cell.pending is None:
            cell.base = checkpoint(cell.actor)
            cell.base_view = partition.view
            cell.journal.clear()
        self._arm_window(cell)
        if cell.resume is not None or cell.mailbox or cell.actor.has_controls:
            self.schedule(cell)
        if partition.operations or partition.requests:
            self._schedule_partition(partition)

    def _supervisor_crashed(self, partition: PartitionCells, exc: Exception) -> None:
        """The partition supervisor's step crashed: one_for_all (RELIABILITY D1).

        Its state is already rolled back to before the request; the supervisor holds the
        partition-wide VSM state the crash may have corrupted, so every VP restarts with it from
        its last committed state (``_restart_all``), and the request is retried after the
        backoff. The restart counts once against the intensity, as in OTP.
        """
        self.crashes += 1
        self.errors += 1
        where = f"the supervisor of partition {partition.partition_id}"
        if self.hooks is not None:
            self.hooks.crashed(where, exc)
        delay = partition.history.admit(self._now(), self._rng)
        if delay is None:
            policy = self.restart_policy
            reason = (
                f"{where} crashed ({exc!r}) and exceeded "
                f"its restart intensity ({policy.max_restarts} restarts in {policy.period:g} s)"
            )
            self.fail_partition(partition, reason)
            return
        if not self._restart_all(partition, where, exc):
            return
        partition.restarts += 1
        self.restarts += 1
        self.restarting += 1
        partition.restarting = True

        def restarted() -> None:
            self.restarting -= 1
            partition.restarting = False
            if not partition.stopped:
                self._schedule_partition(partition)

        self._after_backoff(partition, delay, restarted)

    def _restart_all(self, partition: PartitionCells, where: str, exc: Exception) -> bool:
        """Restart every VP of ``partition`` from its last committed state; False if one could not be.

        The VPs are torn down in reverse order (the last one first) and started in order, each
        rebuilt from its checkpoint and journal: the same state, new actors. A VP waiting on the
        supervisor keeps its place (its rebuilt hypercall waits at the same request, for the
        same caller); a VP already restarting from a crash of its own restarts on its own.
        """
        cells = [cell for cell in partition.cells if not cell.restarting]
        rebuilt: list[tuple[VpCell, VpActor, Any]] = []
        for cell in reversed(cells):  # teardown: last started, first stopped
            try:
                actor, waiting = rebuild(
                    cell.base,
                    cell.base_view,
                    cell.journal,
                    index=cell.actor.state.index,
                    config=partition.config,
                    view=partition.supervisor.view,
                )
                if (cell.pending is None) != (waiting is None):
                    msg = "its journal does not leave the hypercall it waits on"
                    raise ReplayError(msg)
            except Exception as rebuild_error:
                vp = cell.actor.state.index
                self.fail_partition(
                    partition,
                    f"{where} crashed ({exc!r}) and vp {vp} could not be restarted: {rebuild_error}",
                )
                return False
            rebuilt.append((cell, actor, waiting))
        for cell, actor, waiting in reversed(rebuilt):  # start: VP 0 first
            cell.actor = actor
            if cell.pending is not None:
                old, slot = cell.pending
                old.close()
                cell.pending = (waiting, slot)
            else:
                cell.base = checkpoint(actor)
                cell.base_view = partition.view
                cell.journal.clear()
        return True

    def _after_backoff(self, key: VpCell | PartitionCells, delay: float, restart: Callable[[], None]) -> None:
        token = object()
        self._backoffs[key] = (token, restart)

        def due() -> None:
            entry = self._backoffs.get(key)
            if entry is not None and entry[0] is token:  # not ended early by end_backoffs
                del self._backoffs[key]
                restart()

        self.timers.call_at(self._now() + delay, due)

    def end_backoffs(self, partition: PartitionCells) -> bool:
        """Restart now what of ``partition`` waits for its backoff; False if nothing did.

        In-line execution (``run_now``) has no event loop to wait on, so it ends the backoff of a
        VP (or supervisor) it needs at once; the restart counts against the intensity all the same.
        """
        ended = False
        keys: list[VpCell | PartitionCells] = [partition, *partition.cells]
        for key in keys:
            entry = self._backoffs.pop(key, None)
            if entry is not None:
                entry[1]()
                ended = True
        return ended

    def _pause(self, cell: VpCell, delay: float) -> None:
        """Hold ``cell`` off the ready queue for ``delay`` seconds (a slow VP, in a simulation)."""
        cell.scheduled = True

        def resume() -> None:
            cell.scheduled = False
            if not cell.partition.stopped and not cell.restarting:
                self.schedule(cell)

        self.timers.call_at(self._now() + delay, resume)

    # ---- batch windows -----------------------------------------------------------------------------

    async def run_flusher(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit staged updates whose batch window (``batch_window`` seconds) has closed.

        Like a pass, a run of due commits yields to the loop once it has taken ``pass_budget``.
        """
        task_status.started()
        while True:
            await self._flusher_wakeup.wait()
            self._flusher_wakeup = anyio.Event()
            deadlines = self._deadlines
            clock = self.pass_clock
            started = clock()
            countdown = self.pass_check_every
            while deadlines:
                # Earliest deadline first: O(log n) per dirty cell, not a scan of all of them.
                deadline, _, cell = deadlines[0]
                now = self._now()
                if deadline > now:
                    await anyio.sleep(deadline - now)
                    started = clock()
                    continue
                heapq.heappop(deadlines)
                if (
                    self._dirty.pop(cell, None) is None
                    or cell.partition.stopped
                    or cell.pending is not None  # cell.busy, inlined (hot path)
                    or cell.resume is not None
                    or cell.restarting
                ):
                    continue  # a half-done hypercall or a restart re-arms the window when done
                if self.listeners.commits:
                    self.commit_vp(cell)  # with its events
                    self.window_commits += 1
                    continue
                journal = cell.journal  # commit_vp, inlined (one per action in a fleet)
                journal.append(J_COMMIT)
                journal.append(None)
                try:
                    cell.actor.state.commit_all()
                    if self.check_invariants:
                        check_vp_invariants(cell.actor.state)
                except Exception as exc:
                    self._failed(cell, None, exc)
                self.window_commits += 1
                countdown -= 1
                if not countdown:
                    countdown = self.pass_check_every
                    if clock() - started > self.pass_budget:
                        self.cut_passes += 1
                        await anyio.lowlevel.checkpoint()
                        started = clock()

    def commit_vp(self, cell: VpCell) -> bool:
        """Commit every VTL of ``cell`` as one journaled input; False if that crashed."""
        journal = cell.journal
        journal.append(J_COMMIT)
        journal.append(None)
        st = cell.actor.state
        before = marks(st) if self.listeners.commits else None
        try:
            st.commit_all()
            if self.check_invariants:
                check_vp_invariants(st)
        except Exception as exc:
            self._failed(cell, None, exc)
            return False
        if before is not None:
            report(self.listeners, cell.partition.partition_id, st, before)
        return True

    # ---- shutdown ----------------------------------------------------------------------------------

    def fail_partition(self, partition: PartitionCells, reason: str) -> None:
        """End ``partition``: OpenHCL aborts on a fatal error, so every VP of it is lost (7.2).

        Every VP raises ``PartitionFailed(reason)`` from then on, from ``execute`` and from
        inspections; callers already waiting (queued messages, hypercalls parked on the
        supervisor) get it now. ``reason`` is kept as ``Partition.failure``; a second call (or
        one on a stopped partition) changes nothing. Other partitions are untouched. The
        supervisor calls it too, when a partition exceeds its restart intensity.
        """
        if partition.stopped:
            return
        partition.failure = reason
        self.failed_partitions += 1
        if self.listeners.emit is not None:
            self.listeners.emit(FailureEvent(partition=partition.partition_id, reason=reason))
        for cell in partition.cells:
            cell.actor.fail(reason)
        self.stop_partition(partition, lambda: PartitionFailed(reason))

    def stop_partition(self, partition: PartitionCells, error: Callable[[], BaseException]) -> None:
        """Close every mailbox of ``partition`` and fail whatever was waiting with ``error()``."""
        partition.stopped = True
        for cell in partition.cells:
            cell.mailbox.closed = True
            for _, _, slot in cell.mailbox.drain():
                reply_error(slot, error())
            if cell.pending is not None:
                generator, slot = cell.pending
                cell.pending = None
                cell.resume = None
                generator.close()
                reply_error(slot, error())
            self._dirty.pop(cell, None)
        for _, slot in partition.operations:
            reply_error(slot, error())
        partition.operations.clear()
        partition.requests.clear()


def _note_view(cell: VpCell, view: Any) -> None:
    """Journal that ``cell``'s next inputs see ``view`` (consecutive views collapse: bounded)."""
    journal = cell.journal
    if not journal:
        cell.base_view = view
    elif journal[-2] == J_VIEW:
        journal[-1] = view
    else:
        journal.append(J_VIEW)
        journal.append(view)


def _loop_clock() -> Callable[[], float]:
    """The running event loop's monotonic clock, in seconds."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.current_time
    import asyncio

    return asyncio.get_running_loop().time
