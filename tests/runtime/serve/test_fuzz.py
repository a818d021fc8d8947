"""RELIABILITY F4: raw bytes against a live server while another client keeps working.

Each Hypothesis example runs one server (both backends) and writes its payloads, each on a
connection of its own, then half-closes. The server must answer every connection with
well-formed HTTP replies (typed JSON bodies from the app, never a 5xx) or close it cleanly,
and a client driving a VP meanwhile must see every one of its actions succeed. CI draws 6
examples per backend; ``TDVSM_FUZZ_EXAMPLES=500`` runs a longer campaign.
"""

from __future__ import annotations

import os
import re
from typing import Final

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from protocol import Completed, Rdmsr
from protocol._x86 import Msr
from runtime.serve import Limits, connect
from runtime.serve._wire import ErrorBody
from tests.runtime.serve._harness import connect_raw, request_bytes, served

_STATUS: Final = re.compile(rb"HTTP/1\.1 (\d{3}) ")
#: Valid requests the mutations start from: every route, both body formats.
_SEEDS: Final = [
    request_bytes("GET", "/healthz"),
    request_bytes("GET", "/partitions?offset=0&limit=3"),
    request_bytes("POST", "/partitions", b'{"vp_count": 2, "commit_policy": "eager"}'),
    request_bytes("GET", "/partitions/0"),
    request_bytes("POST", "/partitions/0/vps/1/execute", b'{"type":"Rdmsr","msr":3221225602}'),
    request_bytes("POST", "/partitions/0/vps/1/execute", b'[{"type":"VtlCall"},{"type":"Xsetbv","value":7}]'),
    request_bytes(
        "POST",
        "/partitions/0/vps/1/execute",
        b"\x82\xa4type\xa5Rdmsr\xa3msr\xce\xc0\x00\x00\x82",
        {"content-type": "application/msgpack"},
    ),
    request_bytes("GET", "/partitions/0/vps/1/registers/1?name=CR0,EFER"),
    request_bytes("GET", "/partitions/0/vps/1/tdx-state/0"),
    request_bytes("DELETE", "/partitions/1"),
    request_bytes("GET", "/metrics"),
    request_bytes("GET", "/events?type=Commit&partition=0"),
    b'POST /partitions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"vp_\r\n0\r\n\r\n',
    b"[" * 5000,
    b"GET / HTTP/1.1\r\n" + b"x: y\r\n" * 2000 + b"\r\n",
]


@st.composite
def _mutant(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(2, 50))
    return bytes(data)


_PAYLOADS: Final = st.lists(st.one_of(st.binary(max_size=512), _mutant()), min_size=8, max_size=24)


def _check_replies(raw: bytes, *, complete: bool = True) -> None:
    """Well-formed replies only: a status line, a head, and a typed JSON body from the app.

    With ``complete`` False the last body may be cut short: the server treats the client's
    end of stream as a disconnect and drops a reply it was still sending.
    """
    while raw:
        match = _STATUS.match(raw)
        assert match is not None, raw[:120]
        status = int(match.group(1))
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, raw[:120]
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        # Never a server error. The HTTP parser's own refusals have no body: 501 for a transfer
        # coding it does not know (RFC 9112 6.1), 505 for a version it does not speak.
        refused_by_parser = status in (501, 505) and headers.get(b"content-length") == b"0"
        assert status < 500 or status == 503 or refused_by_parser, raw[:300]
        if b"content-length" not in headers:  # chunked (an event stream) or none: the last reply
            return
        length = int(headers[b"content-length"])
        body, raw = rest[:length], rest[length:]
        if len(body) < length and not complete:
            return
        if status >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
            msgspec.json.decode(body, type=ErrorBody)


async def _replies(stream: object, quiet_for: float) -> bytes:
    """What the server sends until it closes, or until it has been quiet for ``quiet_for``, or
    for 0.6 s at most (a fuzzed request may have opened a live event stream)."""
    chunks = []
    until = anyio.current_time() + 0.6
    while anyio.current_time() < until:
        with anyio.move_on_after(quiet_for) as quiet:
            try:
                chunks.append(await stream.receive())  # type: ignore[attr-defined]
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                break
        if quiet.cancelled_caught:
            break
    return b"".join(chunks)


async def _fuzz(payloads: list[bytes]) -> None:
    # The head deadline stays above the client's keep-alive expiry (1 s): a pooled connection
    # reused just as the server's idle timer fires would be cut mid-reply.
    limits = Limits(header_timeout=2, body_timeout=0.5, write_timeout=1)
    async with served(limits=limits) as s, connect(s.address) as client:
        part = await client.create_partition(vp_count=2)
        await s.runtime.create_partition(vp_count=1)
        ok: list[object] = []
        done = anyio.Event()

        async def meanwhile() -> None:
            # Stops between requests: httpx reads a reply through async generators, and one
            # cancelled mid-read is left to the collector, which trio reports as a warning.
            vp = part.vp(0)
            while not done.is_set():
                ok.append(await vp.execute(Rdmsr(msr=Msr.LSTAR)))

        async def one(payload: bytes) -> None:
            # The payload, then whatever the server answers while our side stays open (complete
            # replies only), then our end of stream and what follows it.
            stream = await connect_raw(s.address)
            async with stream:
                answered = after = b""
                try:
                    await stream.send(payload)
                    answered = await _replies(stream, 0.3)
                    await stream.send_eof()
                except (anyio.BrokenResourceError, OSError):
                    pass  # the server closed first (a head it refused): what it sent is below
                after = await _replies(stream, 0.15)
                _check_replies(answered + after, complete=False)
                _check_replies(answered)

        async with anyio.create_task_group() as tg:
            tg.start_soon(meanwhile)
            with anyio.fail_after(20):
                async with anyio.create_task_group() as senders:
                    for payload in payloads:
                        senders.start_soon(one, payload)
            done.set()
        assert ok
        assert all(outcome == Completed(value=0) for outcome in ok)
        assert (await client.health()).status == "ok"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=int(os.environ.get("TDVSM_FUZZ_EXAMPLES", "6")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(payloads=_PAYLOADS)
def test_raw_bytes_never_break_the_server(backend: str, payloads: list[bytes]) -> None:
    anyio.run(_fuzz, payloads, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_every_seed_request_is_answered(backend: str) -> None:
    """The unmutated seeds: each is a well-formed request or a refusal, answered as such."""
    anyio.run(_fuzz, list(_SEEDS), backend=backend)


async def test_bytes_after_a_request_do_not_cut_its_reply() -> None:
    """Regression (found by the fuzz on trio): hypercorn closes the connection as soon as it parses
    bytes that are not a request; the reply to the request before them still arrives whole."""
    request = (
        b"POST /partitions/0/vps/0/execute HTTP/1.1\r\nhost: tdvsm\r\ncontent-length: 4\r\n"
        b"content-type: text/plain\r\n\r\nbody\x00"  # one byte past the declared body
    )
    async with served() as s:
        await s.runtime.create_partition(vp_count=1)
        for _ in range(20):
            stream = await connect_raw(s.address)
            async with stream:
                await stream.send(request)
                raw = await _replies(stream, 0.3)
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 415 "), raw[:200]
            assert msgspec.json.decode(body, type=ErrorBody).error == "UnsupportedMediaType"
