"""The partition and VP routes: create, list, delete, snapshot and restore; execute (one action
or a batch) and inspect.

Each handler turns a known exception into its typed reply (``_app.error_response``): the
in-process API's errors keep their type across the wire. A batch runs its actions in order
on the VP and stops at the first one that raises; the error reply then says which one
(``index``) and carries the outcomes of those before it, which did run.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from protocol import HvRegisterName as Reg, ProtocolError, ProtocolErrorCode, Vtl

from ._errors import error_type
from ._guard import RequestRejected, header
from ._metrics import partition_state
from ._replies import error_response, json_response
from ._wire import (
    JSON,
    MSGPACK,
    SNAPSHOT,
    Format,
    PartitionDetail,
    PartitionInfo,
    PartitionList,
    decode_actions,
    decode_config,
    encode_outcomes,
    format_of,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from protocol import Outcome

    from .._host import Partition, Runtime, Vp
    from ._metrics import Metrics

__all__ = ("VpRoutes",)

#: Page size of ``GET /partitions`` unless ``limit`` says otherwise (and its maximum).
PAGE: Final = 1000
#: Partitions the dashboard lists (the first ones by id).
DASHBOARD_ROWS: Final = 100


def _typed(
    handler: Callable[[Any, Request], Awaitable[Response]],
) -> Callable[[Any, Request], Awaitable[Response]]:
    """Reply to the exceptions the in-process API raises with their typed error bodies."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request) -> Response:
        try:
            return await handler(self, request)
        except RequestRejected:
            raise
        except ClientDisconnect:  # the body never came: nobody is left to answer
            raise RequestRejected(400, "ProtocolError", "the client closed before sending its body") from None
        except Exception as exc:
            if error_type(exc) is None:
                raise  # a bug of the server: a 500, and the traceback goes to the log
            return error_response(exc)

    return wrapper


