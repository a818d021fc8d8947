"""Pending events VTL1 injects into VTL0 through PendingEvent0 (DOMAIN 3.7, delivery side)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import ExceptionInjected, PendingExceptionEvent

if TYPE_CHECKING:
    from ._state import VpState

__all__ = ("combine_injection", "deliver_pending_event")

_PF: Final = 14
_DF: Final = 8
_CONTRIBUTORY: Final = frozenset({0, 10, 11, 12, 13, 21})


def combine_injection(
    current: tuple[int, int | None] | None, new: tuple[int, int | None]
) -> tuple[int, int | None]:
    """The event VTL0 receives when ``new`` meets an injection ``current`` still pending.

    Double fault (vector 8, error code 0) for #PF+#PF, #PF+contributory, or contributory +
    contributory (new vector <= 21); otherwise the new event replaces the pending one.

    In tdvsm an exception injected into VTL0 is delivered with the action that caused it, and
    VTL1 is only entered by VtlCall or an intercept, never while VTL0 still owes an injection;
    ``current`` is therefore always None at runtime today. The rule is kept here, tested on its
    own, for the interrupt-driven VTL1 entry that will make it reachable.
    """
    if current is None:
        return new
    v_cur, v_new = current[0], new[0]
    if v_new <= 21 and (
        (v_cur == _PF and (v_new == _PF or v_new in _CONTRIBUTORY))
        or (v_cur in _CONTRIBUTORY and v_new in _CONTRIBUTORY)
    ):
        return (_DF, 0)
    return new


def deliver_pending_event(vp: VpState) -> ExceptionInjected:
    """Deliver VTL1's stored PendingEvent0 as VTL0 is about to run, and clear it."""
    assert vp.vtl1 is not None
    assert vp.vtl1.pending_event is not None
    event = PendingExceptionEvent.from_bits(vp.vtl1.pending_event)
    vp.vtl1.pending_event = None
    error_code = event.error_code if event.deliver_error_code else None
    vector, error_code = combine_injection(None, (event.vector, error_code))
    return ExceptionInjected(vector=vector, error_code=error_code)
