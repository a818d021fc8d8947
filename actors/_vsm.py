"""Partition-wide Guest VSM state and the rules that change it (DOMAIN 1.3, 3.3, 3.4).

The partition supervisor is the only writer of this state. After every change it publishes an
immutable ``PartitionView`` that VP actors read; they ask the supervisor, by message, for every
change (``SupervisorRequest``) and receive their side of it as ``VpControl`` messages.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from protocol import (
    HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    HvMapGpaFlags,
    HvStatus,
    InitialVpContext,
    ModifyVtlProtectionMask,
    StartVirtualProcessor,
    VsmPartitionConfig,
    Vtl,
)

from ._protections import NO_PROTECTIONS, Protections, validate_vtl_gpa_flags

if TYPE_CHECKING:
    from ._config import PartitionConfig

__all__ = (
    "EnablePartitionVtlRequest",
    "EnableVpVtlRequest",
    "GuestVsmState",
    "ModifyProtectionsRequest",
    "LoadVtlContext",
    "PartitionState",
    "PartitionView",
    "StartVpRequest",
    "SupervisorRequest",
    "VpControl",
    "WriteVsmPartitionConfig",
)


class GuestVsmState(enum.IntEnum):
    """OpenHCL's partition ``guest_vsm`` state machine."""

    NOT_PLATFORM_SUPPORTED = 0
    NOT_GUEST_ENABLED = 1
    ENABLED = 2


class Vtl1PartitionState(msgspec.Struct, frozen=True, kw_only=True):
    """``CvmVtl1State`` plus the VTL protection settings (exists once VSM is Enabled)."""

    mbec_enabled: bool = False
    enabled_on_any_vp: bool = False
    zero_memory_on_reset: bool = False
    deny_lower_vtl_startup: bool = False
    protections_enabled: bool = False
    vtl0_default_protections: int = HvMapGpaFlags.ALL


class PartitionView(msgspec.Struct, frozen=True, kw_only=True):
    """An immutable snapshot of partition-wide VSM state, published by the supervisor.

    ``protections`` (VTL0's per-page flags where they differ from the default mask) is an
    immutable table that the supervisor replaces with every change, so a view never changes
    under a reader: readers see a whole ModifyVtlProtectionMask or none of it.
    """

    guest_vsm: GuestVsmState
    vtl1: Vtl1PartitionState | None = None
    vtl1_enable_called: tuple[bool, ...] = ()
    started: tuple[bool, ...] = ()
    protections: Protections = NO_PROTECTIONS


# ---- messages between VP actors and the supervisor ----------------------------------------------


