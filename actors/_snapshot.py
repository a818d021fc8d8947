"""Snapshots of actor state: plain msgspec Structs holding every slot of a VP or a partition.

A snapshot shares nothing mutable with the live state, so it doubles as a checkpoint (the
runtime keeps one per VP to restart it from) and, encoded, as the versioned on-disk format
(``runtime._snapshot``). Derived state is not stored but recomputed on restore: the modelled
VMCS (a pure function of the committed registers, RELIABILITY B8), the published partition
view, and what follows from the configuration.

``PLAN`` says, for every state class, how each of its ``__slots__`` is carried: ``"field"`` (a
field of the same name in its snapshot Struct), ``"nested"`` (a snapshot of its own) or
``"derived"``. A test checks that the plan names every slot, so a field added to a state
class cannot be silently left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from protocol import InterceptMessage, Vtl

from ._partition import PartitionSupervisor
from ._protections import Protections
from ._registers import RegisterFile
from ._state import GuestVsmVpState, VpState, VtlState
from ._tdx import CrRegistration, VmcsImage, vmcs_image
from ._vp import VpActor
from ._vsm import GuestVsmState, LoadVtlContext, PartitionState, PartitionView, Vtl1PartitionState

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._config import PartitionConfig

__all__ = (
    "PLAN",
    "GuestVsmVpSnapshot",
    "PartitionStateSnapshot",
    "RegisterFileSnapshot",
    "VpSnapshot",
    "VpStateSnapshot",
    "VtlSnapshot",
    "restore_partition_state",
    "restore_vp",
    "snapshot_partition_state",
    "snapshot_vp",
)


class _Snap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the snapshot Structs."""


class RegisterFileSnapshot(_Snap, frozen=True):
    """A register file: committed values that differ from reset, and staged writes."""

    committed: dict[int, int] = {}
    staged: dict[int, int] = {}


class VtlSnapshot(_Snap, frozen=True):
    """One VTL of one VP (``VtlState``) without its VMCS image, which is recomputed."""

    regs: RegisterFileSnapshot
    registration: CrRegistration
    staged_registration: CrRegistration | None
    staged_updates: int
    vmcs_reads: int
    vmcs_writes: int
    commits: int
    entry_check: bool
    rip64: bool
    entry_reason: int
    return_rax: int
    return_rcx: int
    vina_asserted: bool
    sint0_message: InterceptMessage | None
    sint0_pending: bool


class GuestVsmVpSnapshot(_Snap, frozen=True):
    """VTL1 state of one VP (``GuestVsmVpState``)."""

    pending_event: int | None
    cr_intercept_control: int
    cr0_mask: int
    cr4_mask: int
    misc_enable_mask: int
    vp_mbec_enabled: bool
    tlb_locked: bool


class VpStateSnapshot(_Snap, frozen=True):
    """Everything ``VpState`` owns."""

    index: int
    active_vtl: Vtl
    running: bool
    failure: str | None
    shared: RegisterFileSnapshot
    vtls: tuple[VtlSnapshot, VtlSnapshot]
    vtl1: GuestVsmVpSnapshot | None


class VpSnapshot(_Snap, frozen=True):
    """A VP actor: its state, counters and the control messages not applied yet."""

    state: VpStateSnapshot
    actions: int
    vtl_switches: int
    controls: tuple[LoadVtlContext, ...] = ()


class PartitionStateSnapshot(_Snap, frozen=True):
    """Partition-wide VSM state (``PartitionState``) and the supervisor's counter."""

    guest_vsm: GuestVsmState
    vtl1: Vtl1PartitionState | None
    vtl1_enable_called: tuple[bool, ...]
    started: tuple[bool, ...]
    protections: dict[int, int]
    requests: int


#: How each slot of each state class is carried (see the module docstring).
PLAN: Final[dict[type, dict[str, str]]] = {
    VpActor: {
        "state": "nested",
        "actions": "field",
        "vtl_switches": "field",
        "_controls": "nested",  # VpSnapshot.controls
        "_view": "derived",  # the partition's published view, given on restore
    },
    VpState: {
        "index": "field",
        "active_vtl": "field",
        "running": "field",
        "failure": "field",
        "shared": "nested",
        "vtls": "nested",
        "vtl1": "nested",
        "config": "derived",  # given on restore
        "eager": "derived",  # from config.commit_policy
        "batch_max_updates": "derived",  # from config
    },
    VtlState: {
        "regs": "nested",
        "registration": "field",
        "staged_registration": "field",
        "staged_updates": "field",
        "vmcs_reads": "field",
        "vmcs_writes": "field",
        "commits": "field",
        "entry_check": "field",
        "rip64": "field",
        "entry_reason": "field",
        "return_rax": "field",
        "return_rcx": "field",
        "vina_asserted": "field",
        "sint0_message": "field",
        "sint0_pending": "field",
        "vtl": "derived",  # its position in VpState.vtls
        "vmcs": "derived",  # recomputed from the committed registers (B8)
    },
    GuestVsmVpState: dict.fromkeys(GuestVsmVpSnapshot.__struct_fields__, "field"),
    RegisterFile: {"committed": "field", "staged": "field", "reset": "derived"},  # reset: by VP index
    PartitionState: {
        "guest_vsm": "field",
        "vtl1": "field",
        "vtl1_enable_called": "field",
        "started": "field",
        "protections": "field",
        "config": "derived",  # given on restore
        "view": "derived",  # published again on restore
    },
    PartitionSupervisor: {"_state": "nested", "requests": "field", "partition_id": "derived"},
}


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(slot for slot, how in PLAN[cls].items() if how == "field")


