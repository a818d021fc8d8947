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
  the scheduler's own step runs at once (apply control messages, commit at VTL entry, the rule,
  the invariant checks), without the mailbox, the reply slot or the event-loop round trip. A
  hypercall that needs the partition supervisor has its requests handled in the same call, one
  supervisor step each; control messages they send to another idle VP are applied at once (the
  runner would apply them in its next pass, before that VP could run or be inspected). Meant for
  virtual-clock runs, whose latencies are modelled, and for Ray shards running a whole fleet's
  programs inside one process.

In-line execution needs the VP idle: nothing in its mailbox, no hypercall of its own waiting for
the supervisor, and nothing queued at the supervisor. It never yields to the event loop, so a
long program should call ``await Pacer.pause()`` when ``Pacer.due()`` (every ``slice_s`` of wall
time) to let other tasks run.
"""

from __future__ import annotations

import time
import types
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, cast

import anyio
import anyio.lowlevel

from actors import PartitionFailed, check_vp_invariants
from protocol import Action, Outcome

if TYPE_CHECKING:
    from ._host import Vp
    from ._scheduler import BatchingScheduler, PartitionCells, VpCell

__all__ = ("GuestProgram", "Pacer", "execute_inline", "run_driven", "run_inline")

T = TypeVar("T")
R = TypeVar("R")

#: A guest program over targets of type T returning R: yields (target, action), receives outcomes.
GuestProgram: TypeAlias = Generator[tuple[T, Action], Outcome, R]

_GENERATOR: Final = types.GeneratorType


def execute_inline(vp: Vp, action: Action) -> Outcome:
    """The guest on ``vp`` performs ``action`` now, in the caller (see the module docstring).

    Raises:
        RuntimeError: the VP or its supervisor has work queued from the mailbox path.
        anyio.ClosedResourceError: the partition or runtime is stopped.
        PartitionFailed: a fatal condition ended the partition (now, or before): as on the
            runner, the whole partition is failed (``BatchingScheduler.fail_partition``).
        Exception: whatever ``vp.execute(action)`` would raise (``VpNotRunning``, ...).
    """
    outcome: Outcome = step_inline(vp._scheduler, vp._cell, action)
    return outcome


def step_inline(scheduler: BatchingScheduler, cell: VpCell, action: object) -> Any:
    """One runner step of ``action`` on ``cell``, done in the caller (``execute_inline``'s body)."""
    mailbox = cell.mailbox
    if mailbox.closed:
        msg = f"{cell} is stopped"
        raise anyio.ClosedResourceError(msg)
    if mailbox or cell.pending is not None:
        msg = f"{cell}: in-line execution needs an idle VP, but it has messages in flight"
        raise RuntimeError(msg)
    if not mailbox.high_water:
        mailbox.high_water = 1  # one message of depth 1, as when driven through the mailbox
    scheduler.steps += 1
    woken: list[VpCell] = []
    try:
        result = cell.actor.execute(action)
        if type(result) is _GENERATOR:
            result = _drive(scheduler, cell, result, woken)
        elif scheduler.check_invariants:
            check_vp_invariants(cell.actor.state)
    except PartitionFailed as exc:
        raise _fatal(scheduler, cell.partition, exc) from None
    except Exception:
        scheduler.errors += 1
        raise
    finally:
        scheduler._after_step(cell)
    # The caller's hypercall completes before its targets act on their control messages, as on
    # the runner: a context load that proves fatal ends the partition after the caller's result.
    for target in woken:
        scheduler.steps += 1
        try:
            target.actor.apply_controls()
        except PartitionFailed as exc:
            _fatal(scheduler, target.partition, exc)
            continue
        if scheduler.check_invariants:
            check_vp_invariants(target.actor.state)
        scheduler._after_step(target)
    return result


def _fatal(scheduler: BatchingScheduler, partition: PartitionCells, exc: PartitionFailed) -> PartitionFailed:
    """End ``partition`` as the runner does (``fail_partition``); the error its caller gets."""
    scheduler._fatal(partition, exc, None)
    return PartitionFailed(partition.failure)


def _drive(scheduler: BatchingScheduler, cell: VpCell, generator: Any, woken: list[VpCell]) -> Any:
    """The runner's ``_drive`` and ``_step_partition`` in one: a hypercall generator to its result.

    Idle VPs the supervisor sends control messages to are appended to ``woken``; the caller
    applies their messages once this hypercall has its result.
    """
    partition = cell.partition
    ok, value = True, cast("Any", None)
    while True:
        try:
            request = generator.send(value) if ok else generator.throw(value)
        except StopIteration as stop:
            if scheduler.check_invariants:
                check_vp_invariants(cell.actor.state)
            return stop.value
        if scheduler.check_invariants:
            try:
                check_vp_invariants(cell.actor.state)
            except Exception:
                generator.close()
                raise
        if partition.requests:
            generator.close()  # the supervisor serves requests in arrival order: others came first
            msg = f"{cell}: in-line execution needs an idle supervisor, but it has requests queued"
            raise RuntimeError(msg)
        scheduler.steps += 1
        try:
            status, effects = partition.supervisor.handle(request)
        except Exception as exc:
            scheduler.errors += 1
            ok, value = False, exc
            continue
        for target, control in effects:
            target_cell = partition.cells[target]
            target_cell.actor.deliver(control)
            if target_cell is cell:
                continue  # applied by this VP's next action or inspection, as on the runner
            if not target_cell.mailbox and target_cell.pending is None:
                woken.append(target_cell)
            else:
                scheduler.schedule(target_cell)
        ok, value = True, status


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
