"""The live event stream (``GET /events``): engine events fanned out to bounded subscribers as SSE.

The hub listens to the runtime only while someone subscribes (and asks for commit events only
while some subscriber wants them). Each subscriber has a buffer of ``Limits.subscriber_buffer``
events; the runtime's listener only appends to it, so the runtime never waits for a subscriber.
A subscriber whose buffer fills is cut (RELIABILITY F5): it stops buffering, its stream sends
what it already holds, then a last ``Cut`` message saying how many events it missed, and ends.
A peer that stops reading altogether is dropped when a write does not drain within the write
deadline (the guard's), so it is gone within ``write_timeout`` of its socket filling up.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

import anyio
import msgspec

from .._events import CommitEvent, EngineEvent, FailureEvent, InterceptEvent, VtlSwitchEvent
from ._guard import reply
from ._wire import ErrorBody

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import Receive, Scope, Send

    from .._host import Runtime
    from ._guard import Limits
    from ._metrics import Metrics

__all__ = ("KINDS", "Cut", "EventHub", "EventStream", "Subscriber")

#: Event type (the JSON tag) -> engine event class.
KINDS: Final[dict[str, type[EngineEvent]]] = {
    "VtlSwitch": VtlSwitchEvent,
    "SecureIntercept": InterceptEvent,
    "Commit": CommitEvent,
    "PartitionFailure": FailureEvent,
}
_NAMES: Final = {cls: name for name, cls in KINDS.items()}


class Cut(msgspec.Struct, tag=True, frozen=True, kw_only=True):
    """The last message of a subscriber that fell behind: ``missed`` events were not delivered."""

    missed: int
    reason: str


class Subscriber:
    """One event-stream subscriber: its filter, its bounded buffer and whether it was cut."""

    __slots__ = ("buffer", "capacity", "cut", "gone", "kinds", "missed", "partitions", "reason", "wakeup")

    def __init__(self, capacity: int, partitions: frozenset[int] | None, kinds: frozenset[type]) -> None:
        self.buffer: deque[tuple[int, EngineEvent]] = deque()
        self.capacity = capacity
        self.partitions = partitions
        self.kinds = kinds
        self.cut = False
        self.gone = False
        self.reason = ""
        self.missed = 0
        self.wakeup = anyio.Event()

    def offer(self, seq: int, event: EngineEvent) -> bool:
        """Buffer ``event`` (synchronous, never waits); False when it was dropped."""
        if self.cut:
            self.missed += 1
            return False
        if len(self.buffer) >= self.capacity:
            self.end(f"subscriber buffer of {self.capacity} events full: the reader fell behind")
            self.missed += 1
            return False
        self.buffer.append((seq, event))
        self.wakeup.set()
        return True

    def end(self, reason: str) -> None:
        """Stop buffering: the stream sends what it holds, then ``Cut`` with ``reason``."""
        if not self.cut:
            self.cut = True
            self.reason = reason
            self.wakeup.set()

    async def wait(self) -> None:
        """Wait until something was buffered (or the subscriber was cut)."""
        if not self.buffer and not self.cut:
            await self.wakeup.wait()
        self.wakeup = anyio.Event()


class EventHub:
    """Fans the runtime's events out to the subscribers; attached to the runtime only while needed."""

    def __init__(self, runtime: Runtime, metrics: Metrics, limits: Limits) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self._limits = limits
        self._subscribers: list[Subscriber] = []
        self._detach: Callable[[], None] | None = None
        self._commits = False
        self._seq = 0

    def open(self, partitions: frozenset[int] | None, kinds: frozenset[type]) -> Subscriber:
        """A new subscriber (``partitions`` None: every partition)."""
        subscriber = Subscriber(self._limits.subscriber_buffer, partitions, kinds)
        self._subscribers.append(subscriber)
        self._metrics.subscribers = len(self._subscribers)
        self._attach()
        return subscriber

    def end_all(self, reason: str) -> None:
        """End every subscriber's stream (the server is shutting down)."""
        for subscriber in self._subscribers:
            subscriber.end(reason)

    def close(self, subscriber: Subscriber) -> None:
        """Forget ``subscriber`` (its stream ended)."""
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
            self._metrics.subscribers = len(self._subscribers)
            if subscriber.missed:
                self._metrics.subscribers_cut += 1
            self._attach()

    def _attach(self) -> None:
        """Listen to the runtime iff there are subscribers; with commits iff one wants them."""
        wanted = bool(self._subscribers)
        commits = any(CommitEvent in s.kinds for s in self._subscribers)
        if self._detach is not None and (not wanted or commits != self._commits):
            self._detach()
            self._detach = None
        if wanted and self._detach is None:
            self._detach = self._runtime.subscribe(self._on_event, commits=commits)
            self._commits = commits

    def _on_event(self, event: EngineEvent) -> None:
        self._seq += 1
        kind = type(event)
        for subscriber in self._subscribers:
            if kind in subscriber.kinds and (
                subscriber.partitions is None or event.partition in subscriber.partitions
            ):
                if not subscriber.offer(self._seq, event):
                    self._metrics.events_dropped += 1


