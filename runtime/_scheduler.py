"""The batching scheduler: runs actors' messages in passes and decides when staged updates commit.

Actors have no task of their own (an idle VP costs only its state). A VP or supervisor with
mail sits on the ready queue; the scheduler's runner task takes a snapshot of that queue per
pass and runs one message of each actor in it (trio's batch discipline: work that becomes ready
during a pass waits for the next one, so no actor starves). A pass stops early, leaving the
rest of its snapshot first in line, once it has run ``pass_budget`` seconds: no pass holds the
event loop for long, so the host's own tasks stay responsive.

Commit points (the rules are in ``actors``; the scheduler only decides *when*):

* VTL entry: a VP commits a VTL's staged updates before that VTL runs its next action;
* inspection: ``vp.registers`` / ``vp.tdx_state`` / ``vp.sint0_message`` commit first;
* a batch window closes: ``batch_max_updates`` staged updates of one (VP, VTL), or
  ``batch_window`` seconds after the first staged update (``_windows``, the flusher task).

``BatchingScheduler`` is built in layers, one module each: ``_windows`` (batch windows and the
flusher), ``_failures`` (crashes, restarts, failed and stopped partitions), ``_steps`` (one
input of a VP or supervisor, journaled) and this module (posting, the passes, in-line passes,
hooks and statistics).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec

from ._cells import PartitionCells, VpCell
from ._events import Listeners
from ._steps import StepHooks, Steps
from ._supervision import RestartPolicy, Timers

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

    from ._mailbox import Backend, ReplySlot

__all__ = ("BatchingScheduler", "PartitionCells", "SchedulerStatistics", "StepHooks", "VpCell")

_ACTION: Final = 0
_INSPECT: Final = 1
#: Steps between two looks at the clock within a pass (``pass_check_every``'s default).
_CLOCK_EVERY: Final = 16


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


class BatchingScheduler(Steps):
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
        self._dirty: dict[VpCell, bool] = {}
        self._opened: list[VpCell] = []
        self._opened_at = 0.0
        self._deadlines: list[tuple[float, int, list[VpCell]]] = []
        self._deadline_seq = itertools.count()
        self._flusher_wakeup = anyio.Event()
        self._timed_windows = False
        self._runner_parked = True
        # When the runner next looks at the loop's clock for due windows (pass_clock time).
        self._due_check = 0.0
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
            if self._opened:
                self._open_windows()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The runner task: drain the ready queue pass by pass, park when it is empty."""
        task_status.started()
        wakeup = self._wakeup
        while True:
            if not self._ready:
                self._runner_parked = True
                if self._deadlines:
                    self._flusher_wakeup.set()  # windows to close while the runner waits
                await wakeup.wait()
                self._runner_parked = False
                continue
            batch, self._ready = self._ready, deque()
            self.passes += 1
            clock = self.pass_clock
            steps = self.steps
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
            if self._opened:
                self._open_windows()
            ended = clock()
            if self._deadlines and self._timed_windows and ended >= self._due_check:
                # Due windows are closed here (``_close_due``), in the rest of the pass's
                # budget but at least as many as it had steps; the loop's clock is read at most
                # once per budget.
                self._due_check = ended + self.pass_budget
                self._close_due(started + self.pass_budget, self.steps - steps)
                ended = clock()
            elapsed = ended - started
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


def _loop_clock() -> Callable[[], float]:
    """The running event loop's monotonic clock, in seconds."""
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.current_time
    import asyncio

    return asyncio.get_running_loop().time
