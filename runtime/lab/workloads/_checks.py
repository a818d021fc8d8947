"""Small helpers guest models use to check outcomes and to get back to VTL0 after a surprise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import ClearMessageSlot, HvStatus, HypercallResult, Vtl, VtlReturn, VtlSwitched

from ._guest import Unexpected

if TYPE_CHECKING:
    from protocol import Outcome

    from ._guest import Guest, Program

__all__ = ("expect_success", "expect_switch", "recover")


def expect_success(outcome: Outcome, what: str) -> HypercallResult:
    """``outcome`` as a successful ``HypercallResult``, else raise ``Unexpected``."""
    if type(outcome) is not HypercallResult or outcome.status != HvStatus.SUCCESS:
        msg = f"{what}: {outcome!r}"
        raise Unexpected(msg)
    return outcome


def expect_switch(outcome: Outcome, to_vtl: Vtl, what: str) -> None:
    """Raise ``Unexpected`` unless ``outcome`` is a switch to ``to_vtl``."""
    if type(outcome) is not VtlSwitched or outcome.to_vtl != to_vtl:
        msg = f"{what}: {outcome!r}"
        raise Unexpected(msg)


def recover(guest: Guest) -> Program[bool]:
    """After a surprise, let VTL1 free its SINT0 slot and return to VTL0; False if it cannot."""
    if guest.vp.active_vtl == Vtl.VTL0:
        return True
    yield guest, ClearMessageSlot()
    outcome = yield guest, VtlReturn(fast=True)
    return type(outcome) is VtlSwitched and outcome.to_vtl == Vtl.VTL0
