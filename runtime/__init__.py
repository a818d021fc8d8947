"""What runs it: mailboxes, the batching scheduler, the host of many partitions.

Depends on actors and protocol.
"""

from __future__ import annotations

from ._host import (
    Partition as Partition,
    PartitionStatistics as PartitionStatistics,
    Runtime as Runtime,
    RuntimeStatistics as RuntimeStatistics,
    Vp as Vp,
    open_runtime as open_runtime,
)
from ._scheduler import SchedulerStatistics as SchedulerStatistics

__all__ = (
    "Partition",
    "PartitionStatistics",
    "Runtime",
    "RuntimeStatistics",
    "SchedulerStatistics",
    "Vp",
    "open_runtime",
)