_encoder = msgspec.json.Encoder()


def _sse(seq: int | None, name: str, data: bytes) -> bytes:
    head = b"" if seq is None else b"id: %d\n" % seq
    return head + b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class EventStream:
    """The ``GET /events`` endpoint (raw ASGI: it owns its writes and the disconnect watch).

    Query: ``partition`` (repeatable or comma-separated ids; default every partition) and
    ``type`` (``VtlSwitch``, ``SecureIntercept``, ``Commit``, ``PartitionFailure``; default
    all of them).
    """

    def __init__(self, hub: EventHub, limits: Limits) -> None:
        self.hub = hub
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            partitions, kinds = _parse_filter(scope["query_string"])
        except ValueError as exc:
            await reply(send, 422, ErrorBody(error="ValueError", message=str(exc), field="query"))
            return
        subscriber = self.hub.open(partitions, kinds)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                        (b"connection", b"close"),  # a stream is the connection's whole life
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch_disconnect, receive, subscriber)
                await self._pump(subscriber, send)
                tg.cancel_scope.cancel()  # the watcher (the pump is done)
        finally:
            self.hub.close(subscriber)

    async def _pump(self, subscriber: Subscriber, send: Send) -> None:
        heartbeat = self.limits.heartbeat
        while True:
            with anyio.move_on_after(heartbeat):
                await subscriber.wait()
            # Read ``cut`` before draining: what was buffered before the cut is still delivered.
            cut = subscriber.cut
            chunk = _drain(subscriber)
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            elif not cut:
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
            if cut:
                if subscriber.gone:
                    return
                last = _drain(subscriber) + _sse(
                    None, "Cut", _encoder.encode(Cut(missed=subscriber.missed, reason=subscriber.reason))
                )
                await send({"type": "http.response.body", "body": last})
                return


def _drain(subscriber: Subscriber) -> bytes:
    """The subscriber's buffered events as SSE messages (the buffer is emptied)."""
    buffer = subscriber.buffer
    chunks = []
    while buffer:
        seq, event = buffer.popleft()
        chunks.append(_sse(seq, _NAMES[type(event)], _encoder.encode(event)))
    return b"".join(chunks)


async def _watch_disconnect(receive: Receive, subscriber: Subscriber) -> None:
    """End the stream when the client goes away.

    It wakes the pump rather than cancelling it: the pump may be inside the server's own
    send path (closing the connection), which must not be interrupted.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            subscriber.gone = True
            subscriber.end("the client went away")
            return


def _parse_filter(query: bytes) -> tuple[frozenset[int] | None, frozenset[type]]:
    """``partition`` and ``type`` query parameters.

    Raises:
        ValueError: a partition id that is not a non-negative integer, or an unknown type.
    """
    from urllib.parse import parse_qsl

    partitions: set[int] = set()
    kinds: set[type] = set()
    seen_partition = False
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key not in ("partition", "type"):
            msg = f"events: unknown query parameter {key[:32]!r} (known: partition, type)"
            raise ValueError(msg)
        for item in filter(None, (v.strip() for v in value.split(","))):
            if key == "partition":
                seen_partition = True
                if not item.isdigit():
                    msg = f"events: partition must be a non-negative integer, got {item[:32]!r}"
                    raise ValueError(msg)
                partitions.add(int(item))
            elif key == "type":
                if item not in KINDS:
                    msg = f"events: unknown type {item[:32]!r} (known: {', '.join(KINDS)})"
                    raise ValueError(msg)
                kinds.add(KINDS[item])
    return (frozenset(partitions) if seen_partition else None), frozenset(kinds or KINDS.values())
