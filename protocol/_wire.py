"""The wire codec: msgpack frames of tagged Structs, 128-bit values included.

msgpack carries integers of at most 64 bits. A message whose integers all fit is encoded as it
is; one that holds a wider value (segment and table registers, pending events) is sent as a
``Wide`` envelope: the message with those values zeroed plus a list of patches, each a path and
the value's two 64-bit halves. Both forms decode with one typed decoder, so a hostile frame is
refused at the depth where it stops matching the schema (RELIABILITY F2).

``decode`` raises nothing but ``ProtocolError``: msgspec lets ``UnicodeDecodeError`` and
``RecursionError`` through, and both are caught here (RELIABILITY F3).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from ._actions import Action, InitialVpContext, RegisterAssoc
from ._base import U16, U32, U64, Msg
from ._errors import ProtocolError, ProtocolErrorCode
from ._outcomes import InterceptMessage, Outcome

__all__ = (
    "MAX_FRAME",
    "ErrorReply",
    "Message",
    "Reply",
    "Request",
    "decode",
    "encode",
)

#: Largest frame accepted (RELIABILITY F1: the NATS ``max_payload`` default).
MAX_FRAME = 1 << 20
_U64_LIMIT = 1 << 64
_U64_MASK = _U64_LIMIT - 1


class Request(Msg, tag=True, frozen=True, kw_only=True):
    """A control plane asks VP ``vp_index`` of partition ``partition`` to perform ``action``."""

    id: U64
    partition: U32
    vp_index: U32
    action: Action


class Reply(Msg, tag=True, frozen=True, kw_only=True):
    """The outcome of the request with the same ``id``."""

    id: U64
    outcome: Outcome


class ErrorReply(Msg, tag=True, frozen=True, kw_only=True):
    """A request that produced no guest-visible outcome: ``code`` says why."""

    id: U64
    code: U16
    message: str


Message: TypeAlias = (
    Action | Outcome | InterceptMessage | RegisterAssoc | InitialVpContext | Request | Reply | ErrorReply
)


class _Patch(Msg, tag=True, frozen=True, kw_only=True):
    """One wide integer of a ``_Wide`` envelope: where it goes and its two halves."""

    path: list[str | int]
    low: U64
    high: U64


class _Wide(Msg, tag="Wide", frozen=True, kw_only=True):
    """A message with its wider-than-64-bit integers zeroed, and the patches that restore them."""

    message: Message
    patches: list[_Patch]


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message | _Wide] = msgspec.msgpack.Decoder(Message | _Wide)


def encode(message: Message) -> bytes:
    """Encode a protocol message as one msgpack frame body."""
    try:
        return _encoder.encode(message)
    except OverflowError:
        pass
    builtins = msgspec.to_builtins(message)
    patches: list[_Patch] = []
    _zero_wide(builtins, [], patches)
    return _encoder.encode({"type": "Wide", "message": builtins, "patches": patches})


def _zero_wide(node: Any, path: list[str | int], patches: list[_Patch]) -> None:
    """Replace every integer >= 2**64 under ``node`` by 0, recording a patch for each."""
    items: Any = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        if isinstance(value, (dict, list)):
            _zero_wide(value, [*path, key], patches)
        elif isinstance(value, int) and not isinstance(value, bool) and value >= _U64_LIMIT:
            if value >> 128:
                msg = f"value at {'.'.join(map(str, [*path, key]))} exceeds 128 bits"
                raise OverflowError(msg)
            patches.append(_Patch(path=[*path, key], low=value & _U64_MASK, high=value >> 64))
            node[key] = 0


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one frame body; any malformed input raises ``ProtocolError`` and nothing else."""
    if len(data) > MAX_FRAME:
        raise ProtocolError(ProtocolErrorCode.TOO_LARGE, f"{len(data)} bytes > {MAX_FRAME}")
    try:
        message = _decoder.decode(data)
        if isinstance(message, _Wide):
            return _unwide(message)
        return message
    except msgspec.ValidationError as exc:
        raise ProtocolError(ProtocolErrorCode.VALIDATION, str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(ProtocolErrorCode.DECODE, f"{type(exc).__name__}: {exc}") from exc
    except MemoryError as exc:
        raise ProtocolError(ProtocolErrorCode.TOO_LARGE, "frame needs too much memory") from exc


def _unwide(wide: _Wide) -> Message:
    builtins = msgspec.to_builtins(wide.message)
    for patch in wide.patches:
        node: Any = builtins
        try:
            for key in patch.path[:-1]:
                node = node[key]
            if not isinstance(node[patch.path[-1]], int):
                raise TypeError
            node[patch.path[-1]] = patch.low | (patch.high << 64)
        except (KeyError, IndexError, TypeError) as exc:
            msg = f"wide patch path {patch.path} does not name an integer field"
            raise msgspec.ValidationError(msg) from exc
    message: Message = msgspec.convert(builtins, Message)
    return message
