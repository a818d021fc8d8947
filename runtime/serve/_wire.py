"""The control plane's bodies: msgspec schemas, JSON and msgpack codecs, and field-naming errors.

JSON bodies are msgspec encodings of the protocol Structs, tagged by class name in ``type``.
msgpack is accepted under ``application/msgpack`` for actions and outcomes (the hot path): one
action is one protocol frame (``protocol.encode``, so 128-bit values round-trip as the wire
protocol carries them), a batch is a msgpack array of such frames, and outcomes come back the
same way. Every other body is JSON. A body that does not decode raises ``ProtocolError``
naming the field (``$[3].msr``), never anything else.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

import msgspec

from actors import PartitionConfig
from protocol import Action, Outcome, ProtocolError, ProtocolErrorCode, decode, encode

from .._host import PartitionStatistics

__all__ = (
    "JSON",
    "MSGPACK",
    "SNAPSHOT",
    "ErrorBody",
    "Format",
    "Health",
    "PartitionInfo",
    "PartitionList",
    "decode_actions",
    "decode_config",
    "encode_outcomes",
    "field_of",
    "format_of",
)

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
#: Media type of a partition snapshot (the bytes of ``Partition.snapshot()``).
SNAPSHOT: Final = "application/octet-stream"
_MSGPACK_TYPES: Final = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
Format = Literal["json", "msgpack"]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An error reply: ``error`` is the type (``Busy``, ``ValueError`` ...), ``message`` says why.

    ``field`` names the offending field of a bad body; for a batch, ``index`` is the action
    that failed and ``outcomes`` the outcomes of the actions before it (they did run). An
    ``ActorCrashed`` carries where it happened: ``partition_id``, ``vp_index`` and ``step``.
    """

    error: str
    message: str
    field: str | None = None
    index: int | None = None
    outcomes: list[Outcome] | None = None
    partition_id: int | None = None
    vp_index: int | None = None
    step: int | None = None


class PartitionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A partition as the control plane lists it."""

    id: int
    vp_count: int
    state: Literal["running", "failed", "stopped"]
    failure: str | None
    config: PartitionConfig


class PartitionDetail(PartitionInfo, frozen=True, kw_only=True):
    """``GET /partitions/{id}``: the listing entry plus the partition's counters."""

    statistics: PartitionStatistics


class PartitionList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /partitions``: ``partitions[offset:offset+limit]`` of ``total``."""

    partitions: list[PartitionInfo]
    total: int
    offset: int
    limit: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /healthz``."""

    status: Literal["ok"]
    backend: str
    partitions: int


#: Every guest action type (a decoded protocol frame must be one of them).
ACTION_TYPES: Final = frozenset(get_args(Action))
_json_actions: msgspec.json.Decoder[Action | list[Action]] = msgspec.json.Decoder(Action | list[Action])
_json_config = msgspec.json.Decoder(PartitionConfig)
_frames = msgspec.msgpack.Decoder(list[bytes])
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_AT: Final = re.compile(r" - at `(?P<path>[^`]*)`$")
_NAMED: Final = re.compile(r"\b[A-Z]\w*\.(?P<field>\w+)(?:\[\])?[:=]|unknown field `(?P<unknown>[^`]+)`")


def format_of(content_type: str | None) -> Format:
    """The body format a ``Content-Type`` (or ``Accept``) value names; JSON when absent.

    Raises:
        ProtocolError: neither JSON nor msgpack (the server answers 415).
    """
    if not content_type:
        return "json"
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (JSON, "*/*", "application/*"):
        return "json"
    if media in _MSGPACK_TYPES:
        return "msgpack"
    msg = f"unsupported media type {media[:64]!r}: send {JSON} or {MSGPACK}"
    raise ProtocolError(ProtocolErrorCode.BAD_FRAME, msg)


def field_of(message: str) -> str | None:
    """The field a msgspec or validator message names (``$[0].msr``, ``vp_count``), if any."""
    at = _AT.search(message)
    if at is not None and at.group("path") != "$":
        return at.group("path")
    named = _NAMED.search(message)
    if named is not None:
        return named.group("field") or named.group("unknown")
    return at.group("path") if at is not None else None


def _refused(exc: Exception) -> ProtocolError:
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, msgspec.ValidationError):
        return ProtocolError(ProtocolErrorCode.VALIDATION, str(exc))
    return ProtocolError(ProtocolErrorCode.DECODE, f"{type(exc).__name__}: {exc}")


def decode_actions(body: bytes, fmt: Format) -> tuple[list[Action], bool]:
    """The actions of an execute body and whether it was one action (not a list).

    Raises:
        ProtocolError: the body is not an action or a list of actions.
    """
    try:
        if fmt == "json":
            decoded = _json_actions.decode(body)
            if isinstance(decoded, list):
                return decoded, False
            return [decoded], True
        if body[:1] and (0x90 <= body[0] <= 0x9F or body[0] in (0xDC, 0xDD)):  # a msgpack array
            return [_action(decode(frame), i) for i, frame in enumerate(_frames.decode(body))], False
        return [_action(decode(body), None)], True
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError, ProtocolError) as exc:
        raise _refused(exc) from None


def _action(message: object, index: int | None) -> Action:
    if type(message) not in ACTION_TYPES:
        where = "" if index is None else f" - at `$[{index}]`"
        msg = f"expected a guest action, got {type(message).__name__}{where}"
        raise ProtocolError(ProtocolErrorCode.VALIDATION, msg)
    return message  # type: ignore[return-value]  # checked just above


def decode_config(body: bytes) -> PartitionConfig:
    """A ``POST /partitions`` body: PartitionConfig keywords as a JSON object (``{}`` for defaults).

    Raises:
        ProtocolError: a bad or unknown field (the message names it).
    """
    try:
        return _json_config.decode(body or b"{}")
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError) as exc:
        raise _refused(exc) from None


def encode_json(value: object) -> bytes:
    """The JSON body of ``value``."""
    return _json_encoder.encode(value)


def encode_outcomes(outcomes: list[Outcome], single: bool, fmt: Format) -> bytes:
    """The body of an execute reply: one outcome, or the list of them."""
    if fmt == "json":
        return _json_encoder.encode(outcomes[0] if single else outcomes)
    if single:
        return encode(outcomes[0])
    return _msgpack_encoder.encode([encode(outcome) for outcome in outcomes])


def encode_error(body: ErrorBody, fmt: Format) -> bytes:
    """An error body; in msgpack, the batch's outcomes are protocol frames as in a reply."""
    if fmt == "json":
        return _json_encoder.encode(body)
    plain = msgspec.structs.replace(body, outcomes=None)
    builtins = msgspec.to_builtins(plain)
    if body.outcomes is not None:
        builtins["outcomes"] = [encode(outcome) for outcome in body.outcomes]
    return _msgpack_encoder.encode(builtins)
