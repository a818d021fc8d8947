"""What runs it: mailboxes, the batching scheduler, the host of many partitions.

The errors an embedding program catches are importable from here: ``SimulationError`` (the
root), ``Busy``, ``VpNotRunning``, ``ActorCrashed``, ``PartitionFailed`` and ``ProtocolError``.

Depends on actors and protocol.
"""

from __future__ import annotations

from actors import (
    ActorCrashed as ActorCrashed,
    Busy as Busy,
    PartitionFailed as PartitionFailed,
    VpNotRunning as VpNotRunning,
)
from protocol import ProtocolError as ProtocolError, SimulationError as SimulationError

from ._events import (
    CommitEvent as CommitEvent,
    EngineEvent as EngineEvent,
    FailureEvent as FailureEvent,
    InterceptEvent as InterceptEvent,
    VtlSwitchEvent as VtlSwitchEvent,
)
from ._host import (
    Partition as Partition,
    PartitionStatistics as PartitionStatistics,
    Runtime as Runtime,
    RuntimeStatistics as RuntimeStatistics,
    Vp as Vp,
    open_runtime as open_runtime,
)
from ._programs import (
    GuestProgram as GuestProgram,
    execute_inline as execute_inline,
    run_driven as run_driven,
    run_inline as run_inline,
)
from ._scheduler import SchedulerStatistics as SchedulerStatistics
from ._supervision import RestartPolicy as RestartPolicy

__all__ = (
    "ActorCrashed",
    "Busy",
    "PartitionFailed",
    "ProtocolError",
    "SimulationError",
    "VpNotRunning",
    "CommitEvent",
    "EngineEvent",
    "FailureEvent",
    "InterceptEvent",
    "VtlSwitchEvent",
    "Partition",
    "PartitionStatistics",
    "RestartPolicy",
    "Runtime",
    "RuntimeStatistics",
    "SchedulerStatistics",
    "Vp",
    "open_runtime",
    "GuestProgram",
    "execute_inline",
    "run_driven",
    "run_inline",
)
