"""``serve``: run an ASGI app with hypercorn on asyncio or trio, on a safe socket, with hard limits.

The socket comes from ``runtime.serve._sockets`` (a private Unix socket by default; TCP only for
an app that requires a token, RELIABILITY F6). hypercorn speaks HTTP on each connection; the
accept loop is ours, because hypercorn has no connection limit and its trio writes are shielded
from cancellation (RELIABILITY F5):

* at ``max_connections`` open connections a new one gets a typed 503 ``TooManyConnections``
  and is closed, without reading it;
* a request head must be complete within ``header_timeout`` (hypercorn's idle timeout) and at
  most ``max_header`` bytes (431);
* a write that does not drain within ``write_timeout`` aborts the connection: a peer that never
  reads is gone within that deadline of its socket buffer filling up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import anyio
import sniffio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config

from ._guard import Limits
from ._sockets import bind_socket
from ._wire import ErrorBody, encode_json

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from anyio.abc import TaskStatus
    from starlette.types import ASGIApp

    from ._app import ControlPlane
    from ._metrics import Metrics
    from ._sockets import Address

__all__ = ("serve",)

logger = logging.getLogger("runtime.serve")
#: Seconds a shutdown waits for open connections to finish before cancelling them.
GRACE: Final = 2.0
#: Requests per connection: no cap of the server's own.
_UNLIMITED: Final = 1 << 62


def _refusal(limit: int) -> bytes:
    body = encode_json(ErrorBody(error="TooManyConnections", message=f"connection limit of {limit} reached"))
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    return head + body


def _config(limits: Limits) -> Config:
    config = Config()
    config.keep_alive_timeout = limits.header_timeout
    # hypercorn closes a connection after 1,000 requests by default, cutting a long pipeline:
    # the batches written after the 1,000th are never run. A connection here lasts as long as
    # its client keeps it (the head deadline still ends an idle one).
    config.keep_alive_max_requests = _UNLIMITED
    config.h11_max_incomplete_size = limits.max_header
    config.accesslog = None  # a request line may carry the dashboard's login token
    config.errorlog = logger
    config.include_server_header = False
    return config


async def serve(
    app: ASGIApp,
    address: Address,
    *,
    limits: Limits | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``address`` until cancelled; ``task_status.started`` gets the address.

    ``limits`` default to the app's own (``create_app``), else ``Limits()``. TCP is refused for
    an app without a token (RELIABILITY F6).

    Raises:
        ValueError: TCP for an app without a token, or an unsafe socket directory.
    """
    plane: ControlPlane | None = getattr(getattr(app, "state", None), "tdvsm", None)
    limits = limits or (plane.limits if plane is not None else Limits())
    if not address.is_unix and (plane is None or plane.token is None):
        msg = "serving over TCP needs an app with a token (create_app(runtime, token=...))"
        raise ValueError(msg)
    sock = bind_socket(address)
    logger.info("listening on %s (at most %d connections)", address, limits.max_connections)
    try:
        backend = sniffio.current_async_library()
        if backend == "trio":
            await _serve_trio(app, sock, limits, plane, str(address), task_status)
        else:
            await _serve_asyncio(app, sock, limits, plane, str(address), task_status)
    finally:
        sock.close()
        if address.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(address.path)


class _Connections:
    """The open-connection count against the limit (and the metrics gauges)."""

    def __init__(self, limit: int, metrics: Metrics | None) -> None:
        self.limit = limit
        self.open = 0
        self.metrics = metrics

    def enter(self) -> bool:
        if self.open >= self.limit:
            if self.metrics is not None:
                self.metrics.connections_refused += 1
            return False
        self.open += 1
        if self.metrics is not None:
            self.metrics.connections = self.open
        return True

    def leave(self) -> None:
        self.open -= 1
        if self.metrics is not None:
            self.metrics.connections = self.open


# ---- trio ---------------------------------------------------------------------------------------


