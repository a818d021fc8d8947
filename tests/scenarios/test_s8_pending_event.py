"""DOMAIN 6, S8: VTL1 injects an exception into VTL0 through PendingEvent0 (DOMAIN 2.4, 3.7).

VTL1 writes HvX64PendingExceptionEvent (target VTL0); the event is delivered the next time VTL0
is about to run: VTL0's next action is not executed, the exception is injected instead. Events
that are not exceptions, vectors outside the allowed set and error codes on vectors that have
none are refused (InvalidRegisterValue); the register exists only for a lower target
(InvalidParameter otherwise); EventPending = 0 clears a stored event.

The double-fault rule (#PF then #GP -> #DF) needs an injection VTL0 still owes when VTL1's event
is delivered; in tdvsm an injection is delivered with the action that caused it, so the rule is
checked on ``actors._pending.combine_injection`` directly (see its docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest

from actors._pending import combine_injection
from protocol import (
    Completed,
    ExceptionInjected,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    PendingExceptionEvent,
    SetVpRegisters,
    Vtl,
    VtlCall,
    VtlSwitched,
    Wrmsr,
)
from protocol._x86 import Msr
from tests.guest import checked_runtime, new_partition
from tests.scenarios._bringup import enter_vtl1, ok, status
from tests.scenarios._secure import reg, regs, return_to_vtl0, set_regs

if TYPE_CHECKING:
    from runtime import Vp

_VALID_VECTORS: Final = (0, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 21)
_ERROR_CODE_VECTORS: Final = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
_STAR: Final = 0x0023_0010_0000_0000
_GP0: Final = ExceptionInjected(vector=13, error_code=0)


def _event(
    vector: int,
    *,
    error_code: int | None = None,
    pending: bool = True,
    event_type: int = 0,
    parameter: int = 0,
) -> int:
    """A PendingEvent0 value (HvX64PendingExceptionEvent, 128 bits)."""
    return PendingExceptionEvent(
        event_pending=pending,
        event_type=event_type,
        deliver_error_code=error_code is not None,
        vector=vector,
        error_code=error_code or 0,
        exception_parameter=parameter,
    ).bits


async def _inject(vp: Vp, value: int, target_vtl: Vtl | None = Vtl.VTL0) -> object:
    return await vp.execute(SetVpRegisters(registers=[reg(Reg.PENDING_EVENT0, value)], target_vtl=target_vtl))


async def _vtl0_star_write(vp: Vp, expected: object) -> None:
    """VTL0 runs WRMSR STAR: ``expected``; an injected exception means the WRMSR did not run."""
    before = await regs(vp, Vtl.VTL0, Reg.STAR, Reg.RIP)
    assert await vp.execute(Wrmsr(msr=Msr.STAR, value=_STAR)) == expected
    after = await regs(vp, Vtl.VTL0, Reg.STAR, Reg.RIP)
    if isinstance(expected, ExceptionInjected):
        assert after == before
    else:
        assert after == {Reg.STAR: _STAR, Reg.RIP: before[Reg.RIP] + 2}


async def _call(vp: Vp) -> None:
    assert await vp.execute(VtlCall()) == VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)


@pytest.mark.parametrize("commit_policy", ["batched", "eager"])
async def test_gp_is_delivered_instead_of_vtl0s_next_action(commit_policy: str) -> None:
    """PendingEvent0 = #GP(0): Success; after VtlReturn VTL0's next action gets #GP(0) and does not run."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        value = _event(13, error_code=0)
        assert value == 1 | 13 << 16 | 1 << 8  # pending | vector 13 | deliver_error_code | error 0
        assert await _inject(vp, value) == ok(1)
        await return_to_vtl0(vp)
        await _vtl0_star_write(vp, _GP0)
        # Delivered once: the same WRMSR now runs.
        await _vtl0_star_write(vp, Completed())


