"""Exceptions of the simulated machine itself (never guest-visible outcomes)."""

from __future__ import annotations

from protocol import SimulationError

__all__ = ("Busy", "InternalError", "PartitionFailed", "UnsupportedAction", "VpFailed", "VpNotRunning")


class InternalError(SimulationError):
    """Raised when an invariant of DOMAIN section 5 is violated: a bug in tdvsm."""


class VpNotRunning(SimulationError):
    """Raised when an action is sent to a VP that has not been started."""


class PartitionFailed(SimulationError):
    """Raised by every VP of a partition that a fatal condition ended (DOMAIN 7.2).

    OpenHCL is built with ``panic = 'abort'``: a fatal error on one VP ends the paravisor, so
    the whole partition is lost. ``str(exc)`` gives the reason. Other partitions carry on.
    """


class VpFailed(SimulationError):
    """Raised for actions sent to a VP that hit a fatal error (OpenHCL would panic that VP).

    Unlike ``InternalError`` this models guest-triggerable behaviour: an invalid initial
    context loaded by EnableVpVtl or StartVirtualProcessor. Other VPs and partitions go on.
    """


class UnsupportedAction(SimulationError):
    """Raised when a guest action names something OpenHCL handles but tdvsm does not model."""


class Busy(SimulationError):
    """Raised when a bounded mailbox is full: the caller should slow down and retry."""
