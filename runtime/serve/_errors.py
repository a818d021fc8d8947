"""Errors across the wire: which exception is which HTTP status and JSON ``error`` type, both ways.

The server turns an exception into ``{"error": TYPE, "message": ...}`` with the status of the
table below; the client turns that body back into the same exception class the in-process
API raises (``Busy``, ``PartitionFailed``, ``ValueError`` ...). Errors that only exist across
a connection (``ConnectionLost``, ``Unauthenticated``, ``RemoteError``) are defined here.
"""

from __future__ import annotations

from typing import Final

import anyio
import msgspec

from actors import (
    ActorCrashed,
    Busy,
    InternalError,
    PartitionFailed,
    UnsupportedAction,
    VpFailed,
    VpNotRunning,
)
from protocol import ProtocolError, ProtocolErrorCode, SimulationError

from ._wire import ErrorBody

__all__ = (
    "STATUS",
    "ConnectionLost",
    "RemoteError",
    "Unauthenticated",
    "describe",
    "error_type",
    "exception_for",
    "message_of",
    "raise_for",
)


class ConnectionLost(SimulationError, ConnectionError):
    """Raised by the client when the connection to the server broke or could not be made.

    A request that was under way may or may not have run on the server.
    """


class Unauthenticated(SimulationError, PermissionError):
    """Raised by the client when the server refused its token (HTTP 401)."""


class RemoteError(SimulationError):
    """Raised by the client for an error reply no in-process exception stands for.

    ``status`` is the HTTP status and ``error`` the reply's error type (``TooLarge``,
    ``Timeout``, ``InternalError`` of the server ...).
    """

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{error} (HTTP {status}): {message}")
        self.status = status
        self.error = error


#: Error type -> HTTP status. The first match of ``error_type`` picks the type of an exception.
STATUS: Final[dict[str, int]] = {
    "Busy": 429,
    "PartitionFailed": 409,
    "VpFailed": 409,
    "VpNotRunning": 409,
    "UnsupportedAction": 501,
    "InternalError": 500,
    "ProtocolError": 422,
    "ValueError": 422,
    "TypeError": 422,
    "NotFound": 404,
    "Closed": 410,
    "Unauthenticated": 401,
    "TooLarge": 413,
    "Timeout": 408,
    "UnsupportedMediaType": 415,
    "MethodNotAllowed": 405,
    "TooManyConnections": 503,
    "ActorCrashed": 503,
}

# Most specific first: ProtocolError is a ValueError, PartitionFailed a SimulationError.
_TYPES: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (Busy, "Busy"),
    (PartitionFailed, "PartitionFailed"),
    (VpFailed, "VpFailed"),
    (VpNotRunning, "VpNotRunning"),
    (UnsupportedAction, "UnsupportedAction"),
    (ActorCrashed, "ActorCrashed"),
    (InternalError, "InternalError"),
    (ProtocolError, "ProtocolError"),
    (KeyError, "NotFound"),
    (anyio.ClosedResourceError, "Closed"),
    (ValueError, "ValueError"),
    (TypeError, "TypeError"),
)


_error_body = msgspec.json.Decoder(ErrorBody)


def error_type(exc: BaseException) -> str | None:
    """The wire type of ``exc``, or None for an exception that is a bug of the server."""
    for cls, name in _TYPES:
        if isinstance(exc, cls):
            return name
    return None


def describe(exc: BaseException) -> str:
    """``str(exc)``, or the exception's type when that is empty."""
    return str(exc) or type(exc).__name__


def message_of(exc: BaseException) -> str:
    """``str(exc)`` without the quotes ``KeyError`` adds."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def exception_for(status: int, error: str, message: str) -> Exception:
    """The exception the in-process API would have raised for this error reply."""
    simple: dict[str, type[Exception]] = {
        "Busy": Busy,
        "TooManyConnections": Busy,
        "PartitionFailed": PartitionFailed,
        "VpFailed": VpFailed,
        "VpNotRunning": VpNotRunning,
        "UnsupportedAction": UnsupportedAction,
        "ValueError": ValueError,
        "TypeError": TypeError,
        "NotFound": KeyError,
        "Closed": anyio.ClosedResourceError,
        "Unauthenticated": Unauthenticated,
    }
    if error in simple:
        return simple[error](message)
    if error == "ProtocolError":  # str(ProtocolError) is "<code>: <detail>"
        code, _, detail = message.partition(": ")
        known = {c.name.lower(): c for c in ProtocolErrorCode}
        if code in known:
            return ProtocolError(known[code], detail)
        return ProtocolError(ProtocolErrorCode.VALIDATION, message)
    return RemoteError(status, error, message)


def raise_for(status: int, content: bytes) -> None:
    """Raise the in-process exception an error reply stands for (nothing for a 2xx)."""
    if status < 400:
        return
    try:
        body = _error_body.decode(content)
    except msgspec.MsgspecError:
        body = ErrorBody(error="RemoteError", message=content[:200].decode("utf-8", "replace"))
    if body.error == "ActorCrashed":
        where = [-1 if value is None else value for value in (body.partition_id, body.vp_index, body.step)]
        exc: Exception = ActorCrashed(body.message, partition_id=where[0], vp_index=where[1], step=where[2])
    else:
        exc = exception_for(status, body.error, body.message)
    if body.index is not None:
        exc.index = body.index  # type: ignore[attr-defined]
        exc.outcomes = list(body.outcomes or [])  # type: ignore[attr-defined]
    raise exc
