"""``open_runtime``: the host of many simulated partitions, and the handles users hold.

The runtime owns one task group; every task it starts (the scheduler's runner and flusher) ends
when the ``async with`` block exits, and every partition is stopped then.
"""

from __future__ import annotations

import itertools
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal, TypeVar

import anyio
import msgspec

from actors import (
    PartitionConfig,
    SupervisorStatistics,
    TdxL2State,
    VpActor,
    VpStatistics,
    VtlControl,
)
from protocol import Action, HvRegisterName as Reg, InterceptMessage, Outcome, Vtl

from ._mailbox import current_backend
from ._scheduler import BatchingScheduler, PartitionCells, SchedulerStatistics, VpCell

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

__all__ = ("Partition", "PartitionStatistics", "Runtime", "RuntimeStatistics", "Vp", "open_runtime")

T = TypeVar("T")
ClockKind = Literal["real", "virtual"]


class PartitionStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one partition: its supervisor and every VP."""

    supervisor: SupervisorStatistics
    vps: list[VpStatistics]
    mailbox_high_water: int
    failure: str | None = None


class RuntimeStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of the whole runtime."""

    partitions: int
    vps: int
    scheduler: SchedulerStatistics


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

        Raises:
            VpNotRunning: the VP has not been started.
            PartitionFailed: a fatal condition ended the partition (DOMAIN 7.2).
            Busy: the VP's mailbox is full.
            anyio.ClosedResourceError: the partition or runtime is stopped.
        """
        slot = self._scheduler.backend.slot()
        self._scheduler.post_action(self._cell, action, slot)
        result: Outcome = await slot
        return result

    async def _inspect(self, inspect: Callable[[VpActor], T]) -> T:
        """Run ``inspect`` on the actor in order with its actions; a commit point."""
        slot = self._scheduler.backend.slot()
        self._scheduler.post_inspection(self._cell, inspect, slot)
        result: T = await slot
        return result

    async def registers(self, vtl: Vtl, names: Iterable[Reg]) -> dict[Reg, int]:
        """Committed values of ``names`` in ``vtl`` (waits for pending updates to commit)."""
        wanted = list(names)
        vtl = _check_vtl(vtl, self)
        return await self._inspect(lambda actor: actor.registers(vtl, wanted))

    async def tdx_state(self, vtl: Vtl) -> TdxL2State:
        """The committed derived TDX L2 state of ``vtl``."""
        vtl = _check_vtl(vtl, self)
        return await self._inspect(lambda actor: actor.tdx_state(vtl))

    async def sint0_message(self, vtl: Vtl) -> InterceptMessage | None:
        """The intercept message in ``vtl``'s SynIC SINT0 slot, if any."""
        vtl = _check_vtl(vtl, self)
        return await self._inspect(lambda actor: actor.sint0_message(vtl))

    async def vtl_control(self, vtl: Vtl) -> VtlControl:
        """``vtl``'s VP assist page VTL control block: entry reason and VTL-return RAX/RCX."""
        vtl = _check_vtl(vtl, self)
        return await self._inspect(lambda actor: actor.vtl_control(vtl))

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
        state = "FAILED" if cells.failure else "STOPPED" if cells.stopped else "RUNNING"
        return f"<Partition id={self.partition_id} vps={self.vp_count} {state}>"

    @property
    def partition_id(self) -> int:
        """Runtime-unique id of this partition."""
        return self._cells.partition_id

    @property
    def vp_count(self) -> int:
        """Number of VPs."""
        return self._cells.config.vp_count

    @property
    def failure(self) -> str | None:
        """Why a fatal condition ended this partition (DOMAIN 7.2), or None while it runs."""
        return self._cells.failure

    @property
    def config(self) -> PartitionConfig:
        """The configuration this partition was created with."""
        return self._cells.config

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
            failure=cells.failure,
        )

    async def stop(self) -> None:
        """Stop every actor; waiting callers get ``anyio.ClosedResourceError``."""
        if not self._cells.stopped:
            error = anyio.ClosedResourceError(f"partition {self.partition_id} was stopped")
            self._scheduler.stop_partition(self._cells, error)
        await anyio.lowlevel.checkpoint()


