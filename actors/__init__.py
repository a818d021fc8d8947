"""What is simulated: VP actors, the partition supervisor, and the rules they follow.

A synchronous, pure core (rules as plain functions over state); the runtime delivers messages.
Depends on protocol (and anyio for the async shell of the runtime's use).
"""

from __future__ import annotations

from ._config import CommitPolicy as CommitPolicy, PartitionConfig as PartitionConfig
from ._errors import (
    Busy as Busy,
    InternalError as InternalError,
    PartitionFailed as PartitionFailed,
    UnsupportedAction as UnsupportedAction,
    VpFailed as VpFailed,
    VpNotRunning as VpNotRunning,
)
from ._hypercalls import Handler as Handler
from ._invariants import check_vp_invariants as check_vp_invariants, vp_violations as vp_violations
from ._partition import (
    PartitionSupervisor as PartitionSupervisor,
    SupervisorStatistics as SupervisorStatistics,
)
from ._protections import validate_vtl_gpa_flags as validate_vtl_gpa_flags
from ._tdx import TdxL2State as TdxL2State
from ._vp import VpActor as VpActor, VpStatistics as VpStatistics, VtlControl as VtlControl
from ._vsm import (
    GuestVsmState as GuestVsmState,
    PartitionView as PartitionView,
    SupervisorRequest as SupervisorRequest,
    VpControl as VpControl,
)

__all__ = (
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
    "validate_vtl_gpa_flags",
    "vp_violations",
)
