"""The VP actor: one virtual processor's state and the step that runs one guest action on it.

The actor is driven by the runtime's scheduler, one message at a time: a guest action, an
inspection, or a control message from the partition supervisor. Control messages (context
loads from EnableVpVtl and StartVirtualProcessor) are applied before the VP next runs guest code,
as OpenHCL processes wake reasons before re-entering the guest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from protocol import (
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvVtlEntryReason,
    Hypercall,
    InterceptMessage,
    LoadTableRegister,
    MemoryAccess,
    ModifyVtlProtectionMask,
    MovToCr,
    Outcome,
    Rdmsr,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
)
from protocol._x86 import CR0_ET

from ._access import validate_context_value
from ._errors import VpFailed, VpNotRunning
from ._hypercalls import Handler, handle_hypercall
from ._instructions import (
    load_table_register,
    memory_access,
    mov_to_cr,
    rdmsr,
    write_vtl_control,
    wrmsr,
    xsetbv,
)
from ._pending import deliver_pending_event
from ._registers import PRIVATE_RESET, SHARED_RESET
from ._state import GuestVsmVpState, VpState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._config import PartitionConfig
    from ._tdx import TdxL2State
    from ._vsm import LoadVtlContext, PartitionView, VpControl

__all__ = ("VpActor", "VpStatistics", "VtlControl")

# Dispatch by exact type: a dict lookup instead of a chain of isinstance checks (hot path).
_INSTRUCTIONS: dict[type, Callable[[VpState, Any], Outcome]] = {
    Rdmsr: rdmsr,
    Wrmsr: wrmsr,
    MovToCr: mov_to_cr,
    WriteVtlControl: write_vtl_control,
    Xsetbv: xsetbv,
    LoadTableRegister: load_table_register,
}
_HYPERCALLS = frozenset(
    {
        GetVpRegisters,
        SetVpRegisters,
        ModifyVtlProtectionMask,
        VtlCall,
        VtlReturn,
        EnablePartitionVtl,
        EnableVpVtl,
        StartVirtualProcessor,
        Hypercall,
    }
)

_CONTEXT_CHECKED = (Reg.EFER, Reg.CR4, Reg.PAT)


class VtlControl(msgspec.Struct, frozen=True, kw_only=True):
    """The VTL control block of a VP assist page (offsets 0x08-0x18, DOMAIN 2.4).

    ``entry_reason`` says why the VTL was last entered (1 VTL call, 2 interrupt: secure
    intercepts arrive as interrupts); ``return_rax``/``return_rcx`` are what a normal VtlReturn
    loads into VTL0's RAX and RCX.
    """

    entry_reason: HvVtlEntryReason
    vina_asserted: bool
    return_rax: int
    return_rcx: int


class VpStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one VP actor."""

    vp_index: int
    active_vtl: Vtl
    running: bool
    failed: bool
    actions: int
    vtl_switches: int
    commits: int
    vmcs_writes: int
    staged_updates: int


