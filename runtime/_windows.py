"""Batch windows: staged register updates that commit on wall time, and the flusher task.

A VP's staged updates of a VTL commit at the latest ``batch_window`` seconds after the first of
them (``PartitionConfig.batch_window``): the flusher task commits them when that deadline passes
(a heap of deadlines, earliest first). ``BatchWindows`` is the base of ``BatchingScheduler``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

import anyio

from actors import check_vp_invariants

from ._events import marks, report
from ._journal import J_COMMIT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anyio.abc import TaskStatus

    from ._cells import VpCell
    from ._events import Listeners
    from ._mailbox import ReplySlot

__all__ = ("BatchWindows",)


class BatchWindows:
    """The batch windows of a scheduler's VPs (their state is set by ``BatchingScheduler``)."""

    check_invariants: bool
    #: Times passes and flusher runs (wall clock; a simulation passes a deterministic one).
    pass_clock: Callable[[], float]
    pass_budget: float
    #: Steps between two looks at ``pass_clock`` within a pass; shorter passes never look.
    pass_check_every: int
    listeners: Listeners
    window_commits: int
    cut_passes: int
    #: The event loop's clock (what anyio.current_time and anyio.sleep use).
    _now: Callable[[], float]
    #: VPs with staged updates and a window open: cell -> when the window opened.
    _dirty: dict[VpCell, float]
    # Batch-window deadlines of the cells in ``_dirty``, as a heap of (deadline, seq, cell);
    # an entry whose cell has left ``_dirty`` (a stopped partition) is skipped when popped.
    _deadlines: list[tuple[float, int, VpCell]]
    _deadline_seq: Iterator[int]
    _flusher_wakeup: anyio.Event

    def _failed(
        self, cell: VpCell, slot: ReplySlot | None, exc: Exception, *, retry: tuple[bool, Any] | None = None
    ) -> None:
        """A step or commit of ``cell`` raised ``exc`` (``FailureHandling._failed``)."""
        raise NotImplementedError

    def _arm_window(self, cell: VpCell) -> None:
        if cell not in self._dirty:
            vtls = cell.actor.state.vtls
            if vtls[0].staged_updates or vtls[1].staged_updates:
                now = self._dirty[cell] = self._now()
                deadline = now + cell.partition.config.batch_window
                heapq.heappush(self._deadlines, (deadline, next(self._deadline_seq), cell))
                self._flusher_wakeup.set()

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
