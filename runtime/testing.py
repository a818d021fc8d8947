"""Public helpers for tests, examples and guest models: contexts, readable outcomes, timelines.

The contexts here are what a 64-bit kernel or secure kernel hands to EnableVpVtl and
StartVirtualProcessor: flat CPL-0 segments (or a CPL-3 stack for user mode), paging on, EFER with
LME, LMA, NXE and SCE. EFER.LMA is supplied as a guest would; tdvsm derives it anyway.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from actors import FAULT_POINTS, FAULTS
from protocol import (
    ExceptionInjected,
    HvRegisterName,
    HvStatus,
    HypercallResult,
    InitialVpContext,
    InterceptDropped,
    Intercepted,
    InterceptPosted,
    Vtl,
    VtlSwitched,
)
from protocol._x86 import (
    CR0_ET,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    DEFAULT_PAT,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EFER_SCE,
    RFLAGS_RESERVED_1,
    segment,
    table,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from actors import VpState
    from protocol import Action, Outcome

    from ._host import Vp

__all__ = (
    "FAULT_POINTS",
    "CODE64",
    "DATA64",
    "LONG_MODE_CR0",
    "LONG_MODE_CR4",
    "TSS64",
    "USER_DATA64",
    "InjectedCrash",
    "Timeline",
    "crash_at",
    "peek",
    "describe",
    "long_mode_context",
)

#: Flat 64-bit code and data segments (DPL 0), a user-mode (DPL 3) stack segment and a TSS.
CODE64: Final = segment(selector=0x08, limit=0xFFFF_FFFF, attributes=0xA09B)
DATA64: Final = segment(selector=0x10, limit=0xFFFF_FFFF, attributes=0xC093)
USER_DATA64: Final = segment(selector=0x2B, limit=0xFFFF_FFFF, attributes=0xC0F3)
TSS64: Final = segment(selector=0x18, limit=0x67, attributes=0x8B)
#: CR0 and CR4 of a 64-bit kernel.
LONG_MODE_CR0: Final = CR0_PE | CR0_PG | CR0_NE | CR0_ET | CR0_WP
LONG_MODE_CR4: Final = CR4_PAE


def long_mode_context(rip: int = 0x1000, *, rsp: int = 0x8000, user: bool = False) -> InitialVpContext:
    """A 64-bit initial VP context; with ``user`` the stack segment has DPL 3 (CPL 3)."""
    return InitialVpContext(
        rip=rip,
        rsp=rsp,
        rflags=RFLAGS_RESERVED_1,
        cs=CODE64,
        ds=DATA64,
        es=DATA64,
        fs=DATA64,
        gs=DATA64,
        ss=USER_DATA64 if user else DATA64,
        tr=TSS64,
        ldtr=segment(attributes=0x82),
        idtr=table(base=0x2000, limit=0xFFF),
        gdtr=table(base=0x3000, limit=0x37),
        efer=EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE,
        cr0=LONG_MODE_CR0,
        cr3=0x10_0000,
        cr4=LONG_MODE_CR4,
        msr_cr_pat=DEFAULT_PAT,
    )


#: x86 exception mnemonics by vector (those a refused guest action can raise, and a few more).
_EXCEPTIONS: Final = {0: "#DE", 6: "#UD", 8: "#DF", 13: "#GP", 14: "#PF", 18: "#MC"}


def _register(name: int) -> str:
    try:
        return f"{HvRegisterName(name).name} ({name:#x})"
    except ValueError:
        return f"{name:#x}"


def describe(outcome: Outcome) -> str:
    """One readable phrase for an outcome (for timelines and logs); register values in hex."""
    if isinstance(outcome, HypercallResult):
        text = f"{HvStatus(outcome.status).name} (reps {outcome.reps_completed})"
        if outcome.values:
            text += " values " + ", ".join(f"{v:#x}" for v in outcome.values)
        return text
    if isinstance(outcome, VtlSwitched):
        return f"now in {Vtl(outcome.to_vtl).name} (entry reason {outcome.entry_reason})"
    if isinstance(outcome, Intercepted | InterceptPosted | InterceptDropped):
        m = outcome.message
        detail = (
            f"register {_register(m.register_name)} value {m.value or 0:#x}"
            if m.register_name is not None
            else f"msr {m.msr:#x}"
            if m.msr is not None
            else f"gpa {m.gpa or 0:#x}"
        )
        if isinstance(outcome, Intercepted):
            head = "INTERCEPTED"
        elif isinstance(outcome, InterceptPosted):
            head = "POSTED (SINT0 polls: VTL1 not entered)"
        else:
            head = f"DROPPED ({outcome.reason})"
        return f"{head}: message {m.message_type:#x} {detail} rip {m.rip:#x} length {m.instruction_length}"
    if isinstance(outcome, ExceptionInjected):
        name = _EXCEPTIONS.get(outcome.vector, "")
        code = "" if outcome.error_code is None else f", error code {outcome.error_code:#x}"
        return f"exception {name}{' ' if name else ''}(vector {outcome.vector}{code}) injected"
    return "completed" if outcome.value is None else f"completed, value {outcome.value:#x}"


class Timeline:
    """Runs actions and writes one numbered line per step: VP, VTL, label, outcome.

    Lines go to ``out`` (``print`` by default; a list's ``append`` collects them).
    """

    def __init__(self, out: Callable[[str], object] = print) -> None:
        self._steps = itertools.count(1)
        self._out = out

    async def step(self, vp: Vp, label: str, action: Action, *, expect: HvStatus | None = None) -> Outcome:
        """Execute ``action`` on ``vp`` and print it; with ``expect``, check the status.

        Raises:
            AssertionError: the outcome is not a HypercallResult with status ``expect``.
        """
        vtl = vp.active_vtl.name
        outcome = await vp.execute(action)
        self._out(f"{next(self._steps):>2}. VP{vp.index} {vtl}  {label:<58} -> {describe(outcome)}")
        if expect is not None and not (isinstance(outcome, HypercallResult) and outcome.status == expect):
            msg = f"step {label!r}: expected {expect.name}, got {outcome!r}"
            raise AssertionError(msg)
        return outcome


class InjectedCrash(Exception):  # named for what it is, not "...Error"
    """Raised at a fault point by ``crash_at``: stands for a bug inside the simulator."""


@contextmanager
def crash_at(point: str, *, nth: int = 1, times: int = 1) -> Iterator[list[str]]:
    """Raise ``InjectedCrash`` at the ``nth`` time fault point ``point`` is reached, ``times`` times.

    Points: ``FAULT_POINTS`` (``"stage"``, ``"commit"``, ``"commit.applied"``, ``"controls"``)
    inside the synchronous core, and ``"supervisor"``/``"supervisor.applied"`` around a
    partition supervisor's step. Yields the list of points where it raised (for the test to
    check that each injected crash was accounted for). Synchronous and process-wide: meant for
    tests that run one runtime at a time.
    """
    if point not in (*FAULT_POINTS, "supervisor", "supervisor.applied"):
        msg = f"crash_at: unknown fault point {point!r}"
        raise ValueError(msg)
    raised: list[str] = []
    seen = 0

    def hook(where: str) -> None:
        nonlocal seen
        if where == point:
            seen += 1
            if seen >= nth and len(raised) < times:
                raised.append(where)
                msg = f"injected crash at {where} (#{seen})"
                raise InjectedCrash(msg)

    previous, FAULTS.hook = FAULTS.hook, hook
    try:
        yield raised
    finally:
        FAULTS.hook = previous


def peek(vp: Vp) -> VpState:
    """The live state of ``vp``'s actor, for white-box checks in tests and simulations.

    Read it only, between steps: it is the guest's view (staged updates included) without the
    commit an inspection makes, so looking does not change when commits happen.
    """
    return vp._cell.actor.state
