"""The live event stream (``GET /events``): filters, and subscribers that fall behind (RELIABILITY F5)."""

from __future__ import annotations

import anyio
import msgspec

from protocol import Rdmsr, Vtl, VtlCall, VtlReturn
from protocol._x86 import Msr
from runtime import CommitEvent, EngineEvent, VtlSwitchEvent
from runtime.serve import Cut, Limits, connect
from tests.runtime.serve._harness import connect_raw, read_until_closed, request_bytes, served, wait_until
from tests.scenarios._bringup import enter_vtl1

LSTAR = Rdmsr(msr=Msr.LSTAR)


async def test_events_are_filtered_by_partition_and_type() -> None:
    async with served() as s, connect(s.address) as client:
        watched, other = [await s.runtime.create_partition(vp_count=1) for _ in range(2)]
        async with client.events(partitions=[watched.partition_id], types=["VtlSwitch"]) as events:
            await wait_until(lambda: s.plane.metrics.subscribers == 1)
            for part in (other, watched):
                await enter_vtl1(part)
                await part.vp(0).execute(VtlReturn(fast=True))
            received = []
            async for event in events:
                received.append(event)
                if len(received) == 2:
                    break
        assert received == [
            VtlSwitchEvent(
                partition=watched.partition_id, vp=0, from_vtl=Vtl.VTL0, to_vtl=Vtl.VTL1, entry_reason=1
            ),
            VtlSwitchEvent(
                partition=watched.partition_id, vp=0, from_vtl=Vtl.VTL1, to_vtl=Vtl.VTL0, entry_reason=0
            ),
        ]
        await wait_until(lambda: s.plane.metrics.subscribers == 0)
        assert s.runtime.statistics().listeners == 1  # only the metrics' own listener is left


async def test_commit_events_only_while_someone_wants_them() -> None:
    """The hub asks the runtime for commit events only while a subscriber wants them."""
    async with served() as s, connect(s.address) as client:
        vp = (await s.runtime.create_partition(vp_count=1)).vp(0)
        listeners = s.runtime._scheduler.listeners
        assert not listeners.commits
        async with client.events(types=["Commit"]) as events:
            await wait_until(lambda: s.plane.metrics.subscribers == 1)
            assert listeners.commits
            await vp.execute(LSTAR)
            await vp.execute(LSTAR)
            event = await anext(aiter(events))
            assert isinstance(event, CommitEvent)
        await wait_until(lambda: not listeners.commits)


async def _ping_pong(part: object, rounds: int) -> None:
    """VP 0 (in VTL1) returns to VTL0 and calls back in ``rounds`` times: 2 switches a round."""
    vp = part.vp(0)  # type: ignore[attr-defined]
    for _ in range(rounds):
        await vp.execute(VtlReturn(fast=True))
        await vp.execute(VtlCall())


async def test_a_subscriber_that_never_reads_is_cut_and_the_runtime_never_waits() -> None:
    """Its buffer fills, it is cut, and its connection is dropped within the write deadline + 1 s,
    while the actions that produce the events and another client's requests go on."""
    limits = Limits(subscriber_buffer=64, write_timeout=0.5)
    async with served(limits=limits) as s, connect(s.address) as client:
        part = await s.runtime.create_partition(vp_count=1)
        await enter_vtl1(part)
        stream = await connect_raw(s.address)
        await stream.send(request_bytes("GET", "/events?type=VtlSwitch"))
        await wait_until(lambda: s.plane.metrics.subscribers == 1)
        with anyio.fail_after(20):  # 40,000 events: far more than the socket and the buffer hold
            await _ping_pong(part, 20_000)
            assert (await client.health()).status == "ok"
        metrics = s.plane.metrics
        assert metrics.events_dropped > 0
        await wait_until(lambda: metrics.subscribers == 0, 0.5 + 1)
        assert metrics.subscribers_cut == 1
        await wait_until(lambda: metrics.connections == 1, 0.5 + 1)  # only the client's pool is left
        await stream.aclose()


async def test_a_slow_reader_gets_every_event_it_can_then_a_cut_saying_how_many_it_missed() -> None:
    """Delivered + missed == produced: nothing is lost silently."""
    limits = Limits(subscriber_buffer=64, write_timeout=10)
    async with served(limits=limits) as s:
        part = await s.runtime.create_partition(vp_count=1)
        await enter_vtl1(part)
        produced: list[EngineEvent] = []
        stream = await connect_raw(s.address)
        async with stream:
            await stream.send(request_bytes("GET", f"/events?type=VtlSwitch&partition={part.partition_id}"))
            await wait_until(lambda: s.plane.metrics.subscribers == 1)
            unsubscribe = s.runtime.subscribe(produced.append, commits=False)
            await _ping_pong(part, 10_000)  # not reading meanwhile
            unsubscribe()
            with anyio.fail_after(10):
                data = await read_until_closed(stream, limit=1 << 26)
        body = data.split(b"\r\n\r\n", 1)[1]
        messages = _sse_messages(body)
        delivered = [m for m in messages if m[0] == "VtlSwitch"]
        cut = msgspec.json.decode(messages[-1][1], type=Cut)
        assert messages[-1][0] == "Cut"
        assert cut.missed > 0
        assert "fell behind" in cut.reason
        assert len(delivered) + cut.missed == len(produced) == 20_000
        seqs = [m[2] for m in delivered]
        assert seqs == sorted(seqs)


def _sse_messages(body: bytes) -> list[tuple[str, bytes, int]]:
    """(event, data, id) of each message in a chunked SSE body (chunk sizes stripped)."""
    text = _unchunk(body)
    out = []
    for block in text.split(b"\n\n"):
        fields = dict(
            line.split(b": ", 1) for line in block.split(b"\n") if b": " in line and line[:1] != b":"
        )
        if b"event" in fields:
            out.append((fields[b"event"].decode(), fields[b"data"], int(fields.get(b"id", b"-1"))))
    return out


def _unchunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


async def test_shutdown_ends_every_stream_with_a_cut() -> None:
    async with served() as s, connect(s.address) as client:
        async with client.events() as events:
            await wait_until(lambda: s.plane.metrics.subscribers == 1)
            s.plane.hub.end_all("the server is shutting down")
            received = [event async for event in events]
        assert received == [Cut(missed=0, reason="the server is shutting down")]