async def _drain(context: Any, plane: ControlPlane | None, busy: Callable[[], bool]) -> None:
    """A graceful end: idle connections close, event streams end, the rest get ``GRACE`` seconds."""
    await context.terminated.set()  # hypercorn closes keep-alive connections waiting for a request
    if plane is not None:
        plane.hub.end_all("the server is shutting down")
    with anyio.move_on_after(GRACE):
        while busy():  # noqa: ASYNC110  # polls the connection count, shutdown only
            await anyio.sleep(0.01)


async def _serve_trio(
    app: ASGIApp,
    sock: socket.socket,
    limits: Limits,
    plane: ControlPlane | None,
    shown: str,
    task_status: Any,
) -> None:
    import trio
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext

    config = _config(limits)
    context = WorkerContext(None)
    wrapped = ASGIWrapper(app)  # type: ignore[arg-type]
    connections = _Connections(limits.max_connections, plane.metrics if plane is not None else None)
    refusal = _refusal(limits.max_connections)

    async def handle(stream: trio.SocketStream) -> None:
        if not connections.enter():
            with trio.move_on_after(1):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(refusal)
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.CancelScope() as scope:
                guarded = _TrioDeadlineStream(stream, limits.write_timeout, scope)
                await TCPServer(wrapped, config, context, {}, guarded).run()  # type: ignore[arg-type]
        finally:
            connections.leave()

    # Connections run in a nursery our caller's cancellation does not reach, so that shutting
    # down can let them finish (``_drain``) before they are cancelled.
    handlers_scope = trio.CancelScope(shield=True)

    async def run_handlers(*, task_status: Any) -> None:
        with handlers_scope:
            async with trio.open_nursery() as handlers:
                task_status.started(handlers)
                await trio.sleep_forever()

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        handlers = await nursery.start(run_handlers)
        try:
            await nursery.start(partial(trio.serve_listeners, handle, [listener], handler_nursery=handlers))
            task_status.started(shown)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await _drain(context, plane, lambda: connections.open > 0)
            handlers_scope.cancel()


class _TrioDeadlineStream:
    """A trio stream whose writes must drain within the write deadline, else it is aborted.

    hypercorn shields its writes from cancellation; a deadline inside the shield still fires.
    Writes and the end-of-stream take turns, and the end of stream waits (within the write
    deadline) for the rest of a response whose head is out: hypercorn closes a connection from
    its reader task as soon as it parses bytes that are not a request, which on trio would cut
    the reply to the request before them between its head and its body. Giving up also cancels
    the connection's ``scope``: hypercorn's HTTP/1.1 protocol can wait for ever for a response
    that will not be finished when pipelined requests are queued.
    """

    def __init__(self, stream: Any, write_timeout: float, scope: Any) -> None:
        import trio

        self._stream = stream
        self._write_timeout = write_timeout
        self._scope = scope
        # hypercorn closes (send_eof) from the reader task while a reply may still be going out
        # from the app's: trio refuses two senders at once (BusyResourceError), so take turns.
        self._sending = trio.Lock()
        # Body bytes of the response being written that are still to come, and the event set
        # when there are none (``send_eof`` waits for it).
        self._owed = 0
        self._whole = trio.Event()
        self._whole.set()
        self.socket = stream.socket

    async def send_all(self, data: bytes) -> None:
        import trio

        body = self._owed > 0
        if not body:  # a response's head: note the body it declares before it goes out
            self._owed = _body_after(data)
            if self._owed:
                self._whole = trio.Event()
        try:
            with trio.fail_after(self._write_timeout):
                async with self._sending:
                    await self._stream.send_all(data)
        except trio.TooSlowError:
            self._whole.set()
            self._scope.cancel()
            await trio.aclose_forcefully(self._stream)
            msg = f"write not drained within {self._write_timeout:g} s: peer dropped"
            raise trio.BrokenResourceError(msg) from None
        except BaseException:
            self._whole.set()
            raise
        if body:
            # h11 ends a message framed by content-length with an empty write: the end of a
            # response to HEAD (a declared length, no body) as well.
            self._owed = max(self._owed - len(data), 0) if data else 0
            if not self._owed:
                self._whole.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data: bytes | bytearray = await self._stream.receive_some(max_bytes)
        return data

    async def send_eof(self) -> None:
        import trio

        deadline = trio.current_time() + self._write_timeout
        while True:
            with trio.move_on_at(deadline):
                await self._whole.wait()
            async with self._sending:
                # A head may have gone out while we waited for the lock: then wait for its body.
                if self._whole.is_set() or trio.current_time() >= deadline:
                    await self._stream.send_eof()
                    return

    async def aclose(self) -> None:
        await self._stream.aclose()


