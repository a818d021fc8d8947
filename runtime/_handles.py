"""The handles users hold: ``Vp`` and ``Partition`` (cheap objects over the scheduler's cells).

A handle checks its call at the boundary (the thread, the action's fields: ``protocol._validate``),
posts it to the scheduler and waits for the reply; it owns no task and no state of its own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import msgspec

from actors import (
    ActorCrashed,
    PartitionConfig,
    SupervisorStatistics,
    TdxL2State,
    VpActor,
    VpStatistics,
    VtlControl,
)
from actors._registers import PRIVATE_RESET, SHARED_RESET
from protocol import Action, HvRegisterName as Reg, InterceptMessage, Outcome, Vtl
from protocol._validate import ACTION_VALIDATORS, IMMUTABLE_ACTIONS

from ._snapshot import encode_partition

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._cells import PartitionCells, VpCell
    from ._scheduler import BatchingScheduler

__all__ = ("Partition", "PartitionStatistics", "Vp", "check_call", "wrong_thread")

T = TypeVar("T")


class PartitionStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one partition: its supervisor and every VP, restarts, and why it failed."""

    supervisor: SupervisorStatistics
    vps: list[VpStatistics]
    mailbox_high_water: int
    restarts: int = 0
    failure: str | None = None
    #: Messages waiting in the VPs' mailboxes now (all VPs of the partition).
    mailbox_depth: int = 0


class Vp:
    """A handle on one VP actor: cheap to make, no task of its own.

    ``execute`` and the inspection methods are checkpoints; each waits for its reply.
    """

    __slots__ = ("_cell", "_scheduler")

    def __init__(self, scheduler: BatchingScheduler, cell: VpCell) -> None:
        self._scheduler = scheduler
        self._cell = cell

    def __repr__(self) -> str:
        return f"<Vp {self._cell.actor!r}>"

    @property
    def index(self) -> int:
        """This VP's index in its partition."""
        return self._cell.actor.state.index

    @property
    def active_vtl(self) -> Vtl:
        """The VTL the guest on this VP is running in now."""
        return self._cell.actor.state.active_vtl

    async def execute(self, action: Action) -> Outcome:
        """The guest on this VP performs ``action`` in its active VTL; returns the outcome.

        A checkpoint, even when it raises. ``action`` is checked before anything is queued:
        a field of the wrong type or range raises TypeError/ValueError naming the field, the
        partition, the VP and its VTL. Calling from another thread raises RuntimeError at
        once (nothing is queued).

        Cancellation: if the caller is cancelled before the VP has started the action, the
        action is withdrawn from the mailbox and never runs; once it has started it runs to
        completion (its effects stay) and its outcome is dropped.

        Raises:
            VpNotRunning: the VP has not been started.
            ActorCrashed: the action failed inside the simulator; it had no effect and the VP
                restarts from its last committed state: retry it.
            PartitionFailed: a fatal condition ended the partition (DOMAIN 7.2), or it exceeded
                its restart intensity; ``Partition.failure`` says why.
            Busy: the VP's mailbox is full (nothing was queued).
            anyio.ClosedResourceError: the partition or runtime is stopped.
        """
        scheduler = self._scheduler
        if _get_ident() != scheduler.thread:
            raise wrong_thread("vp.execute", self._cell)
        cell = self._cell
        try:
            if action is not cell.checked:  # the same immutable action again: checked already
                _check_new(action, cell)
            slot = scheduler.new_slot()
            mailbox = cell.mailbox
            queue = mailbox.queue
            if queue is None or queue or mailbox.closed or mailbox.capacity < 1:
                mailbox.put((0, action, slot))  # scheduler.post_action, inlined
            else:  # the hot path: Mailbox.put into an open, empty mailbox with room, inlined
                queue.append((0, action, slot))
                if not mailbox.high_water:
                    mailbox.high_water = 1
                scheduler.schedule(cell)
        except (TypeError, ValueError) as exc:
            await anyio.lowlevel.checkpoint()
            raise type(exc)(f"vp.execute failed: {exc} ({cell})") from None
        except Exception:  # Busy, closed, PartitionFailed: still a checkpoint
            await anyio.lowlevel.checkpoint()
            raise
        try:
            result: Outcome = await slot
        except BaseException:
            cell.mailbox.withdraw(slot)  # cancelled before it started: it never runs
            raise
        return result

    async def _inspect(self, operation: str, inspect: Callable[[VpActor], T]) -> T:
        """Run ``inspect`` on the actor in order with its actions; a commit point."""
        scheduler = self._scheduler
        if threading.get_ident() != scheduler.thread:
            raise wrong_thread(operation, self._cell)
        cell = self._cell
        try:
            slot = scheduler.backend.slot()
            scheduler.post_inspection(cell, inspect, slot)
        except Exception:
            await anyio.lowlevel.checkpoint()
            raise
        try:
            result: T = await slot
        except BaseException:
            cell.mailbox.withdraw(slot)
            raise
        return result

    async def registers(self, vtl: Vtl, names: Iterable[Reg]) -> dict[Reg, int]:
        """Committed values of ``names`` in ``vtl`` (waits for pending updates to commit)."""
        wanted: list[object] = list(names)  # checked here: callers are not all type-checked
        vtl = _check_vtl(vtl, self)
        for name in wanted:
            if not isinstance(name, int) or isinstance(name, bool) or name not in _HELD:
                msg = f"vp.registers failed: register {name!r} is not held in a register file ({self._cell})"
                raise ValueError(msg)
        held: list[int] = wanted  # type: ignore[assignment]  # every name checked above
        return await self._inspect("vp.registers", lambda actor: actor.registers(vtl, held))

    async def tdx_state(self, vtl: Vtl) -> TdxL2State:
        """The committed derived TDX L2 state of ``vtl``."""
        vtl = _check_vtl(vtl, self)
        return await self._inspect("vp.tdx_state", lambda actor: actor.tdx_state(vtl))

    async def sint0_message(self, vtl: Vtl) -> InterceptMessage | None:
        """The intercept message in ``vtl``'s SynIC SINT0 slot, if any."""
        vtl = _check_vtl(vtl, self)
        return await self._inspect("vp.sint0_message", lambda actor: actor.sint0_message(vtl))

    async def vtl_control(self, vtl: Vtl) -> VtlControl:
        """``vtl``'s VP assist page VTL control block: entry reason and VTL-return RAX/RCX."""
        vtl = _check_vtl(vtl, self)
        return await self._inspect("vp.vtl_control", lambda actor: actor.vtl_control(vtl))

    def statistics(self) -> VpStatistics:
        """Counters of this VP (no commit, no wait)."""
        return self._cell.actor.statistics()

    def counters(self) -> tuple[int, int, int, int]:
        """``(vtl_switches, commits, vmcs_reads, vmcs_writes)`` as in ``statistics()``, cheaply.

        For measuring drivers that read them around every action (no commit, no wait).
        """
        actor = self._cell.actor
        vtl0, vtl1 = actor.state.vtls
        return (
            actor.vtl_switches,
            vtl0.commits + vtl1.commits,
            vtl0.vmcs_reads + vtl1.vmcs_reads,
            vtl0.vmcs_writes + vtl1.vmcs_writes,
        )


