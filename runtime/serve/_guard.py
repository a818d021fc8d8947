"""The app's gate (RELIABILITY F1, F5, F6 over HTTP): bearer token, body cap, body and write deadlines.

Every request passes ``Guard`` before routing. With a token, a request without the right
bearer token (or the dashboard's session cookie derived from it) is refused with 401 and the
connection is closed before anything else is looked at; tokens are compared with
``hmac.compare_digest`` and never logged or echoed. A body declared larger than the cap is
refused with 413 before a byte of it is read; a chunked body is counted as it arrives. The
body must arrive within ``body_timeout`` of the first read (408), and each write must drain
within ``write_timeout`` or the connection is dropped (a client that never reads). The
request-head deadline, the header size cap and the connection limit belong to the server
(``runtime.serve.serve``): an app mounted in another server gets that server's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from ._wire import ErrorBody, encode_json

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ._metrics import Metrics

__all__ = ("SESSION_COOKIE", "Guard", "Limits", "RequestRejected", "reply")

logger = logging.getLogger("runtime.serve")

#: The dashboard's cookie: an HMAC of the token (the token itself is never stored in it).
SESSION_COOKIE: Final = "tdvsm_session"
#: Routes that answer without a token (a liveness probe learns nothing else).
_OPEN_ROUTES: Final = frozenset({"/healthz"})


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The control plane's limits; every one is enforced and tested (RELIABILITY F1, F5, F6).

    Sizes are bytes, times seconds. ``header_timeout`` (a slowloris deadline: the request
    head must be complete this long after the connection opened or the previous response
    ended), ``max_header`` and ``max_connections`` are enforced by ``serve``; the others by
    the app itself.
    """

    max_body: int = 1 << 20
    max_header: int = 16 << 10
    max_token: int = 256
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    write_timeout: float = 10.0
    max_connections: int = 256
    subscriber_buffer: int = 1024
    heartbeat: float = 15.0

    def __post_init__(self) -> None:
        for name in ("max_body", "max_header", "max_token", "max_connections", "subscriber_buffer"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                msg = f"Limits.{name}: must be a positive int, got {value!r}"
                raise ValueError(msg)
        for name in ("header_timeout", "body_timeout", "write_timeout", "heartbeat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                msg = f"Limits.{name}: must be a positive number of seconds, got {value!r}"
                raise ValueError(msg)


class RequestRejected(Exception):
    """Raised when a request breaks a limit; the guard answers ``status`` with a typed body."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class _WriteTimeout(Exception):
    """Raised by a send that did not drain within the write deadline: the peer is dropped."""


async def reply(
    send: Send,
    status: int,
    body: ErrorBody,
    *,
    close: bool = False,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete JSON error reply (``close`` asks the server to close the connection)."""
    payload = encode_json(body)
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})


def session_value(token: bytes) -> bytes:
    """The dashboard session cookie's value for ``token``."""
    return hmac.new(token, b"tdvsm dashboard session", hashlib.sha256).hexdigest().encode()


def route_path(scope: Scope) -> str:
    """The path below the app's mount point."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Guard:
    """ASGI middleware in front of the control plane's routes (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: bytes | None, limits: Limits, metrics: Metrics) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token is not None else None
        self.limits = limits
        self.metrics = metrics

    def authorized(self, scope: Scope) -> bool:
        """True when no token is needed or the request carries it (or the session cookie)."""
        if self.token is None:
            return True
        cap = self.limits.max_token
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, presented = value.partition(b" ")
                if scheme.lower() != b"bearer" or len(presented) > cap:
                    return False
                return hmac.compare_digest(presented.strip(), self.token)
        assert self.session is not None
        for name, value in scope["headers"]:
            if name == b"cookie" and len(value) <= 4 * cap:
                for part in value.split(b";"):
                    key, _, presented = part.strip().partition(b"=")
                    if key == SESSION_COOKIE.encode() and hmac.compare_digest(presented, self.session):
                        return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        if route_path(scope) not in _OPEN_ROUTES and not self.authorized(scope) and not _login(scope):
            # For the operator: who was refused. The path only: a query may carry a login token.
            logger.warning(
                "refused %s %s from %s: no valid token", scope["method"], scope["path"][:200], _peer(scope)
            )
            body = ErrorBody(error="Unauthenticated", message="missing or wrong bearer token")
            await reply(send, 401, body, close=True, headers=[(b"www-authenticate", b"Bearer")])
            return
        declared = _content_length(scope)
        if declared is not None and declared > limits.max_body:
            message = f"request body of {declared} bytes exceeds the limit of {limits.max_body} bytes"
            await reply(send, 413, ErrorBody(error="TooLarge", message=message), close=True)
            return
        state = _Exchange(receive, send, limits)
        self.metrics.requests_in_flight += 1
        try:
            await self.app(scope, state.receive, state.send)
        except RequestRejected as exc:
            if state.started or state.dropped:
                return
            await reply(send, exc.status, ErrorBody(error=exc.error, message=str(exc)), close=True)
        except _WriteTimeout:
            return  # the response is incomplete: the server closes the connection
        finally:
            self.metrics.requests_in_flight -= 1


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a local socket"


def _login(scope: Scope) -> bool:
    """The dashboard's login (``GET /?token=...``): the app checks the token itself."""
    return scope["method"] == "GET" and route_path(scope) == "/" and b"token=" in scope["query_string"]


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server's HTTP parser refuses it before us
    return None


class _Exchange:
    """One request's guarded ``receive`` (size and deadline) and ``send`` (write deadline)."""

    __slots__ = ("_body_done", "_deadline", "_limits", "_receive", "_received", "_send", "dropped", "started")

    def __init__(self, receive: Receive, send: Send, limits: Limits) -> None:
        self._receive = receive
        self._send = send
        self._limits = limits
        self._received = 0
        self._deadline: float | None = None
        self._body_done = False
        self.started = False
        self.dropped = False

    async def receive(self) -> Message:
        if self._body_done:  # only http.disconnect is left to come: no deadline on waiting for it
            return await self._receive()
        limits = self._limits
        if self._deadline is None:
            self._deadline = anyio.current_time() + limits.body_timeout
        with anyio.move_on_after(max(self._deadline - anyio.current_time(), 0)):
            message: Message = await self._receive()
            if message["type"] == "http.request":
                self._received += len(message.get("body", b""))
                if self._received > limits.max_body:
                    msg = f"request body exceeds the limit of {limits.max_body} bytes"
                    raise RequestRejected(413, "TooLarge", msg)
                self._body_done = not message.get("more_body", False)
            else:
                self._body_done = True
            return message
        msg = f"request body not received within {limits.body_timeout:g} s"
        raise RequestRejected(408, "Timeout", msg)

    async def send(self, message: Message) -> None:
        if self.dropped:
            raise _WriteTimeout
        if message["type"] == "http.response.start":
            self.started = True
        with anyio.move_on_after(self._limits.write_timeout):
            await self._send(message)
            return
        self.dropped = True
        raise _WriteTimeout


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), decoded as Latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
