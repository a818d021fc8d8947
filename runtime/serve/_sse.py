"""The client side of ``GET /events``: a connection of its own, h11 framing, SSE parsing.

httpx streams a body through a chain of nested async generators; a reader that stops early
(an event stream never ends by itself) leaves them suspended, and trio warns about each when
it collects them. So the stream gets its own connection and a plain iterator object here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import h11
import msgspec

from .._events import CommitEvent, FailureEvent, InterceptEvent, VtlSwitchEvent
from ._errors import ConnectionLost, describe
from ._hub import Cut
from ._sockets import open_stream

if TYPE_CHECKING:
    from anyio.abc import ByteStream

    from .._events import EngineEvent
    from ._sockets import Address

__all__ = ("EventReader", "open_event_stream")

_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    VtlSwitchEvent | InterceptEvent | CommitEvent | FailureEvent | Cut
)


class EventReader:
    """An async iterator of a stream's events; it ends after a ``Cut``."""

    def __init__(self, stream: ByteStream, connection: h11.Connection, address: str) -> None:
        self._stream = stream
        self._connection = connection
        self._address = address
        self._pending = b""
        self._ended = False

    def __aiter__(self) -> EventReader:
        return self

    async def __anext__(self) -> EngineEvent | Cut:
        while not self._ended:
            message, sep, rest = self._pending.partition(b"\n\n")
            if sep:
                self._pending = rest
                data = b"\n".join(
                    line[5:].strip() for line in message.split(b"\n") if line.startswith(b"data:")
                )
                if not data:
                    continue  # a comment (keep-alive) or the retry hint
                event: EngineEvent | Cut = _decoder.decode(data)
                self._ended = isinstance(event, Cut)
                return event
            self._pending += await self._body()
        raise StopAsyncIteration

    async def _body(self) -> bytes:
        try:
            while True:
                event: Any = self._connection.next_event()
                if event is h11.NEED_DATA:
                    self._connection.receive_data(await self._stream.receive())
                elif isinstance(event, h11.Data):
                    return bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    raise anyio.EndOfStream
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, h11.ProtocolError) as exc:
            msg = f"{self._address}: event stream lost: {describe(exc)}"
            raise ConnectionLost(msg) from exc


async def open_event_stream(
    where: Address, address: str, target: str, headers: list[tuple[bytes, bytes]]
) -> tuple[ByteStream, EventReader, int, bytes]:
    """Connect, send ``GET target`` and read the reply's head.

    Returns the stream, the reader, and the status and body of an error reply (status 200 and
    b"" when the stream is open).
    """
    stream = await open_stream(where, address)
    connection = h11.Connection(h11.CLIENT)
    reader = EventReader(stream, connection, address)
    try:
        await stream.send(connection.send(h11.Request(method="GET", target=target, headers=headers)) or b"")
        await stream.send(connection.send(h11.EndOfMessage()) or b"")
        while True:
            event: Any = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive())
            elif isinstance(event, h11.Response):
                break
        if event.status_code == 200:
            return stream, reader, 200, b""
        body = b""
        while True:
            part: Any = connection.next_event()
            if part is h11.NEED_DATA:
                connection.receive_data(await stream.receive())
            elif isinstance(part, h11.Data):
                body += bytes(part.data)
            else:
                return stream, reader, event.status_code, body
    except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, h11.ProtocolError) as exc:
        await stream.aclose()
        msg = f"{address}: event stream lost: {describe(exc)}"
        raise ConnectionLost(msg) from exc
