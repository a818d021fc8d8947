"""The OpenAPI 3.1 document of the control plane (``GET /openapi.json``), schemas from msgspec.

Body schemas are generated from the same msgspec Structs the app encodes and decodes, so they
cannot drift; the path table is written out here and a test checks it against the app's routes.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec

from actors import PartitionConfig, TdxL2State, VpStatistics, VtlControl
from protocol import Action, InterceptMessage, Outcome

from .._events import CommitEvent, FailureEvent, InterceptEvent, VtlSwitchEvent
from .._host import RuntimeStatistics
from ._hub import Cut
from ._wire import SNAPSHOT, ErrorBody, Health, PartitionDetail, PartitionInfo, PartitionList

__all__ = ("PATHS", "openapi_document")

_TYPES: Final = (
    Action,
    list[Action],
    Outcome,
    list[Outcome],
    ErrorBody,
    PartitionConfig,
    PartitionInfo,
    PartitionDetail,
    PartitionList,
    Health,
    TdxL2State,
    VtlControl,
    InterceptMessage | None,
    VpStatistics,
    RuntimeStatistics,
    VtlSwitchEvent | InterceptEvent | CommitEvent | FailureEvent | Cut,
)
_NAMES: Final = (
    "Action",
    "ActionList",
    "Outcome",
    "OutcomeList",
    "ErrorBody",
    "PartitionConfig",
    "PartitionInfo",
    "PartitionDetail",
    "PartitionList",
    "Health",
    "TdxL2State",
    "VtlControl",
    "Sint0Message",
    "VpStatistics",
    "RuntimeStatistics",
    "Event",
)

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
_INDEX = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
_VTL = {"name": "vtl", "in": "path", "required": True, "schema": {"enum": ["0", "1", "VTL0", "VTL1"]}}
_VP = [_ID, _INDEX]
_BYTES: Final = {"type": "string", "contentMediaType": SNAPSHOT}

#: (path, method) -> (summary, request schema or None, success status, response schema, parameters).
PATHS: Final[dict[tuple[str, str], tuple[str, str | None, int, str | None, list[dict[str, Any]]]]] = {
    ("/", "get"): ("The dashboard page (HTML)", None, 200, None, []),
    ("/static/{name}", "get"): ("A file of the dashboard", None, 200, None, []),
    ("/healthz", "get"): ("Liveness (no token needed)", None, 200, "Health", []),
    ("/metrics", "get"): ("Prometheus text exposition", None, 200, None, []),
    ("/stats", "get"): ("The dashboard's figures (JSON)", None, 200, None, []),
    ("/statistics", "get"): ("Counters of the runtime", None, 200, "RuntimeStatistics", []),
    ("/openapi.json", "get"): ("This document", None, 200, None, []),
    ("/events", "get"): (
        "Server-sent events: VtlSwitch, SecureIntercept, Commit, PartitionFailure; Cut last if the reader "
        "fell behind. Query: partition (ids), type (event types).",
        None,
        200,
        "Event",
        [],
    ),
    ("/partitions", "get"): ("List partitions (query: offset, limit <= 1000)", None, 200,
                             "PartitionList", []),
    ("/partitions", "post"): ("Create a partition from PartitionConfig keywords", "PartitionConfig", 201,
                              "PartitionInfo", []),
    ("/partitions/{id}", "get"): ("A partition and its counters", None, 200, "PartitionDetail", [_ID]),
    ("/partitions/{id}", "delete"): ("Stop a partition", None, 200, "PartitionInfo", [_ID]),
    ("/partitions/{id}/snapshot", "post"): (
        "Partition.snapshot(): every VP committed, the whole partition encoded (octet-stream)", None, 200,
        "bytes", [_ID]),
    ("/partitions/restore", "post"): (
        "Runtime.restore_partition(body): a new partition in the snapshot's state", "bytes", 201,
        "PartitionInfo", []),
    ("/partitions/{id}/vps/{index}", "get"): ("Counters of a VP", None, 200, "VpStatistics", _VP),
    ("/partitions/{id}/vps/{index}/execute", "post"): (
        "Run one action (reply: its outcome) or a list run in order (reply: the outcomes); "
        "application/json or application/msgpack",
        "Action",
        200,
        "Outcome",
        _VP,
    ),
    ("/partitions/{id}/vps/{index}/tdx-state/{vtl}", "get"): (
        "Committed derived TDX L2 state of a VTL", None, 200, "TdxL2State", [*_VP, _VTL]),
    ("/partitions/{id}/vps/{index}/registers/{vtl}", "get"): (
        "Committed register values (query: name, repeatable; reply: name -> value)", None, 200, None,
        [*_VP, _VTL]),
    ("/partitions/{id}/vps/{index}/sint0-message/{vtl}", "get"): (
        "The intercept message in the VTL's SINT0 slot, or null", None, 200, "Sint0Message", [*_VP, _VTL]),
    ("/partitions/{id}/vps/{index}/vtl-control/{vtl}", "get"): (
        "The VP assist page's VTL control block", None, 200, "VtlControl", [*_VP, _VTL]),
}  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    schemas, components = msgspec.json.schema_components(_TYPES, ref_template="#/components/schemas/{name}")
    components.update(dict(zip(_NAMES, schemas, strict=True)))
    errors = {
        str(status): {"description": text, "content": {"application/json": {"schema": _ref("ErrorBody")}}}
        for status, text in (
            (401, "Unauthenticated"),
            (404, "NotFound"),
            (409, "PartitionFailed, VpFailed or VpNotRunning"),
            (413, "TooLarge"),
            (422, "ProtocolError, ValueError or TypeError (field names the field)"),
            (429, "Busy (Retry-After)"),
            (503, "ActorCrashed (Retry-After: the action had no effect) or TooManyConnections"),
        )
    }
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), (summary, request, status, response, parameters) in PATHS.items():
        operation: dict[str, Any] = {"summary": summary, "parameters": parameters}
        if request == "bytes":
            operation["requestBody"] = {"required": True, "content": {SNAPSHOT: {"schema": _BYTES}}}
        elif request is not None:
            body_schema: dict[str, Any] = _ref(request)
            if request == "Action":
                body_schema = {"oneOf": [_ref("Action"), _ref("ActionList")]}
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if response == "bytes":
            ok["content"] = {SNAPSHOT: {"schema": _BYTES}}
        elif response is not None:
            schema: dict[str, Any] = _ref(response)
            if response == "Outcome":
                schema = {"oneOf": [_ref("Outcome"), _ref("OutcomeList")]}
            media = "text/event-stream" if path == "/events" else "application/json"
            ok["content"] = {media: {"schema": schema}}
        operation["responses"] = {str(status): ok, **errors}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "tdvsm control plane", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
