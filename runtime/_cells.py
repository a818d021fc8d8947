"""The runtime side of actors: a VP's cell (mailbox, journal, scheduling state) and a partition's.

Actors (``actors.VpActor``, ``actors.PartitionSupervisor``) are state and rules only; a cell
holds what the scheduler needs to run one: its bounded mailbox, the hypercall waiting for the
supervisor, its journal and checkpoint (``_journal``), and whether it is on the ready queue or
restarting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from actors import PartitionFailed, PartitionSupervisor, VpActor

from ._mailbox import Mailbox, ReplySlot
from ._supervision import RestartHistory

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors import PartitionConfig, PartitionView, SupervisorRequest

    from ._supervision import RestartPolicy

__all__ = ("PartitionCells", "VpCell")

#: ``VpCell.checked`` before any action was checked (no action, None included, is this object).
_NOTHING_CHECKED: object = object()


class VpCell:
    """The runtime side of one VP actor.

    Invariant: ``scheduled`` is True while the cell is on the ready queue, and also while it is
    restarting or paused, so that ``schedule`` (the hot path) needs no further test.
    """

    __slots__ = (
        "actor",
        "base",
        "base_view",
        "batch_window",
        "checked",
        "journal",
        "mailbox",
        "partition",
        "pending",
        "restarting",
        "resume",
        "scheduled",
    )

    def __init__(
        self, actor: VpActor, partition: PartitionCells, capacity: int, schedule: Callable[[VpCell], None]
    ) -> None:
        self.actor = actor
        self.partition = partition
        #: ``partition.config.batch_window``, kept here: the end of a pass reads it per window.
        self.batch_window: float = partition.config.batch_window
        self.scheduled = False
        self.restarting = False
        # A hypercall waiting for the supervisor: (generator, reply slot).
        self.pending: tuple[Any, ReplySlot] | None = None
        self.resume: tuple[bool, Any] | None = None
        self.mailbox: Mailbox[tuple[int, Any, ReplySlot]] = Mailbox(capacity, schedule, self)
        # Checkpoint (None: the VP as created) and the inputs since then (``_journal``).
        self.base: bytes | None = None  # _journal.checkpoint
        self.base_view: PartitionView = partition.view
        self.journal: list[Any] = []
        #: The last immutable action ``vp.execute`` checked (sent again, it is not checked again).
        self.checked: object = _NOTHING_CHECKED

    def __repr__(self) -> str:
        return f"<VpCell partition={self.partition.partition_id} {self.actor!r} depth={len(self.mailbox)}>"

    def __str__(self) -> str:
        st = self.actor.state
        return f"partition {self.partition.partition_id} vp {st.index} ({st.active_vtl.name})"

    def closed_error(self) -> Exception:
        """What a call to this stopped VP raises: its partition's failure, or a closed resource."""
        failure = self.partition.failure
        if failure is not None:
            return PartitionFailed(failure)
        return anyio.ClosedResourceError(f"{self} is stopped")

    @property
    def busy(self) -> bool:
        """True while an input is half done: a hypercall waits, or the VP is restarting."""
        return self.pending is not None or self.resume is not None or self.restarting


class PartitionCells:
    """The runtime side of one partition: the supervisor, its mailbox, the VP cells, supervision."""

    __slots__ = (
        "cells",
        "config",
        "failure",
        "history",
        "operations",
        "partition_id",
        "requests",
        "restarting",
        "restarts",
        "scheduled",
        "stopped",
        "supervisor",
        "view",
    )

    def __init__(
        self,
        partition_id: int,
        config: PartitionConfig,
        *,
        capacity: int,
        schedule: Callable[[VpCell], None],
        policy: RestartPolicy,
        supervisor: PartitionSupervisor | None = None,
        actors: list[VpActor] | None = None,
    ) -> None:
        self.partition_id = partition_id
        self.config = config
        self.supervisor = supervisor if supervisor is not None else PartitionSupervisor(partition_id, config)
        #: The published view as of the last supervisor step (what VP steps read).
        self.view: PartitionView = self.supervisor.view()
        # Supervisor mailbox: short (one request per waiting VP at most), so a list will do.
        self.requests: list[tuple[SupervisorRequest, VpCell]] = []
        # Whole-partition operations (snapshots) waiting for every VP to be between inputs.
        self.operations: list[tuple[Callable[[PartitionCells], object], ReplySlot]] = []
        self.scheduled = False
        self.stopped = False
        self.restarting = False  # the supervisor itself is restarting (its step crashed)
        #: Why the partition failed (``fail_partition``), or None.
        self.failure: str | None = None
        self.history = RestartHistory(policy)
        self.restarts = 0
        view = self.supervisor.view
        if actors is None:
            actors = [VpActor(i, config, view) for i in range(config.vp_count)]
        self.cells = [VpCell(actor, self, capacity, schedule) for actor in actors]

    @property
    def quiet(self) -> bool:
        """True when no VP has a half-done input and no request waits for the supervisor."""
        return not self.requests and not self.restarting and not any(cell.busy for cell in self.cells)
