"""What is simulated: VP actors, the partition supervisor, and the rules they follow.

A synchronous, pure core (rules as plain functions over state); the runtime delivers messages.
Depends on protocol (and anyio for the async shell of the runtime's use).
"""

from __future__ import annotations

from ._config import CommitPolicy as CommitPolicy, PartitionConfig as PartitionConfig
from ._errors import (
    ActorCrashed as ActorCrashed,
    Busy as Busy,
    InternalError as InternalError,
    PartitionFailed as PartitionFailed,
    UnsupportedAction as UnsupportedAction,
    VpFailed as VpFailed,
    VpNotRunning as VpNotRunning,
)
from ._faults import FAULTS as FAULTS, POINTS as FAULT_POINTS, FaultHook as FaultHook
from ._hypercalls import Handler as Handler
from ._invariants import (
    check_vp_invariants as check_vp_invariants,
    partition_violations as partition_violations,
    vp_violations as vp_violations,
)
from ._partition import (
    PartitionSupervisor as PartitionSupervisor,
    SupervisorStatistics as SupervisorStatistics,
)
from ._protections import Protections as Protections, validate_vtl_gpa_flags as validate_vtl_gpa_flags
from ._snapshot import (
    PLAN as SNAPSHOT_PLAN,
    PartitionStateSnapshot as PartitionStateSnapshot,
    VpSnapshot as VpSnapshot,
    restore_partition_state as restore_partition_state,
    restore_vp as restore_vp,
    snapshot_partition_state as snapshot_partition_state,
    snapshot_vp as snapshot_vp,
)
from ._state import VpState as VpState
from ._tdx import TdxL2State as TdxL2State
from ._vp import VpActor as VpActor, VpStatistics as VpStatistics, VtlControl as VtlControl
from ._vsm import (
    GuestVsmState as GuestVsmState,
    PartitionView as PartitionView,
    SupervisorRequest as SupervisorRequest,
    VpControl as VpControl,
)

__all__ = (
    "FAULTS",
    "FAULT_POINTS",
    "SNAPSHOT_PLAN",
    "ActorCrashed",
    "FaultHook",
    "PartitionStateSnapshot",
    "Protections",
    "VpSnapshot",
    "VpState",
    "restore_partition_state",
    "restore_vp",
    "snapshot_partition_state",
    "snapshot_vp",
    "Busy",
    "CommitPolicy",
    "GuestVsmState",
    "Handler",
    "InternalError",
    "PartitionFailed",
    "PartitionConfig",
    "PartitionSupervisor",
    "PartitionView",
    "SupervisorRequest",
    "SupervisorStatistics",
    "TdxL2State",
    "UnsupportedAction",
    "VpActor",
    "VpFailed",
    "VpNotRunning",
    "VpStatistics",
    "VtlControl",
    "check_vp_invariants",
    "partition_violations",
    "validate_vtl_gpa_flags",
    "vp_violations",
)