_get_ident: Final = threading.get_ident
_VALIDATORS: Final = ACTION_VALIDATORS
_IMMUTABLE: Final = IMMUTABLE_ACTIONS
#: Registers an inspection can read: those held in a register file.
_HELD: Final = frozenset(SHARED_RESET) | frozenset(PRIVATE_RESET)


def _check_new(action: object, cell: VpCell) -> None:
    """Check ``action`` (a TypeError or ValueError naming the field); remember it if immutable."""
    cls = action.__class__
    check = _VALIDATORS.get(cls)
    if check is None:
        msg = f"not a guest action: {action!r:.60}"
        raise TypeError(msg)
    check(action)
    if cls in _IMMUTABLE:
        cell.checked = action


def check_call(vp: Vp, action: object) -> None:
    """What ``vp.execute`` checks before it queues ``action``, for the in-line path (no checkpoint).

    Raises:
        RuntimeError: called from another thread than the runtime's.
        TypeError, ValueError: a bad action (the message names the field, partition, VP, VTL).
    """
    cell = vp._cell
    if _get_ident() != vp._scheduler.thread:
        raise wrong_thread("execute_inline", cell)
    try:
        if action is not cell.checked:
            _check_new(action, cell)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"execute_inline failed: {exc} ({cell})") from None


def wrong_thread(operation: str, where: object) -> RuntimeError:
    msg = (
        f"{operation} failed: called from another thread; a runtime is used only from the thread "
        f"and event loop that opened it ({where})"
    )
    return RuntimeError(msg)


