"""Headless Chromium driven over the DevTools protocol (a WebSocket: wsproto, which hypercorn brings).

``--dump-dom`` with a virtual-time budget stops the page's clock while requests are pending, so a
page that polls every second never gets its second poll; the DevTools protocol lets the test
wait in real time, read what the page shows and take a screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from anyio.abc import ByteStream

__all__ = ("CHROMIUM", "Page", "open_page")

#: The browser (the Debian package ``chromium``; .ci/run installs it when missing).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab: ``evaluate`` JavaScript, ``screenshot``."""

    def __init__(self, stream: ByteStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._ids = itertools.count(1)
        self._text = ""

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; returns its result."""
        ident = next(self._ids)
        await self._stream.send(
            self._ws.send(Message(data=json.dumps({"id": ident, "method": method, "params": params})))
        )
        while True:
            reply = await self._receive()
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    async def _receive(self) -> dict[str, Any]:
        while True:
            for event in self._ws.events():
                if isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        text, self._text = self._text, ""
                        decoded: dict[str, Any] = json.loads(text)
                        return decoded
                elif isinstance(event, CloseConnection):
                    raise anyio.EndOfStream
            self._ws.receive_data(await self._stream.receive())

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float) -> Any:
        """Poll ``expression`` until it is truthy (real time); returns its value."""
        with anyio.fail_after(seconds):
            while not (value := await self.evaluate(expression)):  # noqa: ASYNC110  # the page's state
                await anyio.sleep(0.2)
        return value

    async def screenshot(self, path: Path) -> None:
        """Save a PNG of the viewport."""
        data = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await anyio.Path(path).write_bytes(base64.b64decode(data["data"]))


@asynccontextmanager
async def open_page(url: str, *, width: int = 1400, height: int = 1150) -> AsyncIterator[Page]:
    """Start headless Chromium on ``url``; yields its page once connected."""
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="tdvsm-chromium-")
    try:
        command = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        async with (
            await anyio.open_process(command, stdout=subprocess.DEVNULL) as process,
            anyio.create_task_group() as tg,
        ):
            try:
                endpoint = await _devtools_endpoint(process)
                tg.start_soon(_drain, process.stderr)  # its log must not fill the pipe and block it
                async with httpx.AsyncClient(base_url=f"http://{endpoint}") as http:
                    target = (await http.put(f"/json/new?{url}")).json()
                host, port, path = re.match(
                    r"ws://([^:/]+):(\d+)(/.*)", target["webSocketDebuggerUrl"]
                ).groups()  # type: ignore[union-attr]
                stream = await anyio.connect_tcp(host, int(port))
                async with stream:
                    ws = WSConnection(ConnectionType.CLIENT)
                    await stream.send(ws.send(Request(host=f"{host}:{port}", target=path)))
                    while not any(isinstance(e, AcceptConnection) for e in ws.events()):
                        ws.receive_data(await stream.receive())
                    yield Page(stream, ws)
            finally:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                tg.cancel_scope.cancel()
    finally:
        await _remove(profile)


async def _remove(profile: str) -> None:
    """Remove Chromium's profile: its helper processes may still write there for a moment
    after the browser's own process has exited ("Directory not empty")."""
    for _ in range(50):
        try:
            shutil.rmtree(profile)
        except FileNotFoundError:
            return
        except OSError:
            await anyio.sleep(0.1)
        else:
            return
    shutil.rmtree(profile, ignore_errors=True)


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def _devtools_endpoint(process: Any) -> str:
    """``host:port`` from Chromium's "DevTools listening on ws://..." line on stderr."""
    seen = b""
    with anyio.fail_after(30):
        async for chunk in process.stderr:
            seen += chunk
            match = re.search(rb"DevTools listening on ws://([^/\s]+)/", seen)
            if match:
                return match.group(1).decode()
    msg = f"chromium did not start: {seen[-500:]!r}"
    raise RuntimeError(msg)
