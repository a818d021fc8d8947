"""``create_app``: the control plane as an ASGI application (Starlette) a host can mount anywhere.

Routes (API.md "Control plane"): ``/healthz``, ``/metrics``, ``/events``, ``/partitions``
(list, create), ``/partitions/{id}`` (get, delete), ``/partitions/{id}/vps/{index}/execute``
(one action, or a list run in order), inspections under ``/partitions/{id}/vps/{index}/``,
``/statistics``, ``/openapi.json``, and the dashboard at ``/``. Errors are typed JSON bodies
(``runtime.serve._errors``); the gate in front of every route is ``runtime.serve._guard``.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import TYPE_CHECKING, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Route

from ._guard import SESSION_COOKIE, Guard, Limits, RequestRejected, logger, session_value
from ._hub import EventHub, EventStream
from ._metrics import Metrics
from ._openapi import openapi_document
from ._replies import json_response
from ._vps import VpRoutes
from ._wire import JSON, ErrorBody, Health, encode_json

if TYPE_CHECKING:
    from starlette.requests import Request

    from .._host import Runtime

__all__ = ("ControlPlane", "create_app")

#: Files of the dashboard (package data of runtime.serve) and their media types.
_STATIC: Final = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_MIN_TOKEN: Final = 32


class ControlPlane:
    """What one app holds: the runtime, its limits, metrics and event hub (``app.state.tdvsm``)."""

    def __init__(self, runtime: Runtime, token: bytes | None, limits: Limits) -> None:
        self.runtime = runtime
        self.token = token
        self.limits = limits
        self.metrics = Metrics(runtime)
        self.hub = EventHub(runtime, self.metrics, limits)
        # Intercepts and failures have no runtime counter: listen for them (no commit events).
        runtime.subscribe(self.metrics.on_event, commits=False)


def create_app(
    runtime: Runtime, *, token: str | bytes | None = None, limits: Limits | None = None
) -> Starlette:
    """The control plane of ``runtime`` as an ASGI application (Starlette).

    Mount it in your own ASGI server or app (``Mount("/tdvsm", app=create_app(rt))``) or run
    it with ``tdvsm serve`` / ``runtime.serve.serve``. With ``token``, every route but
    ``/healthz`` requires ``Authorization: Bearer <token>`` (the dashboard logs in once with
    ``/?token=...`` and keeps a session cookie). The app lives as long as the runtime.

    Raises:
        ValueError: a token shorter than 32 characters or with whitespace or non-ASCII in it.
    """
    secret = _check_token(token)
    plane = ControlPlane(runtime, secret, limits or Limits())
    vps = VpRoutes(runtime, plane.metrics)
    static = {name: resources.files(__package__).joinpath("static", name).read_bytes() for name in _STATIC}
    stream = EventStream(plane.hub, plane.limits)

    async def healthz(request: Request) -> Response:
        return json_response(Health(status="ok", backend=runtime.backend, partitions=len(runtime.partitions)))

    async def metrics(request: Request) -> Response:
        return Response(plane.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def statistics(request: Request) -> Response:
        return json_response(runtime.statistics())

    async def stats(request: Request) -> Response:
        return json_response(vps.dashboard(plane.metrics))

    async def openapi(request: Request) -> Response:
        return json_response(openapi_document())

    async def dashboard(request: Request) -> Response:
        if "token" in request.query_params:
            return _login(request, plane)
        return Response(static["index.html"], media_type=_STATIC["index.html"], headers=_NO_STORE)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static or name == "index.html":
            raise HTTPException(404, f"no dashboard file {name[:64]!r}")
        return Response(static[name], media_type=_STATIC[name], headers=_NO_STORE)

    routes = [
        Route("/", dashboard, methods=["GET"]),
        Route("/static/{name}", asset, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/statistics", statistics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/events", stream, methods=["GET"]),
        *vps.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=secret, limits=plane.limits, metrics=plane.metrics)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.tdvsm = plane
    return app


_NO_STORE: Final = {"cache-control": "no-store"}


def _check_token(token: str | bytes | None) -> bytes | None:
    if token is None:
        return None
    raw = token.encode() if isinstance(token, str) else bytes(token)
    if len(raw) < _MIN_TOKEN or not all(0x21 <= b <= 0x7E for b in raw):
        msg = f"create_app: the token must be at least {_MIN_TOKEN} printable ASCII characters, no spaces"
        raise ValueError(msg)
    return raw


def _login(request: Request, plane: ControlPlane) -> Response:
    """``GET /?token=...``: a right token gets the session cookie and a redirect to the page."""
    presented = request.query_params["token"].encode()
    if plane.token is None or not hmac.compare_digest(presented, plane.token):
        logger.warning("refused a dashboard login: wrong token")
        raise RequestRejected(401, "Unauthenticated", "missing or wrong token")
    response = Response(status_code=303, headers={"location": "./", **_NO_STORE})
    path = (request.scope.get("root_path") or "") + "/"
    response.set_cookie(
        SESSION_COOKIE, session_value(plane.token).decode(), path=path, httponly=True, samesite="strict"
    )
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 as typed bodies."""
    assert isinstance(exc, HTTPException)
    name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "ValueError")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.url.path[:200]}"
    body = ErrorBody(error=name, message=message)
    return Response(encode_json(body), status_code=exc.status_code, headers=exc.headers, media_type=JSON)


async def _server_error(request: Request, exc: Exception) -> Response:
    """A bug of the server: a typed 500 naming only the exception's type (the log has the rest)."""
    body = ErrorBody(error="InternalError", message=f"internal error ({type(exc).__name__})")
    return Response(encode_json(body), status_code=500, media_type=JSON)