_VTL_FIELDS: Final = _fields(VtlState)
_VSM_VP_FIELDS: Final = _fields(GuestVsmVpState)


def _file(regs: RegisterFile) -> RegisterFileSnapshot:
    return RegisterFileSnapshot(committed=dict(regs.committed), staged=dict(regs.staged))


def _vtl(state: VtlState) -> VtlSnapshot:
    return VtlSnapshot(regs=_file(state.regs), **{name: getattr(state, name) for name in _VTL_FIELDS})


def snapshot_vp(actor: VpActor) -> VpSnapshot:
    """Everything ``actor`` holds, as data (shares nothing mutable with it)."""
    st = actor.state
    vtl1 = st.vtl1
    return VpSnapshot(
        state=VpStateSnapshot(
            index=st.index,
            active_vtl=st.active_vtl,
            running=st.running,
            failure=st.failure,
            shared=_file(st.shared),
            vtls=(_vtl(st.vtls[0]), _vtl(st.vtls[1])),
            vtl1=None
            if vtl1 is None
            else GuestVsmVpSnapshot(**{name: getattr(vtl1, name) for name in _VSM_VP_FIELDS}),
        ),
        actions=actor.actions,
        vtl_switches=actor.vtl_switches,
        controls=tuple(actor.pending_controls),
    )


def restore_vp(snapshot: VpSnapshot, config: PartitionConfig, view: Callable[[], PartitionView]) -> VpActor:
    """A new VP actor in exactly the state of ``snapshot`` (its VMCS recomputed)."""
    snap = snapshot.state
    actor = VpActor(snap.index, config, view)
    st = actor.state
    st.active_vtl = Vtl(snap.active_vtl)
    st.running = snap.running
    st.failure = snap.failure
    st.shared.committed = dict(snap.shared.committed)
    st.shared.staged = dict(snap.shared.staged)
    for state, vtl_snap in zip(st.vtls, snap.vtls, strict=True):
        state.regs.committed = dict(vtl_snap.regs.committed)
        state.regs.staged = dict(vtl_snap.regs.staged)
        for name in _VTL_FIELDS:
            setattr(state, name, getattr(vtl_snap, name))
        reset = state.vmcs.reset
        image = vmcs_image(state.vtl, state.regs.read_committed, state.registration, config.vmx_cr4_fixed1)
        state.vmcs = VmcsImage(reset)
        state.vmcs.update({field: value for field, value in image.items() if reset[field] != value})
    if snap.vtl1 is not None:
        st.vtl1 = GuestVsmVpState()
        for name in _VSM_VP_FIELDS:
            setattr(st.vtl1, name, getattr(snap.vtl1, name))
    actor.actions = snapshot.actions
    actor.vtl_switches = snapshot.vtl_switches
    for control in snapshot.controls:
        actor.deliver(control)
    return actor


def snapshot_partition_state(supervisor: PartitionSupervisor) -> PartitionStateSnapshot:
    """The supervisor's partition-wide state, as data."""
    state = supervisor.state
    return PartitionStateSnapshot(
        guest_vsm=state.guest_vsm,
        vtl1=state.vtl1,
        vtl1_enable_called=tuple(state.vtl1_enable_called),
        started=tuple(state.started),
        protections=dict(state.protections),
        requests=supervisor.requests,
    )


def restore_partition_state(
    snapshot: PartitionStateSnapshot, partition_id: int, config: PartitionConfig
) -> PartitionSupervisor:
    """A new supervisor for partition ``partition_id`` in exactly the state of ``snapshot``."""
    supervisor = PartitionSupervisor(partition_id, config)
    state = supervisor.state
    state.guest_vsm = GuestVsmState(snapshot.guest_vsm)
    state.vtl1 = snapshot.vtl1
    state.vtl1_enable_called = list(snapshot.vtl1_enable_called)
    state.started = list(snapshot.started)
    state.protections = Protections().with_changes(snapshot.protections.items())
    state.publish()
    supervisor.requests = snapshot.requests
    return supervisor
