"""The guest-visible history of a simulation: register operations and "sometimes" coverage.

Every call a guest program makes goes through ``History.call``: it stamps the invocation and
the completion on one logical clock, records the register reads and writes the call made on
the tracked registers (for the linearizability check), and classifies the completion the
Knossos way: ``ok``, ``fail`` (refused, ``Busy``, crashed with no effect) or ``info``
(cancelled after it may have started, or its partition failed under it).

Keys are (logical partition, VP, VTL, register): a partition moved by snapshot and restore
keeps its logical index, so its registers' histories carry on across the move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio

from actors import ActorCrashed, Busy, PartitionFailed
from protocol import (
    Completed,
    GetVpRegisters,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    Rdmsr,
    SetVpRegisters,
    Wrmsr,
)
from protocol._x86 import Msr

from .linearizability import Op, Status

if TYPE_CHECKING:
    from protocol import Action, Outcome

    from .._host import Vp

__all__ = ("SOMETIMES", "TRACKED", "TRACKED_MSRS", "Call", "History")

#: Registers whose histories are checked: plain values no rule derives or changes on its own.
TRACKED: Final = (Reg.LSTAR, Reg.CSTAR, Reg.SYSENTER_EIP, Reg.STAR)
TRACKED_MSRS: Final[dict[int, Reg]] = {
    Msr.LSTAR: Reg.LSTAR,
    Msr.CSTAR: Reg.CSTAR,
    Msr.SYSENTER_EIP: Reg.SYSENTER_EIP,
    Msr.STAR: Reg.STAR,
}

#: The "sometimes" assertions (RELIABILITY A6): each should be hit now and then in a campaign.
SOMETIMES: Final = (
    "vtl_call_with_updates_staged",
    "intercept_while_updates_coalesced",
    "intercept_handler_returns_to_vtl0",
    "restart_while_calls_wait",
    "restart_finishes_an_answered_hypercall",
    "restart_intensity_exceeded",
    "supervisor_crash_rolled_back",
    "cancel_while_updates_staged",
    "busy_refusal",
    "window_commit",
    "pass_cut_short",
    "snapshot_restore_mid_run",
)

Key = tuple[int, int, int, int]


class Call:
    """What one call did: its outcome (or the exception it raised) and how it completed."""

    __slots__ = ("error", "outcome", "status")

    def __init__(self, outcome: Outcome | None, error: BaseException | None, status: str) -> None:
        self.outcome = outcome
        self.error = error
        self.status = status


class History:
    """Register operations of every tracked key, a logical clock, and the sometimes counters."""

    def __init__(self) -> None:
        self.clock = 0
        self.ops: dict[Key, list[Op]] = {}
        self.initial: dict[Key, int] = {}
        self.sometimes: dict[str, int] = dict.fromkeys(SOMETIMES, 0)
        self.calls = 0
        self.outcomes: dict[str, int] = {}

    def tick(self) -> int:
        """The next instant of the logical clock."""
        self.clock += 1
        return self.clock

    def hit(self, name: str) -> None:
        """A sometimes-assertion was reached."""
        self.sometimes[name] += 1

    def record(self, key: Key, op: Op) -> None:
        """Add ``op`` to ``key``'s history (bounded: Jepsen's per-key limit)."""
        ops = self.ops.setdefault(key, [])
        if len(ops) < 1000:
            ops.append(op)

    async def call(
        self, vp: Vp, where: tuple[int, int], action: Action, *, cancel_after: int | None = None
    ) -> Call:
        """Execute ``action`` on ``vp`` (logical partition, VP index ``where``); record what it did.

        An operation that completed is put on the VTL active when it returned (the tracked
        operations that complete never switch VTL). One whose fate is unknown goes on the VTL
        active when it was made, or on both when a pending start could switch the VTL first.
        """
        actor = vp._cell.actor
        ambiguous = not actor.state.running or actor.has_controls
        start_vtl = int(vp.active_vtl)
        start = self.tick()
        outcome: Outcome | None = None
        error: BaseException | None = None
        status = "ok"
        with anyio.CancelScope() as scope:
            if cancel_after is None:
                try:
                    outcome = await vp.execute(action)
                except (ActorCrashed, Busy) as exc:  # no effect at all
                    error, status = exc, "fail"
                except PartitionFailed as exc:  # it may have been half way through
                    error, status = exc, "info"
                except Exception as exc:  # a refusal: TypeError/ValueError, VpNotRunning ...
                    error, status = exc, "fail"
            else:
                async with anyio.create_task_group() as tg:

                    async def canceller() -> None:
                        for _ in range(cancel_after):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()

                    tg.start_soon(canceller)
                    try:
                        outcome = await vp.execute(action)
                    except (ActorCrashed, Busy) as exc:
                        error, status = exc, "fail"
                    except PartitionFailed as exc:
                        error, status = exc, "info"
                    except Exception as exc:
                        error, status = exc, "fail"
                    tg.cancel_scope.cancel()
        if scope.cancelled_caught:
            status = "info"
        end = self.tick()
        self.calls += 1
        name = type(outcome).__name__ if outcome is not None else type(error).__name__
        self.outcomes[name] = self.outcomes.get(name, 0) + 1
        if isinstance(error, Busy):
            self.hit("busy_refusal")
        if status == "info":
            for vtl in (0, 1) if ambiguous else (start_vtl,):
                self._registers(where, vtl, action, outcome, status, start, end)
        else:
            self._registers(where, int(vp.active_vtl), action, outcome, status, start, end)
        return Call(outcome, error, status if not scope.cancelled_caught else "cancelled")

    def _registers(
        self, where: tuple[int, int], vtl: int, action: Any, outcome: Any, status: str, start: int, end: int
    ) -> None:
        partition, vp = where
        end_or_none: int | None = None if status == "info" else end
        if type(action) is Wrmsr and action.msr in TRACKED_MSRS:
            applied = status == "ok" and isinstance(outcome, Completed)
            done: Status = "info" if status == "info" else "ok" if applied else "fail"
            key = (partition, vp, vtl, int(TRACKED_MSRS[action.msr]))
            self.record(
                key,
                Op(
                    kind="write", value=action.value, start=start, end=end_or_none, status=done, label="wrmsr"
                ),
            )
        elif type(action) is Rdmsr and action.msr in TRACKED_MSRS:
            if status == "ok" and isinstance(outcome, Completed) and outcome.value is not None:
                key = (partition, vp, vtl, int(TRACKED_MSRS[action.msr]))
                self.record(key, Op(kind="read", value=outcome.value, start=start, end=end, label="rdmsr"))
        elif type(action) is SetVpRegisters:
            target = vtl if action.target_vtl is None else action.target_vtl
            reps = outcome.reps_completed if isinstance(outcome, HypercallResult) and status == "ok" else 0
            if target not in (0, 1):
                return
            elements = [(i, e) for i, e in enumerate(action.registers) if e.name in TRACKED]
            if status == "info":  # any prefix may have been applied: each value may be the last
                for _, element in elements:
                    op = Op(
                        kind="write", value=element.value, start=start, end=None, status="info", label="set"
                    )
                    self.record((partition, vp, target, element.name), op)
                return
            last: dict[int, int] = {}  # the applied prefix: its last value of each register
            for i, element in elements:
                if action.rep_start <= i < reps:
                    last[element.name] = element.value
            for name, value in last.items():
                self.record(
                    (partition, vp, target, name),
                    Op(kind="write", value=value, start=start, end=end, label="set"),
                )
        elif type(action) is GetVpRegisters and isinstance(outcome, HypercallResult) and status == "ok":
            target = vtl if action.target_vtl is None else action.target_vtl
            for name, value in zip(action.names[action.rep_start :], outcome.values, strict=False):
                if name in TRACKED and target in (0, 1):
                    op = Op(kind="read", value=value, start=start, end=end, label="get")
                    self.record((partition, vp, target, int(name)), op)

    def read_inspection(
        self, where: tuple[int, int], vtl: int, values: dict[Reg, int], start: int, end: int
    ) -> None:
        """Reads made by an inspection (``vp.registers``) between ``start`` and ``end``."""
        partition, vp = where
        for name, value in values.items():
            self.record(
                (partition, vp, vtl, int(name)),
                Op(kind="read", value=value, start=start, end=end, label="inspect"),
            )

    def status_of(self, outcome: object) -> HvStatus | None:
        """The status of a hypercall outcome (None for anything else)."""
        return outcome.status if isinstance(outcome, HypercallResult) else None