def _check_vtl(vtl: object, vp: Vp) -> Vtl:
    if vtl not in (Vtl.VTL0, Vtl.VTL1) or isinstance(vtl, bool):
        msg = f"vp {vp.index}: inspection needs Vtl.VTL0 or Vtl.VTL1, got {vtl!r}"
        raise ValueError(msg)
    return Vtl(vtl)  # type: ignore[arg-type]  # checked just above


class Partition:
    """A simulated TDX partition: a supervisor and ``vp_count`` VP actors."""

    __slots__ = ("_cells", "_scheduler")

    def __init__(self, scheduler: BatchingScheduler, cells: PartitionCells) -> None:
        self._scheduler = scheduler
        self._cells = cells

    def __repr__(self) -> str:
        cells = self._cells
        state = "FAILED" if cells.failure is not None else "STOPPED" if cells.stopped else "RUNNING"
        return f"<Partition id={self.partition_id} vps={self.vp_count} {state}>"

    @property
    def failure(self) -> str | None:
        """Why the partition ended (DOMAIN 7.2, or restart intensity exceeded), or None while it runs."""
        return self._cells.failure

    @property
    def partition_id(self) -> int:
        """Runtime-unique id of this partition."""
        return self._cells.partition_id

    @property
    def vp_count(self) -> int:
        """Number of VPs."""
        return self._cells.config.vp_count

    @property
    def config(self) -> PartitionConfig:
        """The configuration this partition was created with."""
        return self._cells.config

    @property
    def stopped(self) -> bool:
        """True once ``stop`` was called (or the runtime closed)."""
        return self._cells.stopped

    def vp(self, index: int) -> Vp:
        """A handle on VP ``index``."""
        if type(index) is not int or not 0 <= index < self.vp_count:
            msg = f"partition {self.partition_id}: vp index {index!r} out of range 0..{self.vp_count - 1}"
            raise ValueError(msg)
        return Vp(self._scheduler, self._cells.cells[index])

    def statistics(self) -> PartitionStatistics:
        """Counters of the supervisor and every VP."""
        cells = self._cells
        return PartitionStatistics(
            supervisor=cells.supervisor.statistics(),
            vps=[cell.actor.statistics() for cell in cells.cells],
            mailbox_high_water=max(cell.mailbox.high_water for cell in cells.cells),
            restarts=cells.restarts,
            failure=cells.failure,
            mailbox_depth=sum(len(cell.mailbox) for cell in cells.cells),
        )

    async def stop(self) -> None:
        """Stop every actor; waiting callers get ``anyio.ClosedResourceError``."""
        if threading.get_ident() != self._scheduler.thread:
            raise wrong_thread("partition.stop", self)
        if not self._cells.stopped:
            message = f"partition {self.partition_id} was stopped"
            self._scheduler.stop_partition(self._cells, lambda: anyio.ClosedResourceError(message))
        await anyio.lowlevel.checkpoint()

    async def snapshot(self) -> bytes:
        """Commit every VP, then encode the whole partition (``Runtime.restore_partition``).

        Waits until no VP is in the middle of a hypercall or a restart, so the snapshot is
        one consistent state: both VTLs of every VP, VSM partition state, protections, SynIC
        slots, pending events and counters. A checkpoint.

        Raises:
            ActorCrashed: a VP crashed while committing (it restarts; retry the snapshot).
            PartitionFailed, anyio.ClosedResourceError: the partition has ended.
        """
        scheduler = self._scheduler
        if threading.get_ident() != scheduler.thread:
            raise wrong_thread("partition.snapshot", self)
        slot = scheduler.backend.slot()
        operation = (_take_snapshot(scheduler), slot)
        try:
            scheduler.post_partition_operation(self._cells, operation[0], slot)
        except Exception:
            await anyio.lowlevel.checkpoint()
            raise
        try:
            result: bytes = await slot
        except BaseException:
            if operation in self._cells.operations:  # cancelled before it ran
                self._cells.operations.remove(operation)
            raise
        return result


def _take_snapshot(scheduler: BatchingScheduler) -> Callable[[PartitionCells], bytes]:
    def take(cells: PartitionCells) -> bytes:
        for cell in cells.cells:
            if not scheduler.commit_vp(cell):
                msg = f"partition {cells.partition_id} snapshot failed: vp {cell.actor.state.index} crashed"
                raise ActorCrashed(
                    msg, partition_id=cells.partition_id, vp_index=cell.actor.state.index, step=0
                )
        return encode_partition(cells)

    return take
