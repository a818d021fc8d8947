"""The partition supervisor: the single writer of partition-wide Guest VSM state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ._vsm import GuestVsmState, PartitionState, PartitionView, SupervisorReply, SupervisorRequest, VpControl

if TYPE_CHECKING:
    from ._config import PartitionConfig

__all__ = ("PartitionSupervisor", "SupervisorStatistics")


class SupervisorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one partition supervisor."""

    partition_id: int
    guest_vsm: GuestVsmState
    requests: int


class PartitionSupervisor:
    """Owns ``PartitionState``; VP actors reach it only through the messages it ``handle``s.

    ``view`` is the immutable snapshot VPs read between messages.
    """

    __slots__ = ("_state", "partition_id", "requests")

    def __init__(self, partition_id: int, config: PartitionConfig) -> None:
        self.partition_id = partition_id
        self._state = PartitionState(config)
        self.requests = 0

    def __repr__(self) -> str:
        state = self._state.guest_vsm.name
        return f"<PartitionSupervisor partition={self.partition_id} {state} requests={self.requests}>"

    @property
    def state(self) -> PartitionState:
        """The partition-wide state this supervisor owns (for snapshots: do not write it)."""
        return self._state

    def view(self) -> PartitionView:
        """The current published snapshot of partition-wide VSM state."""
        return self._state.view

    def handle(self, request: SupervisorRequest) -> tuple[SupervisorReply, list[tuple[int, VpControl]]]:
        """Process one request: the status for the asking VP and control messages for targets."""
        self.requests += 1
        return self._state.handle(request)

    def statistics(self) -> SupervisorStatistics:
        """Counters."""
        return SupervisorStatistics(
            partition_id=self.partition_id, guest_vsm=self._state.guest_vsm, requests=self.requests
        )