class _Asgi:
    """Makes Starlette call a bound method as a raw ASGI app (it wraps functions and methods)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def _body(receive: Receive) -> bytes:
    """The whole request body (the guard in front caps its size and bounds its time)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestRejected(400, "ProtocolError", "the client closed before sending its body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _number(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 20:
        msg = f"{what} must be a non-negative integer, got {text[:32]!r} - at `{what}`"
        raise ValueError(msg)
    return int(text)


def _vtl(text: str) -> Vtl:
    name = text.upper()
    if name in ("0", "1", "VTL0", "VTL1"):
        return Vtl(int(name[-1]))
    msg = f"vtl must be 0, 1, VTL0 or VTL1, got {text[:32]!r} - at `vtl`"
    raise ValueError(msg)


def _register(text: str) -> Reg:
    if text.upper() in Reg.__members__:
        return Reg[text.upper()]
    try:
        return Reg(int(text, 0))
    except ValueError:
        msg = f"unknown register {text[:32]!r} (a HvRegisterName name or number) - at `name`"
        raise ValueError(msg) from None


def info(partition: Partition) -> PartitionInfo:
    """The listing entry of ``partition``."""
    return PartitionInfo(
        id=partition.partition_id,
        vp_count=partition.vp_count,
        state=partition_state(partition),  # type: ignore[arg-type]  # one of the three
        failure=partition.failure,
        config=partition.config,
    )


class VpRoutes:
    """Handlers of ``/partitions/...`` for one runtime."""

    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    def routes(self) -> list[Route]:
        """The Starlette routes."""
        base = "/partitions/{id}/vps/{index}"
        return [
            Route("/partitions", self.partitions, methods=["GET", "POST"]),
            Route("/partitions/{id}", self.partition, methods=["GET", "DELETE"]),
            Route("/partitions/{id}/snapshot", self.snapshot, methods=["POST"]),
            Route("/partitions/restore", self.restore, methods=["POST"]),
            Route(base, self.vp_statistics, methods=["GET"]),
            Route(base + "/execute", _Asgi(self.execute), methods=["POST"]),
            Route(base + "/tdx-state/{vtl}", self.tdx_state, methods=["GET"]),
            Route(base + "/registers/{vtl}", self.registers, methods=["GET"]),
            Route(base + "/sint0-message/{vtl}", self.sint0_message, methods=["GET"]),
            Route(base + "/vtl-control/{vtl}", self.vtl_control, methods=["GET"]),
        ]

    # ---- lookups ----------------------------------------------------------------------------------

    def _partition(self, request: Request) -> Partition:
        return self.runtime.partition(_number(request.path_params["id"], "id"))

    def _vp(self, request: Request) -> Vp:
        return self._partition(request).vp(_number(request.path_params["index"], "index"))

    # ---- partitions ---------------------------------------------------------------------------------

    @_typed
    async def partitions(self, request: Request) -> Response:
        if request.method == "POST":
            config = decode_config(await request.body())
            partition = await self.runtime.create_partition(**msgspec.structs.asdict(config))
            location = f"{request.scope.get('root_path', '')}/partitions/{partition.partition_id}"
            return json_response(info(partition), 201, {"location": location})
        query = request.query_params
        offset = _number(query.get("offset", "0"), "offset")
        limit = min(_number(query.get("limit", str(PAGE)), "limit"), PAGE)
        every = self.runtime.partitions
        page = [info(p) for p in every[offset : offset + limit]]
        return json_response(PartitionList(partitions=page, total=len(every), offset=offset, limit=limit))

    @_typed
    async def partition(self, request: Request) -> Response:
        partition = self._partition(request)
        if request.method == "DELETE":
            await partition.stop()
            return json_response(info(partition))
        entry = info(partition)
        detail = PartitionDetail(**msgspec.structs.asdict(entry), statistics=partition.statistics())
        return json_response(detail)

    @_typed
    async def snapshot(self, request: Request) -> Response:
        """``Partition.snapshot()``: the encoded partition, as ``application/octet-stream``."""
        data = await self._partition(request).snapshot()
        return Response(data, media_type=SNAPSHOT)

    @_typed
    async def restore(self, request: Request) -> Response:
        """``Runtime.restore_partition(body)``: a new partition (new id), 201 with its entry."""
        kind = header(request.scope, b"content-type")
        if kind is not None and kind.split(";")[0].strip() != SNAPSHOT:
            msg = f"a snapshot is sent as {SNAPSHOT}, not {kind[:64]!r}"
            raise RequestRejected(415, "UnsupportedMediaType", msg)
        partition = await self.runtime.restore_partition(await request.body())
        location = f"{request.scope.get('root_path', '')}/partitions/{partition.partition_id}"
        return json_response(info(partition), 201, {"location": location})

    # ---- VPs ----------------------------------------------------------------------------------------

    @_typed
    async def vp_statistics(self, request: Request) -> Response:
        return json_response(self._vp(request).statistics())

    async def execute(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST .../execute``: a raw ASGI endpoint, the hot path (no Request/Response wrappers)."""
        try:
            response = await self._execute(scope, receive)
        except RequestRejected:
            raise
        except Exception as exc:
            if error_type(exc) is None:
                raise
            response = error_response(exc)
        await response(scope, receive, send)

    async def _execute(self, scope: Scope, receive: Receive) -> Response:
        params = scope["path_params"]
        vp = self.runtime.partition(_number(params["id"], "id")).vp(_number(params["index"], "index"))
        try:
            fmt = format_of(header(scope, b"content-type"))
        except ProtocolError as exc:
            raise RequestRejected(415, "UnsupportedMediaType", exc.detail) from None
        accept = header(scope, b"accept") or ""
        out: Format = "msgpack" if MSGPACK in accept else "json" if "json" in accept else fmt
        try:
            actions, single = decode_actions(await _body(receive), fmt)
        except ProtocolError as exc:
            return error_response(exc, out)
        outcomes: list[Outcome] = []
        latencies: list[int] = []
        execute, clock, done, timed = vp.execute, time.perf_counter_ns, outcomes.append, latencies.append
        for index, action in enumerate(actions):
            start = clock()
            try:
                outcome = await execute(action)
            except Exception as exc:
                if error_type(exc) is None:
                    raise
                timed(clock() - start)
                self.metrics.record(actions, [*outcomes, exc], latencies)
                if single:
                    return error_response(exc, out)
                return error_response(exc, out, index=index, outcomes=outcomes)
            timed(clock() - start)
            done(outcome)
        self.metrics.record(actions, outcomes, latencies)  # once per request, not per action
        media = MSGPACK if out == "msgpack" else JSON
        return Response(encode_outcomes(outcomes, single, out), media_type=media)

    @_typed
    async def tdx_state(self, request: Request) -> Response:
        vp = self._vp(request)
        return json_response(await vp.tdx_state(_vtl(request.path_params["vtl"])))

    @_typed
    async def registers(self, request: Request) -> Response:
        vp = self._vp(request)
        vtl = _vtl(request.path_params["vtl"])
        names = [_register(n) for v in request.query_params.getlist("name") for n in v.split(",") if n]
        if not names:
            raise ProtocolError(
                ProtocolErrorCode.VALIDATION, "registers: give at least one name= - at `name`"
            )
        values = await vp.registers(vtl, names)
        return json_response({Reg(name).name: value for name, value in values.items()})

    @_typed
    async def sint0_message(self, request: Request) -> Response:
        vp = self._vp(request)
        return json_response(await vp.sint0_message(_vtl(request.path_params["vtl"])))

    @_typed
    async def vtl_control(self, request: Request) -> Response:
        vp = self._vp(request)
        return json_response(await vp.vtl_control(_vtl(request.path_params["vtl"])))

    # ---- the dashboard's figures --------------------------------------------------------------------

    def dashboard(self, metrics: Metrics) -> dict[str, Any]:
        """What the dashboard polls (``GET /stats``): totals, partitions, actions by type."""
        totals = metrics.totals()
        rows = []
        for partition in self.runtime.partitions[:DASHBOARD_ROWS]:
            stats = partition.statistics()
            rows.append(
                {
                    "id": partition.partition_id,
                    "vp_count": partition.vp_count,
                    "state": partition_state(partition),
                    "failure": partition.failure,
                    "vtl1_vps": sum(1 for vp in stats.vps if vp.active_vtl == Vtl.VTL1),
                    "actions": sum(vp.actions for vp in stats.vps),
                    "commits": sum(vp.commits for vp in stats.vps),
                    "vmcs_reads": sum(vp.vmcs_reads for vp in stats.vps),
                    "vmcs_writes": sum(vp.vmcs_writes for vp in stats.vps),
                    "vtl_switches": sum(vp.vtl_switches for vp in stats.vps),
                    "mailbox_depth": stats.mailbox_depth,
                }
            )
        return {
            "time": time.time(),
            "uptime": time.time() - metrics.started,
            "backend": self.runtime.backend,
            "totals": {
                **msgspec.structs.asdict(totals),
                "intercepts": metrics.intercepts,
                "failures": metrics.failures,
                "connections": metrics.connections,
                "subscribers": metrics.subscribers,
                "requests_in_flight": metrics.requests_in_flight,
            },
            "partitions": rows,
            "actions": metrics.by_action(),
        }
