"""Hypercall handlers of one VP: (VP state, partition view, action) -> outcome (DOMAIN 3).

Handlers are synchronous. The few that change partition-wide state are generators: they yield a
``SupervisorRequest`` and are resumed with the supervisor's status, so the VP actor reaches the
supervisor only by message and the handler still reads top to bottom.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Final, TypeAlias

from protocol import (
    ACTION_HYPERCALL_CODES,
    HV_PARTITION_ID_SELF,
    HV_VP_INDEX_SELF,
    EnablePartitionVtl,
    EnableVpVtl,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HvVtlEntryReason,
    Hypercall,
    HypercallCode,
    HypercallResult,
    ModifyVtlProtectionMask,
    Outcome,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
)
from protocol._x86 import CR0_PE, EFER_LMA, VMCALL_LENGTH, ExceptionVector

from ._access import get_vp_register, registers_roundtrip, set_vp_register
from ._errors import UnsupportedAction
from ._vsm import (
    EnablePartitionVtlRequest,
    EnableVpVtlRequest,
    ModifyProtectionsRequest,
    PartitionView,
    StartVpRequest,
    SupervisorReply,
    SupervisorRequest,
)

if TYPE_CHECKING:
    from ._state import VpState

__all__ = (
    "MAX_GET_VP_REGISTERS",
    "MAX_PROTECTION_GPNS",
    "MAX_SET_VP_REGISTERS",
    "Handler",
    "Pending",
    "handle_hypercall",
    "long_mode",
)

ViewSource: TypeAlias = Callable[[], PartitionView]
Pending: TypeAlias = Generator[SupervisorRequest, SupervisorReply, HypercallResult]
#: What a VP step returns: an outcome, or a hypercall waiting for the supervisor.
Handler: TypeAlias = Outcome | Pending

#: Most elements whose input and output each fit one 4 KiB page (DOMAIN 7.4, HC ``support.rs``
#: ``HypercallParseError::Straddle``): SetVpRegisters 16 + 32 n, GetVpRegisters 16 + 4 n in and
#: 16 n out, ModifyVtlProtectionMask 16 + 8 n. More gives InvalidHypercallInput, 0 reps.
MAX_SET_VP_REGISTERS: Final = (4096 - 16) // 32
MAX_GET_VP_REGISTERS: Final = 4096 // 16
MAX_PROTECTION_GPNS: Final = (4096 - 16) // 8
_UD: Final = ExceptionInjected(vector=ExceptionVector.UD)
_GP0: Final = ExceptionInjected(vector=ExceptionVector.GP, error_code=0)
_VINA_AUTO_RESET: Final = 1 << 9


def long_mode(vp: VpState, vtl: int) -> bool:
    """The 64-bit hypercall ABI: CR0.PE and EFER.LMA of ``vtl`` (TDX ``long_mode``)."""
    return bool(vp.read(vtl, Reg.CR0) & CR0_PE and vp.read(vtl, Reg.EFER) & EFER_LMA)


def _complete(vp: VpState, caller: Vtl, result: HypercallResult) -> HypercallResult:
    """Write the hypercall result (RAX, or EDX:EAX in 32-bit mode) and advance RIP by 3."""
    output = int(result.status) | (result.reps_completed << 32)
    if long_mode(vp, caller):
        vp.stage(caller, Reg.RAX, output)
    else:
        vp.stage(caller, Reg.RAX, (vp.read(caller, Reg.RAX) & ~0xFFFF_FFFF) | (output & 0xFFFF_FFFF))
        vp.stage(caller, Reg.RDX, (vp.read(caller, Reg.RDX) & ~0xFFFF_FFFF) | (output >> 32))
    vp.advance_rip(caller, VMCALL_LENGTH)
    return result


def _status(status: HvStatus, reps: int = 0) -> HypercallResult:
    return HypercallResult(status=status, reps_completed=reps)


def _target_vtl(caller: Vtl, target_vtl: int | None) -> int:
    return caller if target_vtl is None else target_vtl


# ---- register hypercalls ------------------------------------------------------------------------


def _register_call_target(
    vp: VpState,
    caller: Vtl,
    action: GetVpRegisters | SetVpRegisters,
    count: int,
    wrong_vp: HvStatus,
    page_limit: int,
) -> Vtl | HvStatus:
    """The checks before the first element (DOMAIN 3.1 steps 1-4, 3.12 control validation).

    Returns the target VTL, or the status that refuses the whole call with 0 reps. A wrong VP
    index gives ``wrong_vp``: AccessDenied for get, InvalidVpIndex for set (quirk 1). More than
    ``page_limit`` elements straddle a page (DOMAIN 7.4): refused before any element runs.
    """
    if count == 0 or action.rep_start >= count or count > page_limit:
        return HvStatus.INVALID_HYPERCALL_INPUT
    target = _target_vtl(caller, action.target_vtl)
    if target > Vtl.VTL2:
        return HvStatus.INVALID_PARAMETER
    if action.partition_id != HV_PARTITION_ID_SELF:
        return HvStatus.ACCESS_DENIED
    if action.vp_index not in (HV_VP_INDEX_SELF, vp.index):
        return wrong_vp
    if target > caller:
        return HvStatus.ACCESS_DENIED
    return Vtl(target)


def get_vp_registers(
    vp: VpState, view: PartitionView, caller: Vtl, action: GetVpRegisters
) -> HypercallResult:
    """HvCallGetVpRegisters (DOMAIN 3.1, 3.12): values of the completed prefix are returned."""
    count = len(action.names)
    target_vtl = _register_call_target(
        vp, caller, action, count, HvStatus.ACCESS_DENIED, MAX_GET_VP_REGISTERS
    )
    if isinstance(target_vtl, HvStatus):
        return _status(target_vtl)
    values: list[int] = []
    for i in range(action.rep_start, count):
        status, value = get_vp_register(vp, view, caller, target_vtl, action.names[i])
        if status:
            return HypercallResult(status=status, reps_completed=i, values=values)
        values.append(value)
    return HypercallResult(status=HvStatus.SUCCESS, reps_completed=count, values=values)


def set_vp_registers(vp: VpState, view: ViewSource, caller: Vtl, action: SetVpRegisters) -> Pending:
    """HvCallSetVpRegisters (DOMAIN 3.1, 3.2, 3.12): the applied prefix stays applied."""
    count = len(action.registers)
    target_vtl = _register_call_target(
        vp, caller, action, count, HvStatus.INVALID_VP_INDEX, MAX_SET_VP_REGISTERS
    )
    if isinstance(target_vtl, HvStatus):
        return _status(target_vtl)
    for i in range(action.rep_start, count):
        element = action.registers[i]
        outcome = set_vp_register(vp, view(), caller, target_vtl, element.name, element.value)
        status = outcome if isinstance(outcome, HvStatus) else _only_status((yield outcome))
        if status:
            return _status(status, i)
    return _status(HvStatus.SUCCESS, count)


def _only_status(reply: SupervisorReply) -> HvStatus:
    return reply[0] if isinstance(reply, tuple) else reply


# ---- partition-wide hypercalls: the supervisor decides -----------------------------------------


def _ask(request: SupervisorRequest) -> Pending:
    """Send one request to the supervisor and turn its reply into the hypercall's result."""
    reply = yield request
    if isinstance(reply, tuple):
        return _status(*reply)
    return _status(reply)


