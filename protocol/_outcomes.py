"""Outcomes of guest actions, and the intercept messages VTL1 receives in its SINT0 slot."""

from __future__ import annotations

from typing import TypeAlias

from ._base import U8, U16, U32, U64, U128, Msg, check_width
from ._hv import HvStatus, Vtl

__all__ = (
    "Completed",
    "ExceptionInjected",
    "HypercallResult",
    "InterceptDropped",
    "InterceptMessage",
    "InterceptPosted",
    "Intercepted",
    "Outcome",
    "VtlSwitched",
)


class HypercallResult(Msg, tag=True, frozen=True, kw_only=True):
    """A hypercall that returned a status; ``values`` is GetVpRegisters' completed prefix."""

    status: HvStatus
    reps_completed: U16 = 0
    values: list[U128] = []

    def __post_init__(self) -> None:
        for value in self.values:
            check_width("HypercallResult", "values[]", value, 128)


class ExceptionInjected(Msg, tag=True, frozen=True, kw_only=True):
    """An exception injected into the acting VTL (#UD, #GP ...); nothing else changed."""

    vector: U8
    error_code: U32 | None = None


class VtlSwitched(Msg, tag=True, frozen=True, kw_only=True):
    """A VTL call (to VTL1, entry reason 1) or a VTL return (to VTL0)."""

    to_vtl: Vtl
    entry_reason: U32 = 0


class InterceptMessage(Msg, tag=True, frozen=True, kw_only=True):
    """A secure intercept message (HvX64InterceptMessageHeader plus its payload).

    ``rip`` is the faulting instruction (not advanced). Per type, ``register_name`` and
    ``value`` (register intercept), ``msr``, ``rax`` and ``rdx`` (MSR intercept) or ``gpa``
    (GPA intercept) are set; the others are None. ``message_pending`` is the header's
    MessagePending flag: set in the slot when a later message found it full (DOMAIN 7.3).
    """

    message_type: U32
    vp_index: U32
    instruction_length: U8
    access_type: U8
    rip: U64
    rflags: U64
    execution_state: U16 = 0
    register_name: U32 | None = None
    value: U128 | None = None
    msr: U32 | None = None
    rax: U64 | None = None
    rdx: U64 | None = None
    gpa: U64 | None = None
    message_pending: bool = False

    def __post_init__(self) -> None:
        for name in ("rip", "rflags", "rax", "rdx", "gpa"):
            value = getattr(self, name)
            if value is not None:
                check_width("InterceptMessage", name, value, 64)
        if self.value is not None:
            check_width("InterceptMessage", "value", self.value, 128)


class Intercepted(Msg, tag=True, frozen=True, kw_only=True):
    """A VTL0 action hit a secure intercept: not applied; VTL1 is active with the message."""

    message: InterceptMessage


class InterceptPosted(Msg, tag=True, frozen=True, kw_only=True):
    """A VTL0 action hit a secure intercept and the message is in VTL1's SINT0 slot, but SINT0
    polls (DOMAIN 7.3): no interrupt, so VTL1 is not entered; VTL0 stays active and the action
    did not complete (it exits again when re-executed)."""

    message: InterceptMessage


class InterceptDropped(Msg, tag=True, frozen=True, kw_only=True):
    """A VTL0 action exited for a secure intercept, but VTL1's SINT0 could not take the message.

    OpenHCL drops the message and VTL0 re-executes the instruction (it exits again): the action
    did not complete and nothing changed. ``reason`` says why the slot refused it.
    """

    message: InterceptMessage
    reason: str


class Completed(Msg, tag=True, frozen=True, kw_only=True):
    """An instruction completed; ``value`` is what an Rdmsr read."""

    value: U64 | None = None

    def __post_init__(self) -> None:
        if self.value is not None and self.value >> 64:
            check_width("Completed", "value", self.value, 64)


Outcome: TypeAlias = (
    HypercallResult
    | ExceptionInjected
    | VtlSwitched
    | Intercepted
    | InterceptPosted
    | InterceptDropped
    | Completed
)
