"""The steps: one input of a VP (an action, an inspection, a resumption, control messages) or of
a partition's supervisor (one hypercall request, or a partition operation), journaled and run.

Every input of a VP is journaled (``_journal``) before it runs; a step that raises goes to
``FailureHandling._failed``. Hypercalls that change partition-wide state are generators: the VP
parks on its supervisor's reply (``_drive``) and resumes in a later step.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, Final, Protocol

from actors import FAULTS, check_vp_invariants

from ._events import marks, report, switch_marks
from ._failures import FailureHandling
from ._journal import J_CONTROLS, J_DELIVER, J_RESUME, J_VIEW, JOURNAL_LIMIT, checkpoint, is_refusal
from ._mailbox import reply, reply_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors import VpState

    from ._cells import PartitionCells, VpCell
    from ._mailbox import ReplySlot

__all__ = ("StepHooks", "Steps")

_ACTION: Final = 0
_GENERATOR: Final = types.GeneratorType


class StepHooks(Protocol):
    def before_vp_step(self, cell: VpCell) -> float:
        """Seconds the VP's step waits first (a slow vCPU), or 0 to run it now."""
        ...

    def after_step(self, partition: PartitionCells) -> None:
        """A step of one of ``partition``'s actors ran (check its invariants here)."""
        ...

    def crashed(self, where: str, error: BaseException) -> None:
        """A step of the actor ``where`` crashed with ``error`` (before it is undone)."""
        ...


class Steps(FailureHandling):
    """The VP and supervisor steps of ``BatchingScheduler`` (its state is set there)."""

    #: The step of a VP cell without listeners: ``_step_vp``, or ``_hooked_step_vp``.
    _inner_step: Callable[[VpCell], None]

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
        """One input of ``cell``: a hypercall's resumption, else a message, else control messages."""
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
                elif not slot.done():  # reply(slot, result), inlined (hot path)
                    slot.set_result(result)
        elif actor.has_controls:
            journal += (J_CONTROLS, None)
            try:
                actor.apply_controls()  # woken by the supervisor
                if self.check_invariants:
                    check_vp_invariants(actor.state)
            except Exception as exc:
                self._failed(cell, None, exc)
        # After the input. (A restarting cell is marked scheduled and busy: schedule and the
        # flusher skip it; a crash may have replaced the actor.)
        if cell not in self._dirty:
            st = cell.actor.state
            vtls = st.vtls
            if (vtls[0].staged_updates or vtls[1].staged_updates) and not self._commit_unbatched(cell, st):
                # A window opens: listed for the end of the pass (``_open_windows``), which
                # gives the pass's windows one deadline.
                self._dirty[cell] = True
                opened = self._opened
                if not opened:
                    self._opened_at = self._now()
                opened.append(cell)
        if cell.pending is None:
            if len(journal) >= JOURNAL_LIMIT:
                cell.base = checkpoint(cell.actor)
                cell.base_view = cell.partition.view
                journal.clear()
            # Control messages that reached this VP while it waited on its own hypercall (its own
            # EnableVpVtl) are applied by its next action or inspection, as any VP's are: a step
            # of their own would race with the caller's resumption (trio orders a batch at
            # random), so the commit they make would land on this action or the next by chance.
            if cell.mailbox.queue:
                self.schedule(cell)

    def _commit_unbatched(self, cell: VpCell, st: VpState) -> bool:
        """After a step: commit at once what needs no window (``VpState.nothing_to_batch``).

        Journaled as a window commit is; False (nothing done) in the middle of a hypercall or a
        restart, or if an update waits for a window.
        """
        if cell.pending is not None or cell.restarting or not st.nothing_to_batch():
            return False
        self.commit_journaled(cell, st)  # (a crash is handled there, as a window commit's)
        return True

    def _step_vp_observed(self, cell: VpCell) -> None:
        """The VP's step (hooked or not), then tell the listeners what it changed on the VP."""
        st = cell.actor.state
        pick = marks if self.listeners.commits else switch_marks
        before = pick(st)
        self._inner_step(cell)
        if pick(st) != before:
            report(self.listeners, cell.partition.partition_id, st, before)

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
        if self._hooks is not None:
            self._hooks.after_step(partition)

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
