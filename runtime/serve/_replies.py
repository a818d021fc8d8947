"""Replies: a msgspec value as a JSON response, and an exception as its typed error reply."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from actors import ActorCrashed

from ._errors import STATUS, error_type, message_of
from ._wire import JSON, MSGPACK, ErrorBody, Format, encode_error, encode_json, field_of

__all__ = ("error_response", "json_response")

#: Error types whose reply carries ``Retry-After``: the same request may succeed later.
_RETRY = frozenset({"Busy", "ActorCrashed"})


def error_response(exc: BaseException, fmt: Format = "json", **extra: Any) -> Response:
    """The typed reply for ``exc``: ``{"error": TYPE, "message": ...}`` with TYPE's status.

    ``Busy`` and ``ActorCrashed`` (both worth retrying) get ``Retry-After``, and an
    ``ActorCrashed`` says where it happened; a message that names a field fills ``field``;
    ``extra`` adds the batch fields (``index``, ``outcomes``).
    """
    name = error_type(exc) or "InternalError"
    message = message_of(exc)
    if isinstance(exc, ActorCrashed):
        extra.update(partition_id=exc.partition_id, vp_index=exc.vp_index, step=exc.step)
    body = ErrorBody(error=name, message=message, field=field_of(message), **extra)
    headers = {"retry-after": "1"} if name in _RETRY else None
    media = JSON if fmt == "json" else MSGPACK
    return Response(encode_error(body, fmt), status_code=STATUS[name], headers=headers, media_type=media)


def json_response(value: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON reply of a msgspec-encodable value."""
    return Response(encode_json(value), status_code=status, headers=headers, media_type=JSON)
