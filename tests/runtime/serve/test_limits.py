"""RELIABILITY F1 and F5 over HTTP, with real sockets: body cap, deadlines, connection limit, slow peers.

Each limit is set small where the test would otherwise wait for the default (seconds); the
checks that something happens "within the deadline" allow one second more, as F5 says.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Final

import anyio
import msgspec
import pytest

from protocol import MAX_FRAME
from runtime import Busy
from runtime.serve import Limits, connect
from tests.runtime.serve._harness import connect_raw, read_until_closed, request_bytes, served, wait_until

EXECUTE: Final = "/partitions/0/vps/0/execute"


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response[9:12])


def _body(response: bytes) -> dict[str, object]:
    decoded: dict[str, object] = msgspec.json.decode(response.split(b"\r\n\r\n", 1)[1])
    return decoded


async def _exchange(address: str, data: bytes, *, wait: float = 5) -> bytes:
    stream = await connect_raw(address)
    async with stream:
        await stream.send(data)
        with anyio.fail_after(wait):
            return await read_until_closed(stream)


# ---- F1: the body cap, checked before the body is read -----------------------------------------


@pytest.mark.parametrize("length", [0, 1, MAX_FRAME - 1, MAX_FRAME])
async def test_bodies_up_to_the_cap_are_read_and_refused_as_malformed(length: int) -> None:
    """Up to the cap (1 MiB, protocol.MAX_FRAME) the body is read; junk is a typed 422."""
    async with served() as s:
        await s.runtime.create_partition(vp_count=1)
        data = request_bytes("POST", EXECUTE, b"x" * length, {"connection": "close"})
        response = await _exchange(s.address, data)
        assert _status(response) == 422
        assert _body(response)["error"] == "ProtocolError"


@pytest.mark.parametrize("length", [MAX_FRAME + 1, 2**32 - 1])
async def test_bodies_over_the_cap_are_refused_before_reading(length: int) -> None:
    """Only the head is sent: the 413 comes back at once, the connection is closed, memory flat."""
    async with served() as s:
        await s.runtime.create_partition(vp_count=1)
        head = request_bytes("POST", EXECUTE, headers={"content-length": str(length)})
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            response = await _exchange(s.address, head)
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        assert _status(response) == 413
        assert _body(response) == {
            "error": "TooLarge",
            "message": f"request body of {length} bytes exceeds the limit of {MAX_FRAME} bytes",
        }
        assert b"connection: close" in response.lower()
        assert peak < 1 << 20
        assert s.runtime.partition(0).vp(0).statistics().actions == 0


async def test_a_chunked_body_over_the_cap_is_refused() -> None:
    async with served(limits=Limits(max_body=4096)) as s:
        await s.runtime.create_partition(vp_count=1)
        chunk = b"x" * 1000
        head = f"POST {EXECUTE} HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".encode()
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
        response = await _exchange(s.address, head + body)
        assert _status(response) == 413
        assert _body(response)["error"] == "TooLarge"


# ---- F5: deadlines -----------------------------------------------------------------------------


async def _trickle(stream: object, data: bytes, period: float) -> None:
    try:
        for i in range(len(data)):
            await stream.send(data[i : i + 1])  # type: ignore[attr-defined]
            await anyio.sleep(period)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


async def test_a_slowloris_head_is_cut_at_the_header_deadline() -> None:
    async with served(limits=Limits(header_timeout=0.5)) as s:
        stream = await connect_raw(s.address)
        started = time.monotonic()
        async with stream, anyio.create_task_group() as tg:
            tg.start_soon(_trickle, stream, request_bytes("GET", "/healthz") * 10, 0.05)
            with anyio.fail_after(0.5 + 1):
                await read_until_closed(stream)
            tg.cancel_scope.cancel()
        assert time.monotonic() - started >= 0.5  # not before the deadline
        async with connect(s.address) as client:  # the server carries on
            assert (await client.health()).status == "ok"


async def test_a_request_head_over_the_header_cap_is_431() -> None:
    """The server buffers at most 16 KiB of an incomplete head (h11's cap; hypercorn reads 64 KiB
    at a time, so a head that arrives whole in one read may be up to that)."""
    async with served() as s:
        response = await _exchange(
            s.address, request_bytes("GET", "/healthz", headers={"x-big": "a" * 100_000})
        )
        assert _status(response) == 431


async def test_a_stalled_body_is_cut_at_the_body_deadline() -> None:
    async with served(limits=Limits(body_timeout=0.5)) as s:
        await s.runtime.create_partition(vp_count=1)
        head = request_bytes("POST", EXECUTE, headers={"content-length": "100"})
        stream = await connect_raw(s.address)
        async with stream:
            await stream.send(head + b'{"type":')
            with anyio.fail_after(0.5 + 1):
                response = await read_until_closed(stream)
        assert _status(response) == 408
        assert _body(response)["error"] == "Timeout"


# ---- F5: the connection limit ------------------------------------------------------------------


async def test_the_connection_limit_refuses_with_a_typed_503() -> None:
    async with served(limits=Limits(max_connections=8, header_timeout=1.0)) as s:
        streams = [await connect_raw(s.address) for _ in range(8)]
        await wait_until(lambda: s.plane.metrics.connections == 8)
        response = await _exchange(s.address, request_bytes("GET", "/healthz"))
        assert _status(response) == 503
        assert _body(response)["error"] == "TooManyConnections"
        async with connect(s.address) as client:
            with pytest.raises(Busy, match="connection limit of 8"):
                await client.health()
        await streams.pop().aclose()
        await wait_until(lambda: s.plane.metrics.connections < 8)
        async with connect(s.address) as client:
            assert (await client.health()).status == "ok"
        assert s.plane.metrics.connections_refused >= 2
        for stream in streams:
            await stream.aclose()


async def test_a_thousand_slow_clients_are_all_gone_within_the_header_deadline() -> None:
    """1,000 clients trickling a request head: refused at the limit or cut at the deadline."""
    limits = Limits(max_connections=256, header_timeout=1.0)
    async with served(limits=limits) as s:
        ended: list[float] = []

        async def slow_client() -> None:
            stream = await connect_raw(s.address)
            started = time.monotonic()
            async with stream, anyio.create_task_group() as tg:
                tg.start_soon(_trickle, stream, request_bytes("GET", "/healthz"), 0.5)
                await read_until_closed(stream)
                tg.cancel_scope.cancel()
            ended.append(time.monotonic() - started)

        with anyio.fail_after(1.0 + 1 + 5):  # deadline + 1 s, plus connecting 1,000 sockets
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(slow_client)
        assert len(ended) == 1000
        assert max(ended) <= 1.0 + 1
        await wait_until(
            lambda: not (s.plane.metrics.connections), 2
        )  # the server's side of the closed connections is gone too
        async with connect(s.address) as client:
            assert (await client.health()).status == "ok"


# ---- F5: a peer that never reads ---------------------------------------------------------------


async def test_a_client_that_never_reads_is_dropped_at_the_write_deadline() -> None:
    """Pipelined requests for 40 KB replies, never read: dropped once its socket is full."""
    async with served(limits=Limits(write_timeout=0.5)) as s:
        stream = await connect_raw(s.address)
        await stream.send(request_bytes("GET", "/openapi.json") * 400)
        async with connect(s.address) as client:  # another client is served meanwhile
            assert (await client.health()).status == "ok"
        await wait_until(
            lambda: not (s.plane.metrics.connections > 0), 0.5 + 1 + 2
        )  # the deadline + 1 s, after filling the socket
        await stream.aclose()