def enable_partition_vtl(vp: VpState, caller: Vtl, action: EnablePartitionVtl) -> Pending:
    """HvCallEnablePartitionVtl (DOMAIN 3.3)."""
    return _ask(EnablePartitionVtlRequest(vp_index=vp.index, caller=caller, action=action))


def enable_vp_vtl(vp: VpState, caller: Vtl, action: EnableVpVtl) -> Pending:
    """HvCallEnableVpVtl: the context loads on the target VP before it next runs."""
    return _ask(EnableVpVtlRequest(vp_index=vp.index, caller=caller, action=action))


def start_virtual_processor(vp: VpState, caller: Vtl, action: StartVirtualProcessor) -> Pending:
    """HvCallStartVirtualProcessor: the target loads the context and starts."""
    return _ask(StartVpRequest(vp_index=vp.index, caller=caller, action=action))


def modify_vtl_protection_mask(vp: VpState, caller: Vtl, action: ModifyVtlProtectionMask) -> Pending:
    """HvCallModifyVtlProtectionMask (DOMAIN 3.6): partition-wide VTL0 page permissions."""
    return _ask(ModifyProtectionsRequest(vp_index=vp.index, caller=caller, action=action))


# ---- VTL call and return (DOMAIN 3.7) -----------------------------------------------------------