@pytest.mark.parametrize("commit_policy", ["batched", "eager"])
async def test_every_allowed_event_is_delivered(commit_policy: str) -> None:
    """Each allowed vector, with an error code where one is allowed, reaches VTL0 exactly as written."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        for vector in _VALID_VECTORS:
            codes: list[int | None] = [None, 0x1234] if vector in _ERROR_CODE_VECTORS else [None]
            for code in codes:
                assert await _inject(vp, _event(vector, error_code=code, parameter=0xABCD)) == ok(1)
                await return_to_vtl0(vp)
                await _vtl0_star_write(vp, ExceptionInjected(vector=vector, error_code=code))
                await _call(vp)


@pytest.mark.parametrize("commit_policy", ["batched", "eager"])
async def test_event_is_delivered_to_any_next_action(commit_policy: str) -> None:
    """A hypercall is not run either: VTL0's GetVpRegisters gets the #PF, no result, no RIP advance."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        assert await _inject(vp, _event(14, error_code=0x2)) == ok(1)
        await return_to_vtl0(vp)
        before = await regs(vp, Vtl.VTL0, Reg.RAX, Reg.RDX, Reg.RIP)
        out = await vp.execute(GetVpRegisters(names=[Reg.VSM_VP_STATUS]))
        assert out == ExceptionInjected(vector=14, error_code=0x2)
        assert await regs(vp, Vtl.VTL0, Reg.RAX, Reg.RDX, Reg.RIP) == before


def _invalid_events() -> list[object]:
    """Disallowed vectors, error codes where none is allowed, and every non-exception event type."""
    cases: list[object] = [
        pytest.param(_event(vector), id=f"vector-{vector}")
        for vector in (2, 9, 15, 20, 22, 31, 32, 0xFF, 0xFFFF)
    ]
    cases += [
        pytest.param(_event(vector, error_code=0), id=f"vector-{vector}-with-error-code")
        for vector in _VALID_VECTORS
        if vector not in _ERROR_CODE_VECTORS
    ]
    cases += [pytest.param(_event(13, event_type=t), id=f"event-type-{t}") for t in range(1, 8)]
    return cases


@pytest.mark.parametrize("value", _invalid_events())
async def test_invalid_events_are_refused(value: int) -> None:
    """NMI and other disallowed vectors, an error code on 6 (#UD) etc., a non-exception type: refused."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await _inject(vp, value) == status(HvStatus.INVALID_REGISTER_VALUE)
        await return_to_vtl0(vp)
        await _vtl0_star_write(vp, Completed())  # nothing was stored


async def test_nmi_and_ud_with_error_code_and_event_type_1() -> None:
    """The S8 text's cases: vector 2, vector 6 with an error code, event_type 1 -> InvalidRegisterValue."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        for value in (_event(2), _event(6, error_code=0), _event(13, error_code=0, event_type=1)):
            assert await _inject(vp, value) == status(HvStatus.INVALID_REGISTER_VALUE)


