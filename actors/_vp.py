"""The VP actor: one virtual processor's state and the step that runs one guest action on it.

The actor is driven by the runtime's scheduler, one message at a time: a guest action, an
inspection, or a control message from the partition supervisor. Control messages (context
loads from EnableVpVtl and StartVirtualProcessor) are applied before the VP next runs guest code,
as OpenHCL processes wake reasons before re-entering the guest. Before a VTL runs an action
its VM entry is checked (DOMAIN 7.2). A fatal condition (a context ``set_registers`` refuses,
a failed VM entry, Appendix B 13) raises ``PartitionFailed``: the scheduler ends the whole
partition, since OpenHCL aborts on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from protocol import (
    ClearMessageSlot,
    EnablePartitionVtl,
    EnableVpVtl,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvVtlEntryReason,
    Hypercall,
    InitialVpContext,
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
from protocol._base import hex_repr

from ._access import registers_roundtrip
from ._errors import PartitionFailed, VpNotRunning
from ._faults import FAULTS
from ._hypercalls import Handler, handle_hypercall
from ._instructions import (
    clear_message_slot,
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
from ._tdcalls import CONTEXT_LOAD
from ._validation import context_load_error

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
    ClearMessageSlot: clear_message_slot,
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

    def __repr__(self) -> str:
        return hex_repr(self)


class VpStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one VP actor; ``vmcs_reads``/``vmcs_writes`` are the modelled TDG.VP.RD/WR of
    both VTLs (DOMAIN 7.1)."""

    vp_index: int
    active_vtl: Vtl
    running: bool
    failed: bool
    actions: int
    vtl_switches: int
    commits: int
    vmcs_reads: int
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

    @property
    def pending_controls(self) -> tuple[VpControl, ...]:
        """The control messages waiting to be applied, oldest first."""
        return tuple(self._controls)

    def use_view(self, view: Callable[[], PartitionView]) -> None:
        """Read partition-wide state from ``view`` from now on (the runtime replays a journal so)."""
        self._view = view

    def apply_controls(self) -> None:
        """Apply pending control messages: VTL1's before VTL0's, else in arrival order.

        OpenHCL processes a VP's start/enable wake reasons VTL1 first, then VTL0, so a VTL0
        start that waits beside a VTL1 enable sees VTL1 enabled and lets VTL1 run first.
        """
        controls = sorted(self._controls, key=lambda control: control.vtl != Vtl.VTL1)
        self._controls.clear()
        for control in controls:
            if FAULTS.hook is not None:
                FAULTS.hook("controls")
            self._apply(control)

    def _apply(self, control: LoadVtlContext) -> None:
        st = self.state
        if st.failure:
            return
        context = control.context
        error = context_load_error(context.cr4, context.efer, st.config.vmx_cr4_fixed1)
        if error is not None:
            # OpenHCL unwraps set_x86_vp_context's result on the target VP (Appendix B 9):
            # with panic = 'abort' the partition is lost (DOMAIN 7.2).
            msg = f"vp {st.index} {control.vtl.name}: invalid initial context: TDX set_registers {error}"
            raise PartitionFailed(msg)
        if control.vtl == Vtl.VTL1 and st.vtl1 is None:
            st.vtl1 = GuestVsmVpState()
        # set_x86_vp_context: registers() + set_registers() (ET forced on CR0), set_pat,
        # activity/set_activity, charged to the loaded VTL (DOMAIN 7.1).
        registers_roundtrip(st, control.vtl, _context_values(context), CONTEXT_LOAD)
        if control.start:
            st.running = True
            if control.vtl == Vtl.VTL1 or st.vtl1 is not None:
                st.active_vtl = Vtl.VTL1  # VTL1 runs first where it is enabled

    # ---- guest actions --------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """The partition ended (DOMAIN 7.2): from now on every action and inspection raises."""
        if self.state.failure is None:
            self.state.failure = reason
        self._controls.clear()

    def check_runnable(self) -> None:
        """Raise unless this VP can run a guest action now."""
        st = self.state
        if st.failure:
            raise PartitionFailed(st.failure)
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
        state = st.vtls[vtl]
        if state.staged_updates:
            st.commit(vtl)  # commit point: VTL entry
        if state.entry_check:
            self._vm_entry(vtl)
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

    def _vm_entry(self, vtl: Vtl) -> None:
        """TDG.VP.ENTER of ``vtl``: its guest-state checks (DOMAIN 7.2); a failure is fatal."""
        problems = self.state.entry_failures(vtl)
        if problems:
            msg = (
                f"vp {self.state.index} {vtl.name}: VM entry failed (TDG.VP.ENTER: BAD_GUEST_STATE, "
                f"handle_vm_enter_failed -> fatal_error): {'; '.join(problems)}"
            )
            raise PartitionFailed(msg)

    # ---- inspection (simulator-side, never guest-visible) -----------------------------------------

    def _prepare_inspection(self, vtl: Vtl) -> None:
        if self._controls:
            self.apply_controls()
        if self.state.failure:
            raise PartitionFailed(self.state.failure)
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
        """The message in ``vtl``'s SynIC SINT0 slot, with its header's MessagePending flag."""
        self._prepare_inspection(vtl)
        state = self.state.vtls[vtl]
        message = state.sint0_message
        if message is not None and state.sint0_pending:
            return msgspec.structs.replace(message, message_pending=True)
        return message

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
            vmcs_reads=sum(v.vmcs_reads for v in st.vtls),
            vmcs_writes=sum(v.vmcs_writes for v in st.vtls),
            staged_updates=sum(v.staged_updates for v in st.vtls),
        )


def _context_values(context: InitialVpContext) -> tuple[tuple[int, int], ...]:
    """The registers an initial context sets (InitialVpContextX64), PAT included."""
    return (
        (Reg.RIP, context.rip),
        (Reg.RSP, context.rsp),
        (Reg.RFLAGS, context.rflags),
        (Reg.CS, context.cs),
        (Reg.DS, context.ds),
        (Reg.ES, context.es),
        (Reg.FS, context.fs),
        (Reg.GS, context.gs),
        (Reg.SS, context.ss),
        (Reg.TR, context.tr),
        (Reg.LDTR, context.ldtr),
        (Reg.IDTR, context.idtr),
        (Reg.GDTR, context.gdtr),
        (Reg.CR3, context.cr3),
        (Reg.CR4, context.cr4),
        (Reg.EFER, context.efer),
        (Reg.CR0, context.cr0),
        (Reg.PAT, context.msr_cr_pat),
    )
