"""Crashes, restarts and the end of a partition: what the scheduler does when a step fails.

A step that raises a refusal (a ``SimulationError`` a rule raises on purpose) answers its caller
with it; any other exception is a crash: the VP is rebuilt in its last committed state from its
checkpoint and journal (``_journal``), the caller gets ``ActorCrashed`` (or, for a hypercall the
supervisor had already answered, the input is retried), and the VP restarts after a backoff
(``_supervision``), unless the partition's restart intensity is exceeded: then the partition
fails (``fail_partition``), as it does on a fatal condition (DOMAIN 7.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors import ActorCrashed, PartitionFailed

from ._events import FailureEvent
from ._journal import ReplayError, checkpoint, is_refusal, rebuild
from ._mailbox import reply_error
from ._windows import BatchWindows

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from actors import VpActor

    from ._cells import PartitionCells, VpCell
    from ._mailbox import ReplySlot
    from ._steps import StepHooks
    from ._supervision import RestartPolicy, Timers

__all__ = ("FailureHandling",)


class FailureHandling(BatchWindows):
    """Failure, restart and stop handling of ``BatchingScheduler`` (its state is set there)."""

    restart_policy: RestartPolicy
    timers: Timers
    steps: int
    errors: int
    crashes: int
    restarts: int
    restarting: int
    failed_partitions: int
    _hooks: StepHooks | None
    _rng: random.Random  # backoff jitter
    # Restarts waiting for their backoff: cell or partition -> (token, restart).
    _backoffs: dict[VpCell | PartitionCells, tuple[object, Callable[[], None]]]

    def schedule(self, cell: VpCell) -> None:
        """Put a VP cell on the ready queue (``BatchingScheduler.schedule``)."""
        raise NotImplementedError

    def _schedule_partition(self, partition: PartitionCells) -> None:
        """Put a supervisor on the ready queue (``BatchingScheduler._schedule_partition``)."""
        raise NotImplementedError

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
        if self._hooks is not None:
            self._hooks.crashed(where, exc)
        del cell.journal[-2:]  # the crashed input: it never happened
        try:
            actor, waiting = _rebuild(cell)
        except Exception as rebuild_error:
            reason = f"{where} crashed ({exc!r}) and could not be restarted: {rebuild_error}"
            self._give_up(partition, slot, reason)
            return
        cell.actor = actor
        self._dirty.pop(cell, None)
        delay = partition.history.admit(self._now(), self._rng)
        if delay is None:
            reason = f"{where} crashed ({exc!r}) and partition {partition.partition_id} {self._exceeded()}"
            self._give_up(partition, slot, reason)
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

    def _give_up(self, partition: PartitionCells, slot: ReplySlot | None, reason: str) -> None:
        """A crashed VP cannot restart: its caller gets ``PartitionFailed``, and so does the partition."""
        if slot is not None:
            reply_error(slot, PartitionFailed(reason))
        self.fail_partition(partition, reason)

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
        if self._hooks is not None:
            self._hooks.crashed(where, exc)
        delay = partition.history.admit(self._now(), self._rng)
        if delay is None:
            self.fail_partition(partition, f"{where} crashed ({exc!r}) and {self._exceeded()}")
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
                actor, waiting = _rebuild(cell)
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

    def _exceeded(self) -> str:
        """The end of a failure reason: which restart intensity was exceeded."""
        policy = self.restart_policy
        return f"exceeded its restart intensity ({policy.max_restarts} restarts in {policy.period:g} s)"

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


def _rebuild(cell: VpCell) -> tuple[VpActor, Any]:
    """``cell``'s VP rebuilt from its checkpoint and journal, and the hypercall it leaves waiting."""
    partition = cell.partition
    return rebuild(
        cell.base,
        cell.base_view,
        cell.journal,
        index=cell.actor.state.index,
        config=partition.config,
        view=partition.supervisor.view,
    )