async def test_reserved_bits_and_missing_error_code_are_accepted() -> None:
    """Reserved bits 4-7 and 9-15 are not checked; #GP without an error code is allowed."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        assert await _inject(vp, _event(13) | 0xF0 | 0xFE00) == ok(1)
        await return_to_vtl0(vp)
        await _vtl0_star_write(vp, ExceptionInjected(vector=13, error_code=None))


async def test_wrong_targets() -> None:
    """Target VTL1 (or VTL1's default) -> InvalidParameter; VTL0 injecting into itself -> InvalidParameter."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        value = _event(13, error_code=0)
        assert await _inject(vp, value, Vtl.VTL1) == status(HvStatus.INVALID_PARAMETER)
        assert await _inject(vp, value, None) == status(HvStatus.INVALID_PARAMETER)
        await return_to_vtl0(vp)
        assert await _inject(vp, value, None) == status(HvStatus.INVALID_PARAMETER)
        assert await _inject(vp, value, Vtl.VTL0) == status(HvStatus.INVALID_PARAMETER)
        assert await _inject(vp, value, Vtl.VTL1) == status(HvStatus.ACCESS_DENIED)  # target > caller
        await _vtl0_star_write(vp, Completed())


async def test_pending_event_is_write_only() -> None:
    """GetVpRegisters(PendingEvent0) from VTL1 (target VTL0) is InvalidParameter."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt))
        out = await vp.execute(GetVpRegisters(names=[Reg.PENDING_EVENT0], target_vtl=Vtl.VTL0))
        assert out == status(HvStatus.INVALID_PARAMETER)


@pytest.mark.parametrize("commit_policy", ["batched", "eager"])
@pytest.mark.parametrize(
    "clear", [0, _event(13, error_code=0, pending=False)], ids=["zero", "pending-bit-clear"]
)
async def test_event_pending_zero_clears_a_stored_event(commit_policy: str, clear: int) -> None:
    """EventPending=0 (whatever the other bits) succeeds and removes the stored event."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        assert await _inject(vp, _event(13, error_code=0)) == ok(1)
        assert await _inject(vp, clear) == ok(1)
        await return_to_vtl0(vp)
        await _vtl0_star_write(vp, Completed())


@pytest.mark.parametrize("commit_policy", ["batched", "eager"])
async def test_later_event_replaces_the_stored_one(commit_policy: str) -> None:
    """Two writes before VTL0 runs: only the second event is delivered; a refused one keeps the first."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        assert await _inject(vp, _event(13, error_code=0)) == ok(1)
        assert await _inject(vp, _event(6)) == ok(1)
        assert await _inject(vp, _event(2)) == status(HvStatus.INVALID_REGISTER_VALUE)
        await return_to_vtl0(vp)
        await _vtl0_star_write(vp, ExceptionInjected(vector=6))
        await _vtl0_star_write(vp, Completed())


@pytest.mark.parametrize("commit_policy", ["batched", "eager"])
async def test_event_in_a_batch_after_a_failing_element(commit_policy: str) -> None:
    """[PendingEvent0, Rax]: the event (element 0) stays applied although element 1 fails (reps 1)."""
    async with checked_runtime() as rt:
        vp = await enter_vtl1(await new_partition(rt, commit_policy=commit_policy))
        out = await set_regs(
            vp, (Reg.PENDING_EVENT0, _event(12, error_code=7)), (Reg.RAX, 1), target_vtl=Vtl.VTL0
        )
        assert out == status(HvStatus.INVALID_PARAMETER, 1)
        await return_to_vtl0(vp)
        await _vtl0_star_write(vp, ExceptionInjected(vector=12, error_code=7))


# ---- the double-fault rule, on combine_injection ---------------------------------------------------

_PF: Final = 14
_CONTRIBUTORY: Final = frozenset({0, 10, 11, 12, 13, 21})


def _class(vector: int) -> str:
    if vector == _PF:
        return "page-fault"
    return "contributory" if vector in _CONTRIBUTORY else "benign"


#: Intel SDM Vol. 3 Table 6-5 "Conditions for Generating a Double Fault", as DOMAIN 3.7 restates it:
#: (first event's class, second event's class) -> double fault?
_DOUBLE_FAULT_TABLE: Final = {
    ("benign", "benign"): False,
    ("benign", "contributory"): False,
    ("benign", "page-fault"): False,
    ("contributory", "benign"): False,
    ("contributory", "contributory"): True,
    ("contributory", "page-fault"): False,
    ("page-fault", "benign"): False,
    ("page-fault", "contributory"): True,
    ("page-fault", "page-fault"): True,
}


def test_page_fault_then_general_protection_is_double_fault() -> None:
    """VTL0 owes a #PF and VTL1 injects #GP: VTL0 receives #DF with error code 0."""
    assert combine_injection((14, 0x2), (13, 0)) == (8, 0)


def test_nothing_pending_delivers_the_new_event() -> None:
    """With no injection pending the new event goes through unchanged."""
    for vector in range(32):
        assert combine_injection(None, (vector, 5)) == (vector, 5)
        assert combine_injection(None, (vector, None)) == (vector, None)


def test_double_fault_table() -> None:
    """Every (pending, new) pair of vectors 0-31: #DF(0) exactly where the SDM table says, else new."""
    for current in range(32):
        for new in range(32):
            pending = (current, 0x11)
            event = (new, 0x22 if new in _ERROR_CODE_VECTORS else None)
            double = new <= 21 and _DOUBLE_FAULT_TABLE[_class(current), _class(new)]
            expected = (8, 0) if double else event
            assert combine_injection(pending, event) == expected, (current, new)


def test_vectors_above_21_are_never_combined() -> None:
    """A new vector above 21 replaces even a pending #PF (the rule only covers vectors <= 21)."""
    for new in (22, 31, 32, 0xFF):
        assert combine_injection((_PF, 0), (new, None)) == (new, None)
        assert combine_injection((13, 0), (new, None)) == (new, None)
