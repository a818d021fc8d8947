"""The root of the simulator's own failures, and the protocol error raised at the wire boundary.

Guest-visible outcomes (statuses, injected exceptions) are values, never exceptions; the classes
here are for the simulator itself and for malformed input that never reached a guest.
"""

from __future__ import annotations

import enum

__all__ = ("ProtocolError", "ProtocolErrorCode", "SimulationError")


class SimulationError(Exception):
    """Raised when the simulator itself fails; the root of every tdvsm exception.

    Subclasses say which part failed (an actor, the protocol, supervision); a guest that is
    refused something gets a status or an injected exception instead, never one of these.
    """


class ProtocolErrorCode(enum.IntEnum):
    """Why a frame or message was refused at the boundary."""

    BAD_FRAME = 1
    DECODE = 2
    VALIDATION = 3
    TOO_LARGE = 4


class ProtocolError(SimulationError, ValueError):
    """Raised when bytes on the wire do not decode to a valid protocol message.

    Unlike other simulation errors this one is about the input, not the simulator: the
    connection or process that received it carries on.
    """

    def __init__(self, code: ProtocolErrorCode, message: str) -> None:
        super().__init__(f"{code.name.lower()}: {message}")
        self.code = code
        self.detail = message
