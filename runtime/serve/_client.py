"""``connect``: a client of a control plane with the in-process shapes and errors (httpx over anyio).

``connect("unix:/path")`` or ``connect("http://127.0.0.1:8750", token=...)`` gives a
``Client`` whose ``create_partition``, ``partition(id)``, ``vp(index).execute(action)`` and
inspections mirror ``Runtime``, ``Partition`` and ``Vp``; what needs the network is
``await``-ed (``statistics()`` too). Error replies raise the in-process exception classes
(``Busy``, ``PartitionFailed``, ``ValueError`` ...); a broken connection raises
``ConnectionLost``. It runs under asyncio and trio (httpx and httpcore use anyio).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlencode

import anyio
import httpx
import msgspec

from actors import PartitionConfig, TdxL2State, VpStatistics, VtlControl
from protocol import HvRegisterName as Reg, InterceptMessage, Outcome, Vtl

from .._host import PartitionStatistics, RuntimeStatistics
from ._errors import ConnectionLost, describe, raise_for
from ._pipeline import Pipeline
from ._sockets import parse_address
from ._sse import EventReader, open_event_stream
from ._wire import JSON, SNAPSHOT, Health, PartitionDetail, PartitionInfo, PartitionList, encode_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from protocol import Action

__all__ = ("Client", "RemotePartition", "RemoteVp", "connect", "raise_for")

T = TypeVar("T")
_HOST: Final = "http://tdvsm"
_outcome: msgspec.json.Decoder[Outcome] = msgspec.json.Decoder(Outcome)
_outcomes: msgspec.json.Decoder[list[Outcome]] = msgspec.json.Decoder(list[Outcome])
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decode(data: bytes, kind: type[T] | Any) -> T:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    value: T = decoder.decode(data)
    return value


class _Body(httpx.AsyncByteStream):
    """A request body whose iterator is a plain object: httpx's own is an async generator,
    which trio reports when a cancelled request leaves it suspended (encode/httpx#3686)."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _Body:  # an iterator, not an async generator
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data


class Client:
    """A connection pool to one control plane (made by ``connect``)."""

    def __init__(self, http: httpx.AsyncClient, address: str, token: str | None, mount: str = "") -> None:
        self._http = http
        self.address = address
        self.mount = mount
        self._where = parse_address(address)
        self._token = token

    def __repr__(self) -> str:
        return f"<Client {self.address}>"

    async def request(
        self, method: str, path: str, *, content: bytes | None = None, media: str = JSON, **params: Any
    ) -> bytes:
        """One request; returns the body of a 2xx reply, raises the typed error otherwise."""
        request = self._http.build_request(method, path, params=params or None)
        if content is not None:
            request.stream = _Body(content)
            request.headers["content-length"] = str(len(content))
            request.headers["content-type"] = media
        try:
            reply = await self._http.send(request)
        except httpx.TimeoutException as exc:
            msg = f"{self.address}: no reply to {method} {path} in time ({type(exc).__name__})"
            raise ConnectionLost(msg) from exc
        except httpx.TransportError as exc:
            msg = f"{self.address}: connection lost during {method} {path}: {describe(exc)}"
            raise ConnectionLost(msg) from exc
        raise_for(reply.status_code, reply.content)
        return reply.content

    async def create_partition(self, **config: object) -> RemotePartition:
        """Create a partition from ``PartitionConfig`` keywords; VP 0 runs from creation.

        Raises:
            ValueError: a bad or unknown configuration field (the message names it).
        """
        try:
            body = msgspec.json.encode(config)
        except TypeError as exc:
            msg = f"PartitionConfig: {exc}"
            raise ValueError(msg) from None
        data = await self.request("POST", "/partitions", content=body)
        return RemotePartition(self, _decode(data, PartitionInfo))

    async def partition(self, partition_id: int) -> RemotePartition:
        """The partition with id ``partition_id``.

        Raises:
            KeyError: no partition has that id.
        """
        if type(partition_id) is not int or partition_id < 0:
            msg = f"partition id must be a non-negative int, got {partition_id!r}"
            raise ValueError(msg)
        return RemotePartition(
            self, _decode(await self.request("GET", f"/partitions/{partition_id}"), PartitionInfo)
        )

    async def restore_partition(self, data: bytes) -> RemotePartition:
        """A new partition (new id) on the server in exactly the state ``snapshot()`` encoded.

        Raises:
            ValueError: the data is damaged, foreign or of another version (a ``ProtocolError``);
                nothing is created.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            msg = f"restore_partition: a snapshot is bytes, got {type(data).__name__}"  # type: ignore[unreachable]
            raise TypeError(msg)
        reply = await self.request("POST", "/partitions/restore", content=bytes(data), media=SNAPSHOT)
        return RemotePartition(self, _decode(reply, PartitionInfo))

    async def partitions(self, *, offset: int = 0, limit: int = 1000) -> PartitionList:
        """A page of the partitions (``total`` says how many there are)."""
        return _decode(await self.request("GET", "/partitions", offset=offset, limit=limit), PartitionList)

    async def statistics(self) -> RuntimeStatistics:
        """Counters of the server's runtime."""
        return _decode(await self.request("GET", "/statistics"), RuntimeStatistics)

    async def health(self) -> Health:
        """``/healthz``."""
        return _decode(await self.request("GET", "/healthz"), Health)

    async def metrics(self) -> str:
        """The Prometheus text exposition."""
        return (await self.request("GET", "/metrics")).decode()

    @asynccontextmanager
    async def events(
        self, *, partitions: Iterable[int] | None = None, types: Iterable[str] | None = None
    ) -> AsyncIterator[EventReader]:
        """The live event stream (a connection of its own): engine events, each as the in-process
        listener gets it, and a last ``Cut`` if this reader fell behind or the server stops.

        Raises:
            ValueError: an unknown event type or a bad partition id (422).
            ConnectionLost: the stream broke.
        """
        query: dict[str, str] = {}
        if partitions is not None:
            query["partition"] = ",".join(str(p) for p in partitions)
        if types is not None:
            query["type"] = ",".join(types)
        target = self.mount + "/events" + ("?" + urlencode(query) if query else "")
        headers = [(b"host", b"tdvsm"), (b"accept", b"text/event-stream")]
        if self._token is not None:
            headers.append((b"authorization", b"Bearer " + self._token.encode()))
        stream, reader, status, body = await open_event_stream(self._where, self.address, target, headers)
        async with stream:
            raise_for(status, body)
            yield reader

    @asynccontextmanager
    async def pipeline(self, *, depth: int = 4) -> AsyncIterator[Pipeline]:
        """A connection of its own on which up to ``depth`` batches are in flight, run in order."""
        async with Pipeline.open(self.address, self._token, depth=depth, mount=self.mount) as pipe:
            yield pipe


class RemotePartition:
    """A partition of the server (``Client.create_partition`` / ``Client.partition``)."""

    def __init__(self, client: Client, info: PartitionInfo) -> None:
        self._client = client
        self.partition_id = info.id
        self.vp_count = info.vp_count
        self.config: PartitionConfig = info.config

    def __repr__(self) -> str:
        return f"<RemotePartition id={self.partition_id} vps={self.vp_count} at {self._client.address}>"

    def vp(self, index: int) -> RemoteVp:
        """A handle on VP ``index`` (no request)."""
        if type(index) is not int or not 0 <= index < self.vp_count:
            msg = f"partition {self.partition_id}: vp index {index!r} out of range 0..{self.vp_count - 1}"
            raise ValueError(msg)
        return RemoteVp(self._client, self.partition_id, index)

    async def info(self) -> PartitionInfo:
        """State (running, failed, stopped) and failure reason, as the server sees them now."""
        return _decode(await self._client.request("GET", f"/partitions/{self.partition_id}"), PartitionInfo)

    async def statistics(self) -> PartitionStatistics:
        """Counters of the supervisor and every VP."""
        data = await self._client.request("GET", f"/partitions/{self.partition_id}")
        return _decode(data, PartitionDetail).statistics

    async def snapshot(self) -> bytes:
        """The server's ``Partition.snapshot()``: every VP committed, the partition encoded.

        Raises:
            ActorCrashed: a VP crashed while committing (it restarts; retry the snapshot).
            PartitionFailed, anyio.ClosedResourceError: the partition has ended.
        """
        return await self._client.request("POST", f"/partitions/{self.partition_id}/snapshot")

    async def stop(self) -> None:
        """Stop every actor of the partition on the server."""
        await self._client.request("DELETE", f"/partitions/{self.partition_id}")


class RemoteVp:
    """A VP of a server's partition: ``execute`` and the inspections, as on ``runtime.Vp``."""

    __slots__ = ("_client", "_path", "index", "partition_id")

    def __init__(self, client: Client, partition_id: int, index: int) -> None:
        self._client = client
        self.partition_id = partition_id
        self.index = index
        self._path = f"/partitions/{partition_id}/vps/{index}"

    def __repr__(self) -> str:
        return f"<RemoteVp partition={self.partition_id} vp={self.index}>"

    @property
    def path(self) -> str:
        """The VP's URL path on the server."""
        return self._path

    async def execute(self, action: Action) -> Outcome:
        """The guest on this VP performs ``action`` in its active VTL; returns the outcome."""
        return _outcome.decode(
            await self._client.request("POST", self._path + "/execute", content=encode_json(action))
        )

    async def execute_many(self, actions: Sequence[Action]) -> list[Outcome]:
        """Run ``actions`` in order in one request; returns their outcomes.

        Raises:
            The first failing action's error, with ``index`` (its position) and ``outcomes``
            (of the actions before it, which ran) set on the exception.
        """
        body = encode_json(list(actions))
        return _outcomes.decode(await self._client.request("POST", self._path + "/execute", content=body))

    async def registers(self, vtl: Vtl, names: Iterable[Reg]) -> dict[Reg, int]:
        """Committed values of ``names`` in ``vtl``."""
        wanted = ",".join(Reg(n).name for n in names)
        data = await self._client.request("GET", f"{self._path}/registers/{int(vtl)}", name=wanted)
        values: dict[str, int] = _decode(data, dict[str, int])
        return {Reg[name]: value for name, value in values.items()}

    async def tdx_state(self, vtl: Vtl) -> TdxL2State:
        """The committed derived TDX L2 state of ``vtl``."""
        return _decode(await self._client.request("GET", f"{self._path}/tdx-state/{_vtl(vtl)}"), TdxL2State)

    async def sint0_message(self, vtl: Vtl) -> InterceptMessage | None:
        """The intercept message in ``vtl``'s SINT0 slot, if any."""
        data = await self._client.request("GET", f"{self._path}/sint0-message/{_vtl(vtl)}")
        return _decode(data, InterceptMessage | None)

    async def vtl_control(self, vtl: Vtl) -> VtlControl:
        """``vtl``'s VP assist page VTL control block."""
        return _decode(await self._client.request("GET", f"{self._path}/vtl-control/{_vtl(vtl)}"), VtlControl)

    async def statistics(self) -> VpStatistics:
        """Counters of this VP (``active_vtl`` among them)."""
        return _decode(await self._client.request("GET", self._path), VpStatistics)


def _vtl(vtl: object) -> str:
    """The path segment of a VTL; the server answers anything else with ValueError."""
    return str(int(vtl)) if isinstance(vtl, int) and not isinstance(vtl, bool) else str(vtl)


@asynccontextmanager
async def connect(
    address: str, *, token: str | None = None, mount: str = "", reply_timeout: float = 30.0
) -> AsyncIterator[Client]:
    """A client of the control plane at ``address`` (``unix:PATH`` or ``http://HOST:PORT``).

    ``mount`` is the path where a host mounted the app (``"/tdvsm"``); ``reply_timeout``
    bounds each request (a batch of many actions needs more than one second).

    Raises:
        ValueError: a malformed address.
        ConnectionLost: (on first use) nobody answers there.
    """
    where = parse_address(address)
    if mount and (not mount.startswith("/") or mount.endswith("/")):
        msg = f"mount must be a path like /tdvsm (no trailing slash), got {mount!r}"
        raise ValueError(msg)
    headers = {"accept": JSON, "content-type": JSON}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    # Idle pooled connections are dropped well before the server's idle timeout (5 s), so a
    # request never goes out on a connection the server is closing.
    pool = httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=1.0)
    transport = httpx.AsyncHTTPTransport(uds=where.path, limits=pool, retries=1)
    base = (_HOST if where.is_unix else str(where)) + mount
    async with httpx.AsyncClient(
        transport=transport, base_url=base, headers=headers, timeout=reply_timeout
    ) as http:
        yield Client(http, address, token, mount)
    await anyio.lowlevel.checkpoint()
