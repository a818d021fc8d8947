"""HTTP/1.1 pipelining of batches on one connection: up to ``depth`` requests in flight, in order.

A ``Pipeline`` writes each batch as soon as it is submitted, without waiting for the replies
before it; the server reads one request at a time from the connection, so batches run in the
order they were submitted, and replies come back in that order too (RFC 9112 section 9.3.2).
Each batch stands alone, as in a Redis pipeline: an error in one does not stop the next. The
client's encoding and the server's execution overlap, which is where the throughput comes
from. h11 frames both directions; httpx has no pipelining, so this is its own connection.
"""

from __future__ import annotations

from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import h11
import msgspec

from protocol import Outcome

from ._errors import ConnectionLost, describe, raise_for
from ._sockets import open_stream, parse_address
from ._wire import JSON, encode_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from anyio.abc import ByteStream

    from protocol import Action

    from ._client import RemoteVp

__all__ = ("Pending", "Pipeline")

_outcomes: msgspec.json.Decoder[list[Outcome]] = msgspec.json.Decoder(list[Outcome])


class Pending:
    """A submitted batch; ``await pending.result()`` gives its outcomes or raises its error."""

    __slots__ = ("_done", "_error", "_outcomes")

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._outcomes: list[Outcome] | None = None
        self._error: BaseException | None = None

    def _settle(self, outcomes: list[Outcome] | None, error: BaseException | None) -> None:
        self._outcomes, self._error = outcomes, error
        self._done.set()

    async def result(self) -> list[Outcome]:
        """The batch's outcomes (raises the typed error of a failed batch, or ConnectionLost)."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._outcomes is not None
        return self._outcomes


class Pipeline:
    """One pipelined connection (``Client.pipeline``)."""

    def __init__(self, stream: ByteStream, host: bytes, token: str | None, depth: int, mount: str) -> None:
        self._stream = stream
        self._host = host
        self._mount = mount
        self._headers = [(b"host", host), (b"content-type", JSON.encode()), (b"accept", JSON.encode())]
        if token is not None:
            self._headers.append((b"authorization", b"Bearer " + token.encode()))
        self._in_flight: deque[Pending] = deque()
        self._room = anyio.Semaphore(depth)
        self._send_lock = anyio.Lock()
        self._lost: Exception | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls, address: str, token: str | None, *, depth: int, mount: str = ""
    ) -> AsyncIterator[Pipeline]:
        """Connect and run the reply reader until the block ends."""
        if type(depth) is not int or depth < 1:
            msg = f"pipeline depth must be a positive int, got {depth!r}"
            raise ValueError(msg)
        where = parse_address(address)
        stream = await open_stream(where, address)
        host = b"tdvsm" if where.path is not None else f"{where.host}:{where.port}".encode()
        pipe = cls(stream, host, token, depth, mount)
        async with stream, anyio.create_task_group() as tg:
            tg.start_soon(pipe._read_replies)
            try:
                yield pipe
                for pending in list(pipe._in_flight):
                    await pending._done.wait()
            finally:
                tg.cancel_scope.cancel()
                pipe._fail_all(ConnectionLost(f"{address}: pipeline closed"))

    async def submit(self, vp: RemoteVp, actions: Sequence[Action]) -> Pending:
        """Send a batch for ``vp`` now (waits while ``depth`` batches are in flight)."""
        await self._room.acquire()
        body = encode_json(list(actions))
        writer = h11.Connection(h11.CLIENT)  # frames this one request
        headers = [*self._headers, (b"content-length", str(len(body)).encode())]
        data = writer.send(
            h11.Request(method="POST", target=self._mount + vp.path + "/execute", headers=headers)
        )
        data = (
            (data or b"")
            + (writer.send(h11.Data(data=body)) or b"")
            + (writer.send(h11.EndOfMessage()) or b"")
        )
        pending = Pending()
        async with self._send_lock:
            # Checked with no checkpoint before the append: a reader that has gone (the server
            # refused or closed the connection) could no longer answer a batch queued after it.
            if self._lost is not None:
                self._room.release()
                raise self._lost
            self._in_flight.append(pending)
            try:
                await self._stream.send(data)
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self._lose(f"connection lost while sending: {describe(exc)}")
        return pending

    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = ConnectionLost(why)
        self._fail_all(self._lost)

    def _fail_all(self, error: Exception) -> None:
        while self._in_flight:
            self._in_flight.popleft()._settle(None, error)
            self._room.release()

    async def _read_replies(self) -> None:
        reader = h11.Connection(h11.CLIENT)
        try:
            while True:
                # Replay the request this reply answers, so h11 expects the response.
                reader.send(h11.Request(method="POST", target="/", headers=[(b"host", self._host)]))
                reader.send(h11.EndOfMessage())
                status, body = await self._read_one(reader)
                if not self._in_flight:  # unasked: the server refused the connection (a typed 503)
                    try:
                        raise_for(status, body)
                    except Exception as exc:
                        self._lost = exc
                    self._lose("the server sent a reply nobody asked for")
                    return
                pending = self._in_flight.popleft()
                self._room.release()
                try:
                    raise_for(status, body)
                    pending._settle(_outcomes.decode(body), None)
                except Exception as exc:  # the batch's typed error
                    pending._settle(None, exc)
                if reader.their_state is h11.MUST_CLOSE:
                    # "Connection: close" on that reply: the server runs nothing written after
                    # the request it answers (RFC 9112 section 9.6).
                    self._lose("the server closed the connection after a reply: later batches were not run")
                    return
                reader.start_next_cycle()
        except (
            OSError,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            h11.ProtocolError,
        ) as exc:
            self._lose(f"connection lost: {describe(exc)}")

    async def _read_one(self, reader: h11.Connection) -> tuple[int, bytes]:
        status = 0
        chunks: list[bytes] = []
        while True:
            event: Any = reader.next_event()
            if event is h11.NEED_DATA:
                reader.receive_data(await self._stream.receive())
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise anyio.EndOfStream
