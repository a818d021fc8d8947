"""A live control plane for tests: a runtime, its app and a real server on a private Unix socket.

Also raw-socket helpers for the tests that speak bytes (limits, auth, fuzz): they connect with
anyio, so they run on asyncio and trio like the server.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from runtime import open_runtime
from runtime.serve import Limits, create_app, serve
from runtime.serve._sockets import Address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from anyio.abc import ByteStream
    from starlette.applications import Starlette

    from runtime import Runtime
    from runtime.serve import ControlPlane

__all__ = ("Served", "connect_raw", "read_until_closed", "request_bytes", "served", "wait_until")

#: A token of the length F6 asks for (it must never show up in a log or a reply).
TOKEN = "t0ken-" + "x" * 40


class Served:
    """What ``served`` yields."""

    def __init__(self, runtime: Runtime, app: Starlette, address: str) -> None:
        self.runtime = runtime
        self.app = app
        self.address = address

    @property
    def plane(self) -> ControlPlane:
        plane: ControlPlane = self.app.state.tdvsm
        return plane

    @property
    def path(self) -> str:
        assert self.address.startswith("unix:")
        return self.address[5:]


@asynccontextmanager
async def served(
    *, limits: Limits | None = None, token: str | None = None, tcp: bool = False, **runtime: Any
) -> AsyncIterator[Served]:
    """A runtime served on a fresh private Unix socket (or loopback TCP with ``tcp``)."""
    with tempfile.TemporaryDirectory(prefix="tdvsm-test-") as directory:
        os.chmod(directory, 0o700)
        async with open_runtime(**runtime) as rt, anyio.create_task_group() as tg:
            app = create_app(rt, token=token, limits=limits)
            where = (
                Address(host="127.0.0.1", port=0) if tcp else Address(path=os.path.join(directory, "c.sock"))
            )
            address = await tg.start(serve, app, where)
            yield Served(rt, app, address)
            tg.cancel_scope.cancel()


async def connect_raw(address: str) -> ByteStream:
    """A raw byte stream to the server."""
    if address.startswith("unix:"):
        return await anyio.connect_unix(address[5:])
    host, port = address[7:].rsplit(":", 1)
    return await anyio.connect_tcp(host, int(port))


async def read_until_closed(stream: ByteStream, *, limit: int = 1 << 22) -> bytes:
    """Everything the server sends until it closes (or ``limit`` bytes)."""
    chunks = []
    size = 0
    try:
        while size < limit:
            chunk = await stream.receive()
            chunks.append(chunk)
            size += len(chunk)
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        pass
    return b"".join(chunks)


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """One HTTP/1.1 request, framed by hand (tests send what a broken client would)."""
    lines = [f"{method} {path} HTTP/1.1", "host: tdvsm"]
    fields = {"content-length": str(len(body)), **(headers or {})}
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def wait_until(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Poll ``condition`` (a server-side gauge, say) until it holds; fail after ``seconds``."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110  # the gauges have no event to wait on
            await anyio.sleep(0.005)