class Runtime:
    """Hosts partitions; made by ``open_runtime``."""

    def __init__(self, scheduler: BatchingScheduler, *, seed: int | None, clock: ClockKind) -> None:
        self._scheduler = scheduler
        self._partitions: dict[int, Partition] = {}
        self._ids = itertools.count()
        self.seed = seed
        self.clock = clock
        self.closed = False

    def __repr__(self) -> str:
        return f"<Runtime backend={self._scheduler.backend.name} partitions={len(self._partitions)}>"

    @property
    def backend(self) -> str:
        """``"asyncio"`` or ``"trio"``."""
        return self._scheduler.backend.name

    async def create_partition(self, **config: object) -> Partition:
        """Create a partition from ``PartitionConfig`` keywords; VP 0 runs from creation.

        Raises:
            ValueError: a bad or unknown configuration field (the message names it).
        """
        if self.closed:
            msg = "create_partition failed: the runtime is closed"
            raise anyio.ClosedResourceError(msg)
        partition_config = PartitionConfig.from_keywords(**config)
        cells = PartitionCells(next(self._ids), partition_config, self._scheduler)
        partition = Partition(self._scheduler, cells)
        self._partitions[cells.partition_id] = partition
        await anyio.lowlevel.checkpoint()
        return partition

    @property
    def partitions(self) -> list[Partition]:
        """Every partition created so far."""
        return list(self._partitions.values())

    def statistics(self) -> RuntimeStatistics:
        """Counters of the runtime."""
        return RuntimeStatistics(
            partitions=len(self._partitions),
            vps=sum(p.vp_count for p in self._partitions.values()),
            scheduler=self._scheduler.statistics(),
        )

    def _close(self) -> None:
        self.closed = True
        for partition in self._partitions.values():
            if not partition._cells.stopped:  # the runtime owns its partitions
                error = anyio.ClosedResourceError("the runtime was closed")
                self._scheduler.stop_partition(partition._cells, error)


@asynccontextmanager
async def open_runtime(
    *,
    seed: int | None = None,
    clock: ClockKind = "real",
    mailbox_capacity: int = 1024,
    check_invariants: bool = False,
) -> AsyncIterator[Runtime]:
    """Open a runtime; on exit every partition is stopped and every task it started has ended.

    Args:
        seed: seed of the workloads' random choices (the same seed gives the same run).
        clock: ``"real"`` or ``"virtual"`` time. With ``"virtual"`` no batch window closes on
            wall time (windows close by count and at commit points only), so what commits when
            depends only on the actions; measurements in virtual time are ``runtime.experiment``'s.
        mailbox_capacity: bound of each VP's mailbox; a full one raises ``Busy``.
        check_invariants: check DOMAIN section 5's invariants after every step and commit
            (raises ``InternalError`` to the caller on a violation); meant for tests.
    """
    if clock not in ("real", "virtual"):
        msg = f"open_runtime: clock must be 'real' or 'virtual', got {clock!r}"
        raise ValueError(msg)
    if type(mailbox_capacity) is not int or mailbox_capacity < 1:
        msg = f"open_runtime: mailbox_capacity must be a positive int, got {mailbox_capacity!r}"
        raise ValueError(msg)
    scheduler = BatchingScheduler(
        current_backend(), mailbox_capacity=mailbox_capacity, check_invariants=check_invariants
    )
    runtime = Runtime(scheduler, seed=seed, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        if clock == "real":
            # Virtual time has no wall clock to close batch windows on: they close by count
            # (batch_max_updates) and at the commit points, so a seeded run is reproducible.
            await tg.start(scheduler.run_flusher)
        try:
            yield runtime
        finally:
            runtime._close()  # the owner closes its runtime
            tg.cancel_scope.cancel()
