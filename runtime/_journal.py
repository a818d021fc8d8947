"""A VP's journal: every input since its last checkpoint, and the replay that rebuilds the VP.

Everything that changes a VP goes through the scheduler as an *input*: a guest action, a
supervisor reply resuming a hypercall, an inspection, the application of control messages, a
control message delivered, a window commit. The scheduler appends each input to the VP's
journal (two list items, kind and payload: no allocation on the hot path) before running it,
and notes the published partition view whenever it changed, so an input can be replayed
against exactly the view it saw (views are immutable).

Rules are synchronous and deterministic, so the VP's state is a function of its checkpoint and
its journal. When a step fails inside the simulator, the scheduler drops the failed input and
``rebuild`` restores the VP from its checkpoint, through the snapshot codec (the same path as
``partition.snapshot()``), and replays the rest: the VP is back in its last committed state,
the state after its last completed input, at the cost of two list appends per input instead of
a copy of the VP before every step. The journal is bounded: once it holds ``JOURNAL_LIMIT``
inputs and no hypercall is half done, the scheduler takes a new checkpoint and clears it.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, Final

import msgspec

from actors import FAULTS, InternalError, VpActor, VpSnapshot, restore_vp, snapshot_vp
from protocol import SimulationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors import PartitionConfig, PartitionView

__all__ = (
    "JOURNAL_LIMIT",
    "J_ACTION",
    "J_COMMIT",
    "J_CONTROLS",
    "J_DELIVER",
    "J_INSPECT",
    "J_RESUME",
    "J_VIEW",
    "ReplayError",
    "checkpoint",
    "encode_checkpoint",
    "is_refusal",
    "rebuild",
)

# Input kinds. J_ACTION and J_INSPECT equal the mailbox message kinds, so a step journals the
# kind it took from the mailbox as it is.
J_ACTION: Final = 0  # payload: the action
J_INSPECT: Final = 1  # payload: the inspection function
J_RESUME: Final = 2  # payload: (ok, value): the supervisor's reply to a waiting hypercall
J_CONTROLS: Final = 3  # payload: None: pending control messages applied
J_DELIVER: Final = 4  # payload: a control message delivered by the supervisor
J_COMMIT: Final = 5  # payload: None: every VTL committed (a batch window closed, a snapshot)
J_VIEW: Final = 6  # payload: the partition view the following inputs saw

#: Journal items (two per input) after which a VP with no half-done hypercall is checkpointed.
#: A checkpoint costs about 4 us (snapshot and encode), a replayed input about 2 us: every 256
#: inputs keeps checkpoints near 1% of a fleet's time (every 64 had cost P2 5%), a restart's
#: replay under a pass budget, and a busy VP's journal at 4 KB.
JOURNAL_LIMIT: Final = 2 * 256

_GENERATOR: Final = types.GeneratorType
_VP_SNAPSHOT: Final = msgspec.json.Decoder(VpSnapshot)
_ENCODE: Final = msgspec.json.Encoder().encode


class ReplayError(SimulationError):
    """Raised when a journal does not replay as it ran: a nondeterministic rule, a tdvsm bug."""


def is_refusal(exc: BaseException) -> bool:
    """True for a simulator error a rule raises on purpose before changing anything.

    ``VpNotRunning``, ``UnsupportedAction`` and the like are answers, not faults: the VP
    carries on. Everything else a step raises (an ``InternalError``, a ``KeyError``, an
    injected crash) is a crash of that step.
    """
    return isinstance(exc, SimulationError) and not isinstance(exc, InternalError)


class _FixedView:
    """The view a replayed input saw (set per ``J_VIEW`` item)."""

    __slots__ = ("view",)

    def __init__(self, view: PartitionView) -> None:
        self.view = view

    def __call__(self) -> PartitionView:
        return self.view


def checkpoint(actor: VpActor) -> bytes:
    """A checkpoint of ``actor``: its snapshot, encoded (``encode_checkpoint``)."""
    return _ENCODE(snapshot_vp(actor))


def encode_checkpoint(snapshot: VpSnapshot) -> bytes:
    """``snapshot`` as a checkpoint: the snapshot codec's JSON.

    Bytes rather than the Structs: one object the garbage collector does not track, where a
    fleet's checkpoints as Structs had made every collection walk them (P2 lost 15%).
    """
    return _ENCODE(snapshot)


def rebuild(
    base: bytes | None,
    base_view: PartitionView,
    journal: list[Any],
    *,
    index: int,
    config: PartitionConfig,
    view: Callable[[], PartitionView],
) -> tuple[VpActor, Any]:
    """The VP after ``journal`` replayed on ``base`` (None: the VP as created); and its waiting hypercall.

    The base is a checkpoint in the snapshot codec's format (decoded here), so every restart
    exercises the format ``partition.snapshot()`` writes. The returned generator is the
    hypercall the journal leaves waiting for the supervisor (its last reply is the caller's to
    retry), or None. Fault points are off during the replay: it redoes what already happened.

    Raises:
        ReplayError: an input raised during the replay what it did not raise when it ran.
    """
    if base is None:  # the VP as created (never checkpointed yet)
        base = checkpoint(VpActor(index, config, view))
    actor = restore_vp(_VP_SNAPSHOT.decode(base), config, view)
    fixed = _FixedView(base_view)
    actor.use_view(fixed)
    hook, FAULTS.hook = FAULTS.hook, None
    pending: Any = None
    try:
        for i in range(0, len(journal), 2):
            kind, payload = journal[i], journal[i + 1]
            if kind == J_VIEW:
                fixed.view = payload
                continue
            try:
                if kind == J_ACTION:
                    result = actor.execute(payload)
                    if type(result) is _GENERATOR:
                        pending = result
                        pending.send(None)
                elif kind == J_RESUME:
                    ok, value = payload
                    _ = pending.send(value) if ok else pending.throw(value)
                elif kind == J_INSPECT:
                    payload(actor)
                elif kind == J_CONTROLS:
                    actor.apply_controls()
                elif kind == J_DELIVER:
                    actor.deliver(payload)
                else:
                    actor.state.commit_all()
            except StopIteration:
                pending = None
            except Exception as exc:
                if not is_refusal(exc):
                    msg = f"replaying input {i // 2} ({kind=}) of vp {index} raised {exc!r}"
                    raise ReplayError(msg) from exc
                pending = None
    finally:
        FAULTS.hook = hook
        actor.use_view(view)
    return actor, pending
