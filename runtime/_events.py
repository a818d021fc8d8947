"""Engine events: what a listener attached to a runtime hears, and the listener registry.

The scheduler reports VTL switches, secure intercepts, commits and failures to the listeners a
program attaches with ``Runtime.subscribe``. With no listener the scheduler runs its plain step
(one attribute test per pass); with one, it compares a few counters of the VP around each step
and reports what changed. Listeners are called synchronously on the runner task: they must not
block (the control plane's event hub copies each event into bounded per-subscriber buffers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from protocol import InterceptMessage, Vtl

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = (
    "CommitEvent",
    "EngineEvent",
    "Listener",
    "Listeners",
    "FailureEvent",
    "InterceptEvent",
    "VtlSwitchEvent",
    "marks",
    "report",
    "switch_marks",
)


class EngineEvent(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    """Something observable happened in partition ``partition`` (on its VP ``vp``, for most).

    The JSON form is tagged in field ``type`` by the name without "Event" (``"Commit"``), as the
    protocol messages are tagged by class name.
    """

    partition: int


class VtlSwitchEvent(EngineEvent, tag="VtlSwitch", frozen=True, kw_only=True):
    """The VP's active VTL changed (a VTL call or return, or a secure intercept's entry)."""

    vp: int
    from_vtl: Vtl
    to_vtl: Vtl
    #: HvVtlEntryReason of the entered VTL when it is VTL1 (1 VTL call, 2 interrupt), else 0.
    entry_reason: int


class InterceptEvent(EngineEvent, tag="SecureIntercept", frozen=True, kw_only=True):
    """A VTL0 action was intercepted: ``message`` now sits in VTL1's SINT0 slot."""

    vp: int
    message: InterceptMessage


class CommitEvent(EngineEvent, tag="Commit", frozen=True, kw_only=True):
    """Staged updates of ``vtl`` were committed (``commits`` commits writing ``vmcs_writes`` fields)."""

    vp: int
    vtl: Vtl
    commits: int
    vmcs_writes: int


class FailureEvent(EngineEvent, tag="PartitionFailure", frozen=True, kw_only=True):
    """A fatal condition ended the partition (DOMAIN 7.2): ``reason`` names the VP and the checks."""

    reason: str


#: What ``Runtime.subscribe`` takes: called synchronously with each event, must not block.
Listener: TypeAlias = "Callable[[EngineEvent], None]"


class Listeners:
    """The listeners of one runtime; ``emit`` is None while there are none (no cost).

    ``commits`` is True while some listener wants ``CommitEvent``s (the most frequent kind:
    without such a listener they are not even built). A listener that raises is detached (it
    must not stop the runner); ``errors`` counts them.
    """

    __slots__ = ("_entries", "_on_change", "commits", "emit", "errors")

    def __init__(self, *, on_change: Callable[[], None] | None = None) -> None:
        self._entries: list[tuple[Callable[[EngineEvent], None], bool]] = []
        #: Called after a listener comes or goes (the scheduler picks its VP step then).
        self._on_change = on_change
        self.emit: Callable[[EngineEvent], None] | None = None
        self.commits = False
        self.errors = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, listener: Callable[[EngineEvent], None], *, commits: bool = True) -> Callable[[], None]:
        """Attach ``listener`` (with ``CommitEvent``s unless ``commits`` is False).

        Returns the function that detaches it (calling it twice is harmless).
        """
        if not callable(listener):  # untyped callers
            msg = f"subscribe: the listener must be callable, got {listener!r}"  # type: ignore[unreachable]
            raise TypeError(msg)
        entry = (listener, bool(commits))
        self._entries.append(entry)
        self._update()

        def remove() -> None:
            self._remove(entry)

        return remove

    def _remove(self, entry: tuple[Callable[[EngineEvent], None], bool]) -> None:
        if entry in self._entries:
            self._entries.remove(entry)
            self._update()

    def _update(self) -> None:
        self.emit = self._fan_out if self._entries else None
        self.commits = any(commits for _, commits in self._entries)
        if self._on_change is not None:
            self._on_change()

    def _fan_out(self, event: EngineEvent) -> None:
        is_commit = type(event) is CommitEvent
        for entry in tuple(self._entries):
            listener, commits = entry
            if is_commit and not commits:
                continue
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the runtime: detach it
                self.errors += 1
                self._remove(entry)


def marks(st: Any) -> tuple[Any, ...]:
    """What ``report`` computes events from: a VP state's active VTL and SINT0 message, and per
    VTL its commits and VMCS writes (``report`` relies on this order). Failures are reported by
    the scheduler's ``fail_partition`` itself."""
    vtl0, vtl1 = st.vtls
    return (st.active_vtl, vtl1.sint0_message, vtl0.commits, vtl0.vmcs_writes, vtl1.commits, vtl1.vmcs_writes)


def switch_marks(st: Any) -> tuple[Any, ...]:
    """``marks`` without the counters: what ``report`` needs when no listener wants commits."""
    return st.active_vtl, st.vtls[1].sint0_message


def report(listeners: Listeners, partition: int, st: Any, before: tuple[Any, ...]) -> None:
    """Emit the events that turned VP state ``st``'s ``marks`` from ``before`` into their values now."""
    emit = listeners.emit
    if emit is None:  # the last listener left during the step
        return
    vp = st.index
    old_vtl, message, *counters = before
    if counters:  # ``marks``, not ``switch_marks``
        for state, commits, vmcs_writes in zip(st.vtls, counters[0::2], counters[1::2], strict=True):
            if state.commits != commits:
                emit(
                    CommitEvent(
                        partition=partition,
                        vp=vp,
                        vtl=state.vtl,
                        commits=state.commits - commits,
                        vmcs_writes=state.vmcs_writes - vmcs_writes,
                    )
                )
    new_message = st.vtls[1].sint0_message
    if new_message is not message and new_message is not None:
        emit(InterceptEvent(partition=partition, vp=vp, message=new_message))
    vtl = st.active_vtl
    if vtl != old_vtl:
        reason = st.vtls[vtl].entry_reason if vtl else 0
        emit(VtlSwitchEvent(partition=partition, vp=vp, from_vtl=old_vtl, to_vtl=vtl, entry_reason=reason))