class _ActorMsg(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the messages actors exchange inside one partition."""


class EnablePartitionVtlRequest(_ActorMsg, frozen=True):
    """A VP asks the supervisor to run HvCallEnablePartitionVtl."""

    vp_index: int
    caller: Vtl
    action: EnablePartitionVtl


class EnableVpVtlRequest(_ActorMsg, frozen=True):
    """A VP asks the supervisor to run HvCallEnableVpVtl."""

    vp_index: int
    caller: Vtl
    action: EnableVpVtl


class StartVpRequest(_ActorMsg, frozen=True):
    """A VP asks the supervisor to run HvCallStartVirtualProcessor."""

    vp_index: int
    caller: Vtl
    action: StartVirtualProcessor


class WriteVsmPartitionConfig(_ActorMsg, frozen=True):
    """VTL1 on a VP writes HvRegisterVsmPartitionConfig (already access-checked)."""

    vp_index: int
    value: int


class ModifyProtectionsRequest(_ActorMsg, frozen=True):
    """A VP asks the supervisor to run HvCallModifyVtlProtectionMask."""

    vp_index: int
    caller: Vtl
    action: ModifyVtlProtectionMask


SupervisorRequest: TypeAlias = (
    EnablePartitionVtlRequest
    | EnableVpVtlRequest
    | StartVpRequest
    | WriteVsmPartitionConfig
    | ModifyProtectionsRequest
)
#: A status, or (status, reps completed) for the rep hypercall ModifyVtlProtectionMask.
SupervisorReply: TypeAlias = HvStatus | tuple[HvStatus, int]


class LoadVtlContext(_ActorMsg, frozen=True):
    """Supervisor -> VP: load ``context`` into ``vtl`` before running guest code again.

    ``start`` marks a StartVirtualProcessor (the VP starts running); otherwise it is the VTL1
    context of EnableVpVtl (the active VTL does not change).
    """

    vtl: Vtl
    context: InitialVpContext
    start: bool = False


VpControl: TypeAlias = LoadVtlContext
#: ``PartitionState.checkpoint()``: guest_vsm, vtl1, vtl1_enable_called, started, protections.
PartitionCheckpoint: TypeAlias = tuple[
    GuestVsmState, Vtl1PartitionState | None, list[bool], list[bool], Protections
]


# ---- the supervisor's state and rules ----------------------------------------------------------


class PartitionState:
    """Mutable partition-wide VSM state; owned and written by the partition supervisor only."""

    __slots__ = ("config", "guest_vsm", "protections", "started", "view", "vtl1", "vtl1_enable_called")

    def __init__(self, config: PartitionConfig) -> None:
        self.config = config
        self.guest_vsm = (
            GuestVsmState.NOT_GUEST_ENABLED if config.vsm_available else GuestVsmState.NOT_PLATFORM_SUPPORTED
        )
        self.vtl1: Vtl1PartitionState | None = None
        self.vtl1_enable_called = [False] * config.vp_count
        self.started = [i == 0 for i in range(config.vp_count)]
        self.protections = NO_PROTECTIONS
        self.view = self._snapshot()

    def _snapshot(self) -> PartitionView:
        return PartitionView(
            guest_vsm=self.guest_vsm,
            vtl1=self.vtl1,
            vtl1_enable_called=tuple(self.vtl1_enable_called),
            started=tuple(self.started),
            protections=self.protections,
        )

    def publish(self) -> None:
        """Replace the published view after a change."""
        self.view = self._snapshot()

    def checkpoint(self) -> PartitionCheckpoint:
        """What ``rollback`` needs to undo one request (cheap: the tables are immutable)."""
        return (
            self.guest_vsm,
            self.vtl1,
            list(self.vtl1_enable_called),
            list(self.started),
            self.protections,
        )

    def rollback(self, saved: PartitionCheckpoint) -> None:
        """Undo every change since ``checkpoint`` returned ``saved``, and publish again."""
        self.guest_vsm, self.vtl1, self.vtl1_enable_called, self.started, self.protections = saved
        self.publish()

    # Each handler returns the status for the caller and the control messages for VPs; the
    # supervisor delivers the messages before the reply, so the target sees them first.

    def enable_partition_vtl(
        self, request: EnablePartitionVtlRequest
    ) -> tuple[HvStatus, list[tuple[int, VpControl]]]:
        """HvCallEnablePartitionVtl (DOMAIN 3.3)."""
        action = request.action
        if action.target_vtl > Vtl.VTL2:
            return HvStatus.ACCESS_DENIED, []
        if action.partition_id != HV_PARTITION_ID_SELF:
            return HvStatus.INVALID_PARTITION_ID, []
        if action.target_vtl != Vtl.VTL1:
            return HvStatus.ACCESS_DENIED, []
        if action.enable_supervisor_shadow_stack or action.enable_hardware_hvpt:
            return HvStatus.INVALID_PARAMETER, []
        if self.guest_vsm == GuestVsmState.NOT_PLATFORM_SUPPORTED:
            return HvStatus.ACCESS_DENIED, []
        if self.guest_vsm == GuestVsmState.ENABLED:
            return HvStatus.INVALID_VTL_STATE, []
        self.guest_vsm = GuestVsmState.ENABLED
        self.vtl1 = Vtl1PartitionState(mbec_enabled=action.enable_mbec)
        self.publish()
        return HvStatus.SUCCESS, []

    def enable_vp_vtl(self, request: EnableVpVtlRequest) -> tuple[HvStatus, list[tuple[int, VpControl]]]:
        """HvCallEnableVpVtl (DOMAIN 3.3); the context load happens on the target VP."""
        action = request.action
        if action.target_vtl > Vtl.VTL2:
            return HvStatus.INVALID_PARAMETER, []
        target_vp = request.vp_index if action.vp_index == HV_VP_INDEX_SELF else action.vp_index
        if action.partition_id != HV_PARTITION_ID_SELF:
            return HvStatus.INVALID_PARTITION_ID, []
        if target_vp >= self.config.vp_count:
            return HvStatus.INVALID_VP_INDEX, []
        if action.target_vtl != Vtl.VTL1:
            return HvStatus.INVALID_PARAMETER, []
        vtl1 = self.vtl1
        if self.guest_vsm != GuestVsmState.ENABLED or vtl1 is None:
            return HvStatus.INVALID_VTL_STATE, []
        if request.caller == Vtl.VTL0 and (vtl1.enabled_on_any_vp or target_vp != request.vp_index):
            return HvStatus.ACCESS_DENIED, []
        if self.vtl1_enable_called[target_vp]:
            return HvStatus.VTL_ALREADY_ENABLED, []
        if request.caller == Vtl.VTL0:
            self.vtl1 = msgspec.structs.replace(vtl1, enabled_on_any_vp=True)
        self.vtl1_enable_called[target_vp] = True
        self.publish()
        return HvStatus.SUCCESS, [(target_vp, LoadVtlContext(vtl=Vtl.VTL1, context=action.context))]

    def start_virtual_processor(
        self, request: StartVpRequest
    ) -> tuple[HvStatus, list[tuple[int, VpControl]]]:
        """HvCallStartVirtualProcessor (DOMAIN 3.3)."""
        action = request.action
        if action.target_vtl > Vtl.VTL2:
            return HvStatus.INVALID_PARAMETER, []
        if action.partition_id != HV_PARTITION_ID_SELF:
            return HvStatus.INVALID_PARTITION_ID, []
        target_vp = action.vp_index
        if target_vp == request.vp_index or target_vp >= self.config.vp_count:
            return HvStatus.INVALID_VP_INDEX, []
        if action.target_vtl > request.caller:
            return HvStatus.ACCESS_DENIED, []
        if action.target_vtl == Vtl.VTL1 and not self.vtl1_enable_called[target_vp]:
            return HvStatus.INVALID_VP_STATE, []
        vtl1 = self.vtl1
        if request.caller == Vtl.VTL0 and vtl1 is not None and vtl1.deny_lower_vtl_startup:
            return HvStatus.ACCESS_DENIED, []
        if self.started[target_vp]:
            return HvStatus.INVALID_VP_STATE, []
        self.started[target_vp] = True
        self.publish()
        control = LoadVtlContext(vtl=Vtl(action.target_vtl), context=action.context, start=True)
        return HvStatus.SUCCESS, [(target_vp, control)]

    def write_vsm_partition_config(
        self, request: WriteVsmPartitionConfig
    ) -> tuple[HvStatus, list[tuple[int, VpControl]]]:
        """SetVpRegisters(VsmPartitionConfig) from VTL1 (DOMAIN 3.4), quirks included."""
        value = request.value
        if value & ~VsmPartitionConfig.SUPPORTED:
            return HvStatus.INVALID_REGISTER_VALUE, []
        vtl1 = self.vtl1
        if self.guest_vsm != GuestVsmState.ENABLED or vtl1 is None:
            return HvStatus.INVALID_VTL_STATE, []
        config = VsmPartitionConfig.from_bits(value)
        if not config.enable_vtl_protection and vtl1.protections_enabled:
            return HvStatus.INVALID_REGISTER_VALUE, []
        mask = config.default_vtl_protection_mask
        if not validate_vtl_gpa_flags(mask, mbec=vtl1.mbec_enabled):
            return HvStatus.INVALID_REGISTER_VALUE, []
        if mask & 0x3 != 0x3:
            return HvStatus.INVALID_REGISTER_VALUE, []
        if mask != vtl1.vtl0_default_protections and vtl1.protections_enabled:
            return HvStatus.INVALID_REGISTER_VALUE, []
        self.vtl1 = msgspec.structs.replace(
            vtl1,
            vtl0_default_protections=mask,
            # Not to spec, but what OpenHCL does: any accepted write enables protections.
            protections_enabled=True,
            zero_memory_on_reset=config.zero_memory_on_reset,
            deny_lower_vtl_startup=config.deny_lower_vtl_startup,
        )
        self.publish()
        return HvStatus.SUCCESS, []

    def modify_vtl_protection_mask(
        self, request: ModifyProtectionsRequest
    ) -> tuple[tuple[HvStatus, int], list[tuple[int, VpControl]]]:
        """HvCallModifyVtlProtectionMask (DOMAIN 3.6): all-or-nothing for the pages of a call."""
        action = request.action
        count = len(action.gpns)
        if count == 0 or action.rep_start >= count:
            return (HvStatus.INVALID_HYPERCALL_INPUT, 0), []
        target = request.caller if action.target_vtl is None else action.target_vtl
        if target > Vtl.VTL2:
            return (HvStatus.INVALID_PARAMETER, 0), []
        if action.partition_id != HV_PARTITION_ID_SELF:
            return (HvStatus.ACCESS_DENIED, 0), []
        if target > request.caller:
            return (HvStatus.ACCESS_DENIED, 0), []
        if target == Vtl.VTL0:
            return (HvStatus.INVALID_PARAMETER, 0), []
        vtl1 = self.vtl1
        if target == request.caller and (vtl1 is None or not vtl1.protections_enabled):
            return (HvStatus.ACCESS_DENIED, 0), []
        if self.guest_vsm != GuestVsmState.ENABLED or vtl1 is None:
            return (HvStatus.INVALID_VTL_STATE, 0), []
        if not validate_vtl_gpa_flags(action.map_flags, mbec=vtl1.mbec_enabled):
            return (HvStatus.INVALID_REGISTER_VALUE, 0), []
        pages = action.gpns[action.rep_start :]
        if not all(self.config.is_ram(gpn) for gpn in pages):
            return (HvStatus.OPERATION_DENIED, 0), []  # validated first: no page changes
        flags = action.map_flags & 0xFFFF
        new = None if flags == vtl1.vtl0_default_protections else flags
        self.protections = self.protections.with_changes((gpn, new) for gpn in pages)
        self.publish()
        return (HvStatus.SUCCESS, count), []

    def handle(self, request: SupervisorRequest) -> tuple[SupervisorReply, list[tuple[int, VpControl]]]:
        """Run one supervisor request; the only entry point that writes this state."""
        match request:
            case EnablePartitionVtlRequest():
                return self.enable_partition_vtl(request)
            case EnableVpVtlRequest():
                return self.enable_vp_vtl(request)
            case StartVpRequest():
                return self.start_virtual_processor(request)
            case WriteVsmPartitionConfig():
                return self.write_vsm_partition_config(request)
            case ModifyProtectionsRequest():
                return self.modify_vtl_protection_mask(request)