def _body_after(data: bytes) -> int:
    """Body bytes a response head at the start of ``data`` declares beyond those in ``data``.

    0 for anything else: body bytes, an interim (1xx) response, a head without
    ``content-length`` (an event stream, chunked), a 204 or a 304.
    """
    if not data.startswith(b"HTTP/1.1 ") or data[9:10] == b"1" or data[9:12] in (b"204", b"304"):
        return 0
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return max(int(value) - len(rest), 0)
            except ValueError:
                return 0
    return 0


# ---- asyncio ------------------------------------------------------------------------------------


async def _serve_asyncio(
    app: ASGIApp,
    sock: socket.socket,
    limits: Limits,
    plane: ControlPlane | None,
    shown: str,
    task_status: Any,
) -> None:
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import WorkerContext

    loop = asyncio.get_running_loop()
    config = _config(limits)
    context = WorkerContext(None)
    wrapped = ASGIWrapper(app)  # type: ignore[arg-type]
    connections = _Connections(limits.max_connections, plane.metrics if plane is not None else None)
    refusal = _refusal(limits.max_connections)
    tasks: set[asyncio.Task[None]] = set()
    closing = False

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if not connections.enter():
            writer.write(refusal)  # a few hundred bytes: the socket buffer takes them at once
            writer.close()
            return
        try:
            with anyio.CancelScope() as scope:
                guarded = _AsyncioDeadlineWriter(writer, limits.write_timeout, scope)
                await TCPServer(wrapped, loop, config, context, {}, reader, guarded).run()  # type: ignore[arg-type]
        except asyncio.CancelledError:
            if not closing:  # cancelled by our own shutdown below: asyncio's server owns the task
                raise
        finally:
            connections.leave()

    server = await asyncio.start_server(handle, sock=sock, backlog=128)
    try:
        task_status.started(shown)
        await anyio.sleep_forever()
    finally:
        closing = True
        server.close()
        with anyio.CancelScope(shield=True):
            await _drain(context, plane, lambda: bool(tasks))
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class _AsyncioDeadlineWriter:
    """A StreamWriter whose ``drain`` must finish within the write deadline, else the transport
    is aborted (a plain close would wait for ever to flush to a peer that never reads), and
    the connection's ``scope`` is cancelled (see ``_TrioDeadlineStream``)."""

    def __init__(self, writer: asyncio.StreamWriter, write_timeout: float, scope: anyio.CancelScope) -> None:
        self._writer = writer
        self._write_timeout = write_timeout
        self._scope = scope

    def _abort(self) -> None:
        self._writer.transport.abort()
        self._scope.cancel()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        try:
            await asyncio.wait_for(self._writer.drain(), self._write_timeout)
        except TimeoutError:
            self._abort()
            raise ConnectionResetError(errno.ETIMEDOUT, "write not drained: peer dropped") from None

    def write_eof(self) -> None:
        self._writer.write_eof()

    def close(self) -> None:
        if self._writer.transport.get_write_buffer_size():
            self._abort()  # unsent data to a stalled peer: do not wait for it
        else:
            self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()
