"""Batch windows: staged register updates that commit on wall time (the runner, or the flusher task).

A VP's staged updates commit at the latest ``batch_window`` seconds after the first of them
(``PartitionConfig.batch_window``). The windows a pass opens share one deadline (a heap of
deadlines, earliest first); a busy runner closes the due ones after its passes, the flusher
task while the runner waits. ``BatchWindows`` is the base of ``BatchingScheduler``.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Final

import anyio

from actors import check_vp_invariants

from ._events import marks, report
from ._journal import J_COMMIT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anyio.abc import TaskStatus

    from actors import VpState

    from ._cells import VpCell
    from ._events import Listeners
    from ._mailbox import ReplySlot

__all__ = ("BatchWindows",)

#: The journal entry of a commit (two items, added in one list operation).
_COMMIT: Final = (J_COMMIT, None)


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
    #: VPs with a window open (always True: a dict, for ``pop(cell, False)``).
    _dirty: dict[VpCell, bool]
    #: VPs whose window a step of the current pass opened, and when the first of them did.
    _opened: list[VpCell]
    _opened_at: float
    # Batch-window deadlines, a heap of (deadline, seq, cells) with one entry per pass (and
    # window length): a cell that has left ``_dirty`` since (stopped, crashed) is skipped.
    _deadlines: list[tuple[float, int, list[VpCell]]]
    _deadline_seq: Iterator[int]
    _flusher_wakeup: anyio.Event
    #: True once the flusher task runs (a real clock): windows close on time at all.
    _timed_windows: bool
    #: True while the runner task waits for work: then the flusher closes the windows.
    _runner_parked: bool

    def _failed(
        self, cell: VpCell, slot: ReplySlot | None, exc: Exception, *, retry: tuple[bool, Any] | None = None
    ) -> None:
        """A step or commit of ``cell`` raised ``exc`` (``FailureHandling._failed``)."""
        raise NotImplementedError

    def _arm_window(self, cell: VpCell) -> None:
        """Open ``cell``'s window now if it has staged updates (outside a pass: a restart)."""
        if cell not in self._dirty:
            vtls = cell.actor.state.vtls
            if vtls[0].staged_updates or vtls[1].staged_updates:
                self._dirty[cell] = True
                self._schedule_windows(self._now() + cell.batch_window, [cell])

    def _open_windows(self) -> None:
        """Give the windows the last pass opened (``_opened``) their deadlines: one per pass.

        A step only lists the VP whose window it opened, noting the loop's time for the first
        of the pass (``_opened_at``); this runs once after the pass. The deadline counts from
        that first opening, so no window closes later than ``batch_window`` after its VP's
        first staged update (later ones of the same pass close up to a pass earlier).
        """
        opened, self._opened = self._opened, []
        opened_at = self._opened_at
        window = opened[0].batch_window
        for cell in opened:
            if cell.batch_window != window:  # partitions with other windows
                by_window: dict[float, list[VpCell]] = {}
                for each in opened:
                    by_window.setdefault(each.batch_window, []).append(each)
                for each_window, cells in by_window.items():
                    self._schedule_windows(opened_at + each_window, cells)
                return
        self._schedule_windows(opened_at + window, opened)

    def _schedule_windows(self, deadline: float, cells: list[VpCell]) -> None:
        heapq.heappush(self._deadlines, (deadline, next(self._deadline_seq), cells))
        if self._runner_parked:  # else the runner closes them itself (``_close_due``)
            self._flusher_wakeup.set()

    def _close_due(self, until: float, minimum: int) -> None:
        """The runner, after a pass: commit the windows due now, until ``pass_clock`` passes ``until``.

        While the runner has work, it closes the windows itself after a pass, in what is left of
        the pass's budget, but at least ``minimum`` of them (as many as the pass had steps, so
        the windows keep up with the passes that open them): no flusher wake-up per deadline.
        What is left waits for the next pass, or for the flusher once the runner parks.
        """
        deadlines = self._deadlines
        now = self._now()
        while deadlines and deadlines[0][0] <= now:
            deadline, seq, cells = heapq.heappop(deadlines)
            rest, done = self._close(cells, until, minimum)
            minimum -= done
            if rest:
                heapq.heappush(deadlines, (deadline, seq, rest))
                return
            if deadlines and minimum <= 0 and self.pass_clock() > until:
                self.cut_passes += 1
                return

    def _close(self, cells: list[VpCell], until: float, minimum: int) -> tuple[list[VpCell] | None, int]:
        """Commit the open windows of ``cells``: (the rest, past ``until``, or None; commits made).

        The clock (``pass_clock``) is read every ``pass_check_every`` commits, and only once
        ``minimum`` commits are made. A VP committed at a commit point since its window opened
        has nothing left to commit; one in the middle of a hypercall or a restart has its window
        opened again when that is done.
        """
        dirty = self._dirty
        clock = self.pass_clock
        countdown = self.pass_check_every
        done = 0
        for index, cell in enumerate(cells):
            if (
                not dirty.pop(cell, False)  # gone: a stopped partition, a crash
                or cell.pending is not None  # cell.busy, inlined (hot path)
                or cell.resume is not None
                or cell.restarting
                or cell.partition.stopped
            ):
                continue
            st = cell.actor.state
            vtl0, vtl1 = st.vtls
            if not (vtl0.staged_updates or vtl1.staged_updates):
                continue  # committed at a commit point since the window opened
            self.commit_vp(cell)
            done += 1
            countdown -= 1
            if not countdown:
                countdown = self.pass_check_every
                if done >= minimum and clock() > until and index + 1 < len(cells):
                    self.cut_passes += 1
                    self.window_commits += done
                    return cells[index + 1 :], done
        self.window_commits += done
        return None, done

    async def run_flusher(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit staged updates whose batch window (``batch_window`` seconds) has closed, while
        the runner is parked (a busy runner closes them after its passes: ``_close_due``).

        Like a pass, a run of due commits yields to the loop once it has taken ``pass_budget``.
        """
        self._timed_windows = True
        task_status.started()
        deadlines = self._deadlines
        clock = self.pass_clock
        while True:
            await self._flusher_wakeup.wait()
            self._flusher_wakeup = anyio.Event()
            started = clock()
            while deadlines and self._runner_parked:
                # Earliest deadline first: O(log n) per pass that opened windows.
                deadline = deadlines[0][0]
                now = self._now()
                if deadline > now:
                    await anyio.sleep(deadline - now)
                    started = clock()
                    continue  # (the runner may have woken up meanwhile: then it closes them)
                deadline, seq, cells = heapq.heappop(deadlines)
                rest, _ = self._close(cells, started + self.pass_budget, 0)
                if rest:  # (``_close`` counted the cut)
                    heapq.heappush(deadlines, (deadline, seq, rest))
                elif deadlines and clock() - started > self.pass_budget:
                    self.cut_passes += 1
                else:
                    continue
                await anyio.lowlevel.checkpoint()
                started = clock()

    def commit_vp(self, cell: VpCell) -> bool:
        """Commit every VTL of ``cell`` as one journaled input, with its events; False if that crashed."""
        st = cell.actor.state
        before = marks(st) if self.listeners.commits else None
        if not self.commit_journaled(cell, st):
            return False
        if before is not None:
            report(self.listeners, cell.partition.partition_id, st, before)
        return True

    def commit_journaled(self, cell: VpCell, st: VpState) -> bool:
        """Commit every VTL of ``cell`` (state ``st``) as one journaled input, telling no
        listener (a step's observer reports it with the step); False if that crashed."""
        cell.journal += _COMMIT
        try:
            st.commit_all()
            if self.check_invariants:
                check_vp_invariants(st)
        except Exception as exc:
            self._failed(cell, None, exc)
            return False
        return True