class VpActor:
    """One vCPU: owns a ``VpState`` and runs guest actions in its active VTL."""

    __slots__ = ("_controls", "_view", "actions", "state", "vtl_switches")

    def __init__(self, index: int, config: PartitionConfig, view: Callable[[], PartitionView]) -> None:
        self.state = VpState(index, config)
        self._view = view
        # Bounded by construction: each VP can be enabled once and started once.
        self._controls: list[VpControl] = []
        self.actions = 0
        self.vtl_switches = 0

    def __repr__(self) -> str:
        st = self.state
        status = "FAILED" if st.failure else "RUNNING" if st.running else "STOPPED"
        return f"<VpActor vp={st.index} vtl={st.active_vtl.name} {status} actions={self.actions}>"

    # ---- messages from the supervisor -----------------------------------------------------------

    def deliver(self, control: VpControl) -> None:
        """Queue a control message; it is applied before this VP next runs or is inspected."""
        self._controls.append(control)

    @property
    def has_controls(self) -> bool:
        """True when control messages wait to be applied."""
        return bool(self._controls)

    def apply_controls(self) -> None:
        """Apply pending control messages: VTL1's before VTL0's, else in arrival order.

        OpenHCL processes a VP's start/enable wake reasons VTL1 first, then VTL0, so a VTL0
        start that waits beside a VTL1 enable sees VTL1 enabled and lets VTL1 run first.
        """
        controls = sorted(self._controls, key=lambda control: control.vtl != Vtl.VTL1)
        self._controls.clear()
        for control in controls:
            self._apply(control)

    def _apply(self, control: LoadVtlContext) -> None:
        st = self.state
        if st.failure:
            return
        context = control.context
        values = {Reg.EFER: context.efer, Reg.CR4: context.cr4, Reg.PAT: context.msr_cr_pat}
        fixed1 = st.config.vmx_cr4_fixed1
        bad = [Reg(n).name for n in _CONTEXT_CHECKED if not validate_context_value(n, values[n], fixed1)]
        if bad:
            # OpenHCL unwraps the set_registers result on the target VP: a fatal VP error.
            st.failure = (
                f"vp {st.index}: invalid initial {control.vtl.name} context "
                f"({', '.join(bad)} rejected by TDX set_registers)"
            )
            return
        if control.vtl == Vtl.VTL1 and st.vtl1 is None:
            st.vtl1 = GuestVsmVpState()
        # TDX set_registers writes CR0 with ET forced on (``write_cr0``), as for SetVpRegisters.
        st.load_context(control.vtl, msgspec.structs.replace(context, cr0=context.cr0 | CR0_ET))
        if control.start:
            st.running = True
            if control.vtl == Vtl.VTL1 or st.vtl1 is not None:
                st.active_vtl = Vtl.VTL1  # VTL1 runs first where it is enabled

    # ---- guest actions --------------------------------------------------------------------------

    def check_runnable(self) -> None:
        """Raise unless this VP can run a guest action now."""
        st = self.state
        if st.failure:
            raise VpFailed(st.failure)
        if not st.running:
            msg = f"vp {st.index} ({st.active_vtl.name}) is not running: start it with StartVirtualProcessor"
            raise VpNotRunning(msg)

    def execute(self, action: object) -> Handler:
        """Run one guest action in the active VTL; may return a generator for the supervisor."""
        if self._controls:
            self.apply_controls()
        st = self.state
        if st.failure or not st.running:
            self.check_runnable()
        vtl = st.active_vtl
        if st.vtls[vtl].staged_updates:
            st.commit(vtl)  # commit point: VTL entry
        self.actions += 1
        if not vtl and st.vtl1 is not None and st.vtl1.pending_event is not None:
            # VTL0 is about to run: the event VTL1 injected is delivered instead of the action.
            return deliver_pending_event(st)
        handler = _INSTRUCTIONS.get(type(action))
        if handler is not None:
            return handler(st, action)
        if type(action) in _HYPERCALLS:
            result = handle_hypercall(st, self._view, action)  # type: ignore[arg-type]  # checked
            if st.active_vtl != vtl:
                self.vtl_switches += 1
            return result
        if type(action) is MemoryAccess:
            return memory_access(st, self._view(), action)
        msg = f"vp {st.index} ({vtl.name}): not a guest action: {action!r}"
        raise TypeError(msg)

    # ---- inspection (simulator-side, never guest-visible) -----------------------------------------

    def _prepare_inspection(self, vtl: Vtl) -> None:
        if self._controls:
            self.apply_controls()
        self.state.commit(vtl)  # commit point: inspection

    def registers(self, vtl: Vtl, names: Iterable[int]) -> dict[Reg, int]:
        """Committed register values of ``vtl`` (commits pending updates first)."""
        self._prepare_inspection(vtl)
        st = self.state
        result: dict[Reg, int] = {}
        for name in names:
            if name not in SHARED_RESET and name not in PRIVATE_RESET:
                msg = f"vp {st.index} ({vtl.name}): register {name!r} is not held in a register file"
                raise ValueError(msg)
            result[Reg(name)] = st.read(vtl, name)
        return result

    def tdx_state(self, vtl: Vtl) -> TdxL2State:
        """The committed derived TDX L2 state of ``vtl``."""
        self._prepare_inspection(vtl)
        return self.state.tdx_state(vtl)

    def sint0_message(self, vtl: Vtl) -> InterceptMessage | None:
        """The message in ``vtl``'s SynIC SINT0 slot."""
        self._prepare_inspection(vtl)
        return self.state.vtls[vtl].sint0_message

    def vtl_control(self, vtl: Vtl) -> VtlControl:
        """``vtl``'s VP assist page VTL control block (what its guest would read there)."""
        self._prepare_inspection(vtl)
        state = self.state.vtls[vtl]
        return VtlControl(
            entry_reason=HvVtlEntryReason(state.entry_reason),
            vina_asserted=state.vina_asserted,
            return_rax=state.return_rax,
            return_rcx=state.return_rcx,
        )

    def statistics(self) -> VpStatistics:
        """Counters; does not commit."""
        st = self.state
        return VpStatistics(
            vp_index=st.index,
            active_vtl=st.active_vtl,
            running=st.running,
            failed=st.failure is not None,
            actions=self.actions,
            vtl_switches=self.vtl_switches,
            commits=sum(v.commits for v in st.vtls),
            vmcs_writes=sum(v.vmcs_writes for v in st.vtls),
            staged_updates=sum(v.staged_updates for v in st.vtls),
        )
