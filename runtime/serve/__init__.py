"""The control plane: an ASGI app (``create_app``), its server (``serve``, ``tdvsm serve``), a client.

``create_app(runtime, token=None)`` is a Starlette application any ASGI host can mount;
``serve`` runs it with hypercorn (asyncio or trio) on a private Unix socket or, with a token,
on TCP; ``connect(address, token=None)`` is an httpx client with the in-process shapes and
errors. Prometheus metrics at ``/metrics``, live events at ``/events``, a dashboard at ``/``.
"""

from __future__ import annotations

from ._app import ControlPlane as ControlPlane, create_app as create_app
from ._client import (
    Client as Client,
    RemotePartition as RemotePartition,
    RemoteVp as RemoteVp,
    connect as connect,
)
from ._errors import (
    ConnectionLost as ConnectionLost,
    RemoteError as RemoteError,
    Unauthenticated as Unauthenticated,
)
from ._guard import Limits as Limits
from ._hub import Cut as Cut
from ._pipeline import Pending as Pending, Pipeline as Pipeline
from ._server import serve as serve

__all__ = (
    "Client",
    "ConnectionLost",
    "ControlPlane",
    "Cut",
    "Limits",
    "Pending",
    "Pipeline",
    "RemoteError",
    "RemotePartition",
    "RemoteVp",
    "Unauthenticated",
    "connect",
    "create_app",
    "serve",
)