def vtl_call(vp: VpState, caller: Vtl, action: VtlCall) -> VtlSwitched | ExceptionInjected:
    """HvCallVtlCall: #UD unless plain control, input 0, from VTL0, with VTL1 on this VP."""
    if action.control_flags or action.input or caller != Vtl.VTL0 or vp.vtl1 is None:
        return _UD
    vp.advance_rip(Vtl.VTL0, VMCALL_LENGTH)
    vp.active_vtl = Vtl.VTL1
    vp.vtls[Vtl.VTL1].entry_reason = HvVtlEntryReason.VTL_CALL
    return VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=HvVtlEntryReason.VTL_CALL)


def vtl_return(vp: VpState, caller: Vtl, action: VtlReturn) -> VtlSwitched | ExceptionInjected:
    """HvCallVtlReturn: #UD unless plain control, input in {0, 1}, from VTL1."""
    rax = action.effective_input
    if action.control_flags or rax >> 1 or caller == Vtl.VTL0:
        return _UD
    vtl1 = vp.vtls[Vtl.VTL1]
    vp.advance_rip(Vtl.VTL1, VMCALL_LENGTH)
    if vp.vtl1 is not None:
        vp.vtl1.tlb_locked = False  # every TLB lock VTL1 holds on this VP is released
    if vp.read(Vtl.VTL1, Reg.VSM_VINA) & _VINA_AUTO_RESET:
        # OpenHCL resets VinaAsserted on return, not on next entry (Appendix B item 10).
        vtl1.vina_asserted = False
    vp.active_vtl = Vtl.VTL0
    if not rax & 1:
        # A normal return loads VTL0's RAX/RCX through registers() + set_registers() (DOMAIN 7.1).
        registers_roundtrip(vp, Vtl.VTL0, ((Reg.RAX, vtl1.return_rax), (Reg.RCX, vtl1.return_rcx)))
    return VtlSwitched(to_vtl=Vtl.VTL0, entry_reason=HvVtlEntryReason.RESERVED)


# ---- dispatch -----------------------------------------------------------------------------------

_DISPATCHED: Final = frozenset(HypercallCode)
_ACTION_CODES: Final = ACTION_HYPERCALL_CODES


def _with_completion(vp: VpState, caller: Vtl, pending: Pending) -> Pending:
    result = yield from pending
    return _complete(vp, caller, result)


def handle_hypercall(
    vp: VpState,
    view: ViewSource,
    action: EnablePartitionVtl
    | EnableVpVtl
    | StartVirtualProcessor
    | GetVpRegisters
    | SetVpRegisters
    | VtlCall
    | VtlReturn
    | ModifyVtlProtectionMask
    | Hypercall,
) -> Handler:
    """Run one hypercall in the VP's active VTL (VMCALL at CPL > 0 gets #GP first)."""
    caller = vp.active_vtl
    if vp.cpl(caller) != 0:
        return _GP0
    match action:
        case GetVpRegisters():
            return _complete(vp, caller, get_vp_registers(vp, view(), caller, action))
        case SetVpRegisters():
            return _with_completion(vp, caller, set_vp_registers(vp, view, caller, action))
        case VtlCall():
            return vtl_call(vp, caller, action)
        case VtlReturn():
            return vtl_return(vp, caller, action)
        case EnablePartitionVtl():
            return _with_completion(vp, caller, enable_partition_vtl(vp, caller, action))
        case EnableVpVtl():
            return _with_completion(vp, caller, enable_vp_vtl(vp, caller, action))
        case StartVirtualProcessor():
            return _with_completion(vp, caller, start_virtual_processor(vp, caller, action))
        case ModifyVtlProtectionMask():
            if len(action.gpns) > MAX_PROTECTION_GPNS:  # DOMAIN 7.4: the input straddles a page
                return _complete(vp, caller, _status(HvStatus.INVALID_HYPERCALL_INPUT))
            return _with_completion(vp, caller, modify_vtl_protection_mask(vp, caller, action))
        case Hypercall():
            if action.code not in _DISPATCHED:
                return _complete(vp, caller, _status(HvStatus.INVALID_HYPERCALL_CODE))
            code = HypercallCode(action.code)
            if code in _ACTION_CODES:
                where = f"vp {vp.index} ({caller.name})"
                msg = f"Hypercall(code={code.name}) on {where}: use the {_ACTION_CODES[code]} action"
                raise ValueError(msg)
            msg = f"{code.name} is dispatched by OpenHCL but not modelled (vp {vp.index}, {caller.name})"
            raise UnsupportedAction(msg)
