"""Guest programs: sans-IO generators of guest actions, and running them in-line in the scheduler.

A *guest program* is a generator that yields ``(target, action)`` pairs and receives each
action's outcome back from ``yield``; what it returns is its result. It does no I/O and never
awaits, so whoever runs it decides how each action reaches its VP::

    def enable_and_call(vp):
        result = yield vp, EnablePartitionVtl(target_vtl=Vtl.VTL1)
        ...
        switched = yield vp, VtlCall()
        return switched

Two ways to run a program whose targets are ``Vp`` handles, with the same outcomes, the same
guest-visible state and the same counters:

* ``await run_driven(program)``: each action through ``vp.execute`` (the VP's mailbox, a
  scheduler pass, the reply slot). This is the path a real-clock experiment measures.
* ``run_inline(program)``: each action through ``execute_inline``, synchronously in the caller:
  the action is posted to the VP's mailbox as ``vp.execute`` posts it, and the scheduler's own
  passes run at once (``BatchingScheduler.run_now``) until nothing is ready: the VP's step
  (control messages, commit at VTL entry, the rule, the invariant checks), the supervisor's step
  for a partition-wide hypercall, the steps that apply its control messages to other VPs, in the
  order the runner task would run them. There is no await, no reply future and no event-loop
  round trip. Meant for virtual-clock runs, whose latencies are modelled, and for Ray shards
  running a whole fleet's programs inside one process.

A crash inside the simulator is handled as on the mailbox path (the caller gets the retriable
``ActorCrashed``, the VP restarts from its last committed state), except that in-line execution
does not wait for the restart's backoff: the next in-line action on that partition ends it.

In-line execution never yields to the event loop, so a long program should call
``await Pacer.pause()`` when ``Pacer.due()`` (every ``slice_s`` of wall time) to let other tasks
(the runner among them) run. Anything already queued for the VP by the mailbox path runs first.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, final

import anyio
import anyio.lowlevel

from protocol import Action, Outcome

from ._handles import Vp, check_call

if TYPE_CHECKING:
    from ._scheduler import BatchingScheduler, VpCell

__all__ = ("GuestProgram", "Pacer", "execute_inline", "run_driven", "run_inline")

T = TypeVar("T")
R = TypeVar("R")

#: A guest program over targets of type T returning R: yields (target, action), receives outcomes.
GuestProgram: TypeAlias = Generator[tuple[T, Action], Outcome, R]


def execute_inline(vp: Vp, action: Action) -> Outcome:
    """The guest on ``vp`` performs ``action`` now, in the caller (see the module docstring).

    Raises:
        Exception: whatever ``vp.execute(action)`` would raise (``VpNotRunning``,
            ``PartitionFailed``, ``Busy``, ``anyio.ClosedResourceError``, the ``TypeError`` or
            ``ValueError`` of a bad action, the ``RuntimeError`` of another thread ...).
    """
    check_call(vp, action)
    outcome: Outcome = step_inline(vp._scheduler, vp._cell, action)
    return outcome


@final
class _Slot:
    """A reply slot filled during ``run_now``: nobody awaits it, the caller reads it at once."""

    __slots__ = ("_done", "error", "value")

    def __init__(self) -> None:
        self._done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any, /) -> None:
        self._done = True
        self.value = value

    def set_exception(self, error: BaseException, /) -> None:
        self._done = True
        self.error = error

    def __await__(self) -> Generator[Any, None, Any]:  # pragma: no cover - never awaited
        msg = "an in-line reply slot is read, not awaited"
        raise RuntimeError(msg)


def step_inline(scheduler: BatchingScheduler, cell: VpCell, action: object) -> Any:
    """Post ``action`` to ``cell`` and run the scheduler's passes now (``execute_inline``'s body).

    The message goes through the VP's mailbox (behind anything already queued there) and every
    step it needs (the VP's, the supervisor's, the targets' control messages) is the runner's
    own step, run in the caller by ``BatchingScheduler.run_now``.
    """
    slot = _Slot()
    scheduler.post_action(cell, action, slot)
    scheduler.run_now()
    # A crash inside the simulator leaves the VP (or the supervisor) restarting after a backoff
    # on the loop's clock, which nothing here can wait for: end it now. Each restart was
    # admitted against the restart intensity, so this loop ends (at worst the partition fails).
    while not slot._done and scheduler.end_backoffs(cell.partition):
        scheduler.run_now()
    if not slot._done:  # a step raised out of the scheduler instead of into the slot
        msg = f"{cell}: the action did not complete in-line"
        raise RuntimeError(msg)
    if slot.error is not None:
        raise slot.error
    return slot.value


def run_inline(program: GuestProgram[Vp, R]) -> R:
    """Run ``program`` to its end with ``execute_inline``; return what it returns.

    An exception raised by an action is thrown into the program at its ``yield``.
    """
    try:
        item = next(program)
        while True:
            vp, action = item
            try:
                outcome = execute_inline(vp, action)
            except Exception as exc:
                item = program.throw(exc)
                continue
            item = program.send(outcome)
    except StopIteration as stop:
        result: R = stop.value
        return result


async def run_driven(program: GuestProgram[Vp, R]) -> R:
    """Run ``program`` to its end with ``await vp.execute`` per action; return what it returns.

    An exception raised by an action is thrown into the program at its ``yield``.
    """
    try:
        item = next(program)
        while True:
            vp, action = item
            try:
                outcome = await vp.execute(action)
            except Exception as exc:
                item = program.throw(exc)
                continue
            item = program.send(outcome)
    except StopIteration as stop:
        result: R = stop.value
        return result


class Pacer:
    """Says when an in-line loop has held the event loop for ``slice_s`` and lets it breathe."""

    __slots__ = ("_deadline", "_slice_ns")

    def __init__(self, slice_s: float = 0.001) -> None:
        self._slice_ns = round(slice_s * 1e9)
        self._deadline = time.perf_counter_ns() + self._slice_ns

    def due(self) -> bool:
        """True once the current slice of wall time is used up."""
        return time.perf_counter_ns() >= self._deadline

    async def pause(self) -> None:
        """Yield to the event loop (a checkpoint), then start a new slice."""
        await anyio.lowlevel.checkpoint()
        self._deadline = time.perf_counter_ns() + self._slice_ns
