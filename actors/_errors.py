"""Exceptions of the simulated machine itself (never guest-visible outcomes)."""

from __future__ import annotations

from protocol import SimulationError

__all__ = (
    "ActorCrashed",
    "Busy",
    "InternalError",
    "PartitionFailed",
    "UnsupportedAction",
    "VpFailed",
    "VpNotRunning",
)


class InternalError(SimulationError):
    """Raised when an invariant of DOMAIN section 5 is violated: a bug in tdvsm."""


class VpNotRunning(SimulationError):
    """Raised when an action is sent to a VP that has not been started."""


class PartitionFailed(SimulationError):
    """Raised by every VP of a partition that a fatal condition ended (DOMAIN 7.2).

    OpenHCL is built with ``panic = 'abort'``: a fatal error on one VP ends the paravisor, so
    the whole partition is lost. ``str(exc)`` gives the reason, naming the partition, the VP,
    the VTL and every failed check. Guest-triggerable, unlike ``InternalError``: an initial
    context ``set_registers`` refuses (Appendix B 9), a failed VM entry, Appendix B 13. Other
    partitions carry on.
    """


#: The name of the first round's per-VP failure, kept as an alias (API.md): a fatal condition
#: ends the whole partition, so ``except VpFailed`` and ``except PartitionFailed`` are one.
VpFailed = PartitionFailed


class UnsupportedAction(SimulationError):
    """Raised when a guest action names something OpenHCL handles but tdvsm does not model."""


class Busy(SimulationError):
    """Raised when a bounded mailbox is full: the caller should slow down and retry."""


class ActorCrashed(SimulationError):
    """Raised to the caller of an action that failed inside the simulator: retry it.

    Unlike a refusal (``VpNotRunning``, ``UnsupportedAction``) this is a fault of tdvsm itself
    (an exception inside a step: an internal error, a violated invariant, an injected crash).
    The action had no effect at all; the VP's supervisor restarts it from its last committed
    state, so the same call can be made again. The original exception is ``__cause__``;
    ``partition_id``, ``vp_index`` and ``step`` (the VP's input number, unique per VP: an
    idempotency key) say where it happened.
    """

    retriable = True

    def __init__(self, message: str, *, partition_id: int, vp_index: int, step: int) -> None:
        super().__init__(message)
        self.partition_id = partition_id
        self.vp_index = vp_index
        self.step = step

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments: rebuild through a helper so the error crosses processes.
        return (_actor_crashed, (str(self), self.partition_id, self.vp_index, self.step))


def _actor_crashed(message: str, partition_id: int, vp_index: int, step: int) -> ActorCrashed:
    return ActorCrashed(message, partition_id=partition_id, vp_index=vp_index, step=step)
