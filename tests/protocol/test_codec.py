"""The wire codec: exact round trips of every message, and ProtocolError for every bad frame."""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from protocol import (
    MAX_FRAME,
    AccessKind,
    Completed,
    EnablePartitionVtl,
    EnableVpVtl,
    ErrorReply,
    GetVpRegisters,
    HvMessageType,
    HvRegisterName as Reg,
    HvStatus,
    HypercallResult,
    InitialVpContext,
    Intercepted,
    InterceptMessage,
    LoadTableRegister,
    MemoryAccess,
    Message,
    ModifyVtlProtectionMask,
    MovToCr,
    ProtocolError,
    ProtocolErrorCode,
    Rdmsr,
    RegisterAssoc,
    Reply,
    Request,
    SetVpRegisters,
    StartVirtualProcessor,
    Vtl,
    VtlCall,
    VtlReturn,
    VtlSwitched,
    WriteVtlControl,
    Wrmsr,
    Xsetbv,
    decode,
    encode,
)
from tests.strategies import MESSAGE_STRATEGIES, messages

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MESSAGE_CLASSES: tuple[type[Any], ...] = typing.get_args(Message)
U64_MAX = (1 << 64) - 1
U128_MAX = (1 << 128) - 1

FAST = settings(max_examples=40, deadline=None)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _msgpack(obj: object) -> bytes:
    return msgspec.msgpack.encode(obj)


def _wide(message: object, *patches: dict[str, object]) -> bytes:
    """A hand-made ``Wide`` envelope: ``message`` plus patches given as {path, low, high}."""
    return _msgpack(
        {
            "type": "Wide",
            "message": message,
            "patches": [{"type": "_Patch", **patch} for patch in patches],
        }
    )


def _assert_round_trips(message: Message) -> None:
    out = decode(encode(message))
    assert out == message
    assert type(out) is type(message)


def _assert_refused_or_exact(data: bytes) -> None:
    """RELIABILITY F3: an input decodes to a message that round-trips exactly, or is a ProtocolError."""
    try:
        out = decode(data)
    except ProtocolError as exc:
        error = exc
    else:
        event("decoded")
        assert isinstance(out, MESSAGE_CLASSES)
        _assert_round_trips(out)
        return
    assert isinstance(error.code, ProtocolErrorCode)
    event(f"refused: {error.code.name}")


def _refused(data: bytes | bytearray | memoryview) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert isinstance(info.value.code, ProtocolErrorCode)
    return info.value


# ---- Round trips --------------------------------------------------------------------------------


def test_every_message_class_has_a_strategy() -> None:
    """tests.strategies covers exactly the classes of the protocol.Message union."""
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_CLASSES)
    assert len(MESSAGE_CLASSES) == len(set(MESSAGE_CLASSES))


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_wire_tag_is_the_class_name(cls: type[Any]) -> None:
    """Every message's wire tag (field ``type``) is its class name, so traces are greppable."""
    assert cls.__struct_config__.tag_field == "type"
    assert cls.__struct_config__.tag == cls.__name__
    assert cls.__struct_config__.forbid_unknown_fields


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
@FAST
@given(data=st.data())
def test_round_trip_preserves_value_and_type(cls: type[Any], data: st.DataObject) -> None:
    """decode(encode(m)) == m and has m's exact type, for every message class."""
    message = data.draw(MESSAGE_STRATEGIES[cls])
    assert type(message) is cls
    _assert_round_trips(message)


@FAST
@given(messages())
def test_encoding_is_deterministic(message: Message) -> None:
    """Re-encoding a decoded message gives the same bytes (no information is lost or reordered)."""
    frame = encode(message)
    assert encode(decode(frame)) == frame


WIDE_EXAMPLES: list[Message] = [
    RegisterAssoc(name=Reg.CS, value=1 << 64),
    RegisterAssoc(name=Reg.PENDING_EVENT0, value=U128_MAX),
    InitialVpContext(
        cs=U128_MAX,
        ds=1 << 64,
        es=U128_MAX,
        fs=1 << 127,
        gs=U128_MAX,
        ss=U128_MAX,
        tr=U128_MAX,
        ldtr=U128_MAX,
        idtr=U128_MAX,
        gdtr=U128_MAX,
        rip=U64_MAX,
        efer=U64_MAX,
    ),
    EnableVpVtl(vp_index=1, target_vtl=1, context=InitialVpContext(gdtr=U128_MAX)),
    StartVirtualProcessor(vp_index=2, target_vtl=0, context=InitialVpContext(tr=(1 << 64) | 5)),
    SetVpRegisters(
        registers=[RegisterAssoc(name=Reg.GDTR, value=U128_MAX), RegisterAssoc(name=Reg.RAX, value=1)],
        target_vtl=0,
    ),
    HypercallResult(status=HvStatus.SUCCESS, reps_completed=3, values=[U128_MAX, 1, 1 << 100]),
    LoadTableRegister(which="gdtr", value=U128_MAX),
    Intercepted(
        message=InterceptMessage(
            message_type=HvMessageType.REGISTER_INTERCEPT,
            vp_index=0,
            instruction_length=3,
            access_type=AccessKind.WRITE,
            rip=U64_MAX,
            rflags=2,
            register_name=Reg.GDTR,
            value=U128_MAX,
        )
    ),
    Request(
        id=U64_MAX,
        partition=0,
        vp_index=0,
        action=SetVpRegisters(registers=[RegisterAssoc(name=Reg.IDTR, value=1 << 64)]),
    ),
    Reply(id=1, outcome=HypercallResult(status=HvStatus.SUCCESS, values=[1 << 64])),
]


@pytest.mark.parametrize("message", WIDE_EXAMPLES, ids=lambda m: type(m).__name__)
def test_values_above_64_bits_travel_in_a_wide_envelope(message: Message) -> None:
    """A message holding a value >= 2**64 is sent as a Wide envelope and still round-trips."""
    assert msgspec.msgpack.decode(encode(message))["type"] == "Wide"
    _assert_round_trips(message)


@pytest.mark.parametrize(
    "message",
    [
        RegisterAssoc(name=Reg.RIP, value=U64_MAX),
        HypercallResult(status=HvStatus.ACCESS_DENIED, values=[U64_MAX, 0]),
        Wrmsr(msr=0xC000_0080, value=U64_MAX),
        ErrorReply(id=0, code=1, message="bad frame \u00e9\u4e2d"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_messages_within_64_bits_are_sent_as_themselves(message: Message) -> None:
    """Without wide values the frame is the message itself, tagged with its class name."""
    assert msgspec.msgpack.decode(encode(message))["type"] == type(message).__name__
    _assert_round_trips(message)


@pytest.mark.parametrize("data_type", [bytes, bytearray, memoryview])
def test_decode_accepts_any_bytes_like(data_type: Callable[[bytes], Any]) -> None:
    """decode takes bytes, bytearray and memoryview alike."""
    message = SetVpRegisters(registers=[RegisterAssoc(name=Reg.CS, value=U128_MAX)])
    assert decode(data_type(encode(message))) == message


# ---- Constructing out-of-range values ----------------------------------------------------------

OUT_OF_RANGE: dict[str, Callable[[], object]] = {
    "RegisterAssoc.value=2**128": lambda: RegisterAssoc(name=0, value=1 << 128),
    "RegisterAssoc.value=-1": lambda: RegisterAssoc(name=0, value=-1),
    "InitialVpContext.rip=2**64": lambda: InitialVpContext(rip=1 << 64),
    "InitialVpContext.cs=2**128": lambda: InitialVpContext(cs=1 << 128),
    "InitialVpContext.gdtr=-1": lambda: InitialVpContext(gdtr=-1),
    "EnablePartitionVtl.partition_id=2**64": lambda: EnablePartitionVtl(target_vtl=1, partition_id=1 << 64),
    "GetVpRegisters.rep_start=2**12": lambda: GetVpRegisters(names=[], rep_start=1 << 12),
    "GetVpRegisters.target_vtl=16": lambda: GetVpRegisters(names=[], target_vtl=16),
    "SetVpRegisters.partition_id=2**64": lambda: SetVpRegisters(registers=[], partition_id=1 << 64),
    "ModifyVtlProtectionMask.gpns=[2**64]": lambda: ModifyVtlProtectionMask(gpns=[1 << 64], map_flags=0),
    "VtlCall.input=2**64": lambda: VtlCall(input=1 << 64),
    "VtlReturn.input=2**64": lambda: VtlReturn(input=1 << 64),
    "WriteVtlControl.return_rcx=2**64": lambda: WriteVtlControl(return_rcx=1 << 64),
    "MovToCr.value=2**64": lambda: MovToCr(cr=0, value=1 << 64),
    "Wrmsr.value=2**64": lambda: Wrmsr(msr=0x10, value=1 << 64),
    "Xsetbv.value=2**64": lambda: Xsetbv(value=1 << 64),
    "LoadTableRegister.value=2**128": lambda: LoadTableRegister(which="idtr", value=1 << 128),
    "MemoryAccess.gpa=2**64": lambda: MemoryAccess(gpa=1 << 64, kind=AccessKind.READ),
    "HypercallResult.values=[2**128]": lambda: HypercallResult(status=HvStatus.SUCCESS, values=[1 << 128]),
    "InterceptMessage.value=2**128": lambda: InterceptMessage(
        message_type=0, vp_index=0, instruction_length=0, access_type=0, rip=0, rflags=0, value=1 << 128
    ),
    "Completed.value=2**64": lambda: Completed(value=1 << 64),
    "Completed.value=-1": lambda: Completed(value=-1),
    "InterceptMessage.rip=2**64": lambda: InterceptMessage(
        message_type=0, vp_index=0, instruction_length=0, access_type=0, rip=1 << 64, rflags=0
    ),
}


@pytest.mark.parametrize("build", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_constructing_an_out_of_range_value_raises_value_error(build: Callable[[], object]) -> None:
    """Width checks run on construction: a value outside the field's width is a ValueError."""
    with pytest.raises(ValueError, match="out of range"):
        build()


def test_largest_values_construct() -> None:
    """The boundary values 2**64-1 and 2**128-1 are accepted by the width checks."""
    assert RegisterAssoc(name=0, value=U128_MAX).value == U128_MAX
    assert InitialVpContext(rip=U64_MAX, cs=U128_MAX).cs == U128_MAX
    assert Wrmsr(msr=0, value=U64_MAX).value == U64_MAX


# ---- Hostile input: only ProtocolError ----------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    """Random bytes either decode to a message that round-trips or raise ProtocolError."""
    _assert_refused_or_exact(data)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A real encoding with one to four bytes flipped, inserted or deleted, or a truncation."""
    frame = bytearray(encode(draw(messages())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate")))
        if op == "flip" and frame:
            index = draw(st.integers(0, len(frame) - 1))
            frame[index] ^= draw(st.integers(1, 255))
        elif op == "insert":
            index = draw(st.integers(0, len(frame)))
            frame[index:index] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and frame:
            del frame[draw(st.integers(0, len(frame) - 1))]
        elif op == "truncate":
            del frame[draw(st.integers(0, len(frame))) :]
    return bytes(frame)


@FUZZ
@given(mutated_frames())
def test_mutated_valid_frames_raise_only_protocol_error(data: bytes) -> None:
    """Byte-level mutations of valid frames decode exactly or raise ProtocolError."""
    _assert_refused_or_exact(data)


_FIELD_NAMES = sorted(
    {field.name for cls in MESSAGE_CLASSES for field in msgspec.structs.fields(cls)}
    | {"type", "message", "patches", "path", "low", "high"}
)
_TAGS = sorted([cls.__name__ for cls in MESSAGE_CLASSES] + ["Wide", "_Patch"])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), U64_MAX),
    st.sampled_from((0, 1, U64_MAX, -1)),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.sampled_from(_TAGS),
    st.sampled_from(_FIELD_NAMES),
)
#: Any msgpack-able value made of the words the schema uses.
_ANY_VALUE = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=4), children, max_size=4),
    ),
    max_leaves=12,
)


def _paths(node: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def perturbed_frames(draw: st.DrawFn) -> bytes:
    """A valid frame's msgpack tree (Wide envelopes included) with one to three nodes changed."""
    tree = msgspec.msgpack.decode(encode(draw(messages())))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(tree))
        if not paths:
            break
        *parent_path, key = draw(st.sampled_from(paths))
        parent: Any = tree
        for step in parent_path:
            parent = parent[step]
        op = draw(st.sampled_from(("replace", "delete", "add")))
        if op == "replace":
            parent[key] = draw(_ANY_VALUE)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(_FIELD_NAMES) | st.text(max_size=4))] = draw(_ANY_VALUE)
        else:
            parent.insert(key, draw(_ANY_VALUE))
    return _msgpack(tree)


@FUZZ
@given(perturbed_frames())
def test_perturbed_message_trees_raise_only_protocol_error(data: bytes) -> None:
    """Valid frames with fields replaced, dropped or added decode exactly or raise ProtocolError."""
    _assert_refused_or_exact(data)


@st.composite
def schema_shaped_maps(draw: st.DrawFn) -> dict[str, object]:
    """A map with a real tag and a few real field names whose values are anything."""
    tree = draw(st.dictionaries(st.sampled_from(_FIELD_NAMES), _ANY_VALUE, max_size=6))
    tree["type"] = draw(st.sampled_from(_TAGS))
    return tree


@FUZZ
@given(schema_shaped_maps())
def test_schema_shaped_garbage_raises_only_protocol_error(tree: dict[str, object]) -> None:
    """Maps with real tags and field names but arbitrary values decode exactly or raise ProtocolError."""
    _assert_refused_or_exact(_msgpack(tree))


@st.composite
def wide_envelopes(draw: st.DrawFn) -> bytes:
    """A Wide envelope around a real message, with patches at its real paths or made-up ones."""
    inner = msgspec.msgpack.decode(encode(draw(messages())))
    if inner["type"] == "Wide":
        inner = inner["message"]
    real_paths = [list(path) for path in _paths(inner)]
    made_up = st.lists(st.sampled_from(_FIELD_NAMES) | st.integers(-3, 10) | st.text(max_size=3), max_size=4)
    paths = st.sampled_from(real_paths) | made_up if real_paths else made_up
    patches = draw(
        st.lists(
            st.fixed_dictionaries(
                {"path": paths, "low": st.integers(0, U64_MAX), "high": st.integers(0, U64_MAX)}
            ),
            min_size=1,
            max_size=3,
        )
    )
    return _wide(inner, *patches)


@FUZZ
@given(wide_envelopes())
def test_wide_envelopes_with_arbitrary_patches_raise_only_protocol_error(data: bytes) -> None:
    """A Wide envelope whose patches name any path decodes exactly or raises ProtocolError."""
    _assert_refused_or_exact(data)


# ---- Specific malformed frames ------------------------------------------------------------------

_DEEP = b"\x91" * 100_000 + b"\x00"

MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "not-a-map": _msgpack([1, 2, 3]),
    "no-tag": _msgpack({"msr": 1}),
    "unknown-tag": _msgpack({"type": "Nope", "msr": 1}),
    "private-patch-tag-at-top": _msgpack({"type": "_Patch", "path": ["value"], "low": 0, "high": 0}),
    "wide-inside-request": _msgpack(
        {
            "type": "Request",
            "id": 1,
            "partition": 0,
            "vp_index": 0,
            "action": {"type": "Wide", "message": {"type": "Rdmsr", "msr": 1}, "patches": []},
        }
    ),
    "truncated": encode(Rdmsr(msr=0xC000_0080))[:-1],
    "trailing-bytes": encode(Rdmsr(msr=0xC000_0080)) + b"\x00",
    "tag-not-a-string": _msgpack({"type": 7, "msr": 1}),
    "missing-required-field": _msgpack({"type": "Wrmsr", "msr": 1}),
    # invalid UTF-8 (msgspec raises UnicodeDecodeError for these, outside its own error types)
    "utf8-in-tag": b"\x82\xa4type\xa2\xff\xfe\xa3msr\x01",
    "utf8-in-key": b"\x82\xa4type\xa5Rdmsr\xa2\xff\xfe\x01",
    "utf8-in-key-before-tag": b"\x82\xa2\xff\xfe\x01\xa4type\xa5Rdmsr",
    "utf8-in-str-field": b"\x84\xa4type\xaaErrorReply\xa2id\x01\xa4code\x01\xa7message\xa2\xc3\x28",
    "utf8-in-nested-key": b"\x85\xa4type\xa7Request\xa2id\x01\xa9partition\x00\xa8vp_index\x00"
    b"\xa6action\x82\xa4type\xa5Rdmsr\xa3\xed\xa0\x80\x01",
    "utf8-in-wide-path": b"\x83\xa4type\xa4Wide\xa7message\x82\xa4type\xa5Rdmsr\xa3msr\x01"
    b"\xa7patches\x91\x84\xa4type\xa6_Patch\xa4path\x91\xa2\xff\xff\xa3low\x00\xa4high\x00",
    # deep nesting (RELIABILITY F2): msgspec raises RecursionError where the schema does not stop it
    "deep-array": _DEEP,
    "deep-map": b"\x81\xa1a" * 100_000 + b"\x00",
    "deep-before-tag": b"\x82\xa1x" + _DEEP + b"\xa4type\xa5Rdmsr",
    "deep-unknown-field": b"\x83\xa4type\xa5Rdmsr\xa3msr\x01\xa1x" + _DEEP,
    "deep-in-list-field": b"\x82\xa4type\xaeGetVpRegisters\xa5names" + _DEEP,
    "deep-in-wide-path": b"\x83\xa4type\xa4Wide\xa7message\x82\xa4type\xa5Rdmsr\xa3msr\x01"
    b"\xa7patches\x91\x84\xa4type\xa6_Patch\xa4path" + _DEEP + b"\xa3low\x00\xa4high\x00",
    # unknown fields (forbid_unknown_fields)
    "unknown-field": _msgpack({"type": "Rdmsr", "msr": 1, "bogus": 0}),
    "unknown-field-nested": _msgpack(
        {
            "type": "Request",
            "id": 1,
            "partition": 0,
            "vp_index": 0,
            "action": {"type": "Rdmsr", "msr": 1, "vtl": 0},
        }
    ),
    "unknown-field-in-context": _msgpack(
        {
            "type": "EnableVpVtl",
            "vp_index": 0,
            "target_vtl": 1,
            "context": {"type": "InitialVpContext", "r8": 0},
        }
    ),
    "unknown-field-in-wide": _msgpack(
        {"type": "Wide", "message": {"type": "Rdmsr", "msr": 1}, "patches": [], "extra": 1}
    ),
    "unknown-field-in-patch": _wide(
        {"type": "RegisterAssoc", "name": 1}, {"path": ["value"], "low": 0, "high": 1, "carry": 1}
    ),
    # out-of-range values
    "negative-u32": _msgpack({"type": "Rdmsr", "msr": -1}),
    "negative-u64": _msgpack({"type": "Wrmsr", "msr": 1, "value": -1}),
    "negative-u128": _msgpack({"type": "RegisterAssoc", "name": 1, "value": -1}),
    "u8-256": _msgpack({"type": "ExceptionInjected", "vector": 256}),
    "u16-65536": _msgpack({"type": "Hypercall", "code": 0x1_0000}),
    "u32-2**32": _msgpack({"type": "Rdmsr", "msr": 1 << 32}),
    "rep-start-4096": _msgpack({"type": "GetVpRegisters", "names": [], "rep_start": 4096}),
    "input-vtl-16": _msgpack({"type": "GetVpRegisters", "names": [], "target_vtl": 16}),
    "status-not-an-hv-status": _msgpack({"type": "HypercallResult", "status": 0x9999}),
    "vtl-3": _msgpack({"type": "VtlSwitched", "to_vtl": 3}),
    "access-kind-3": _msgpack({"type": "MemoryAccess", "gpa": 0, "kind": 3}),
    "cr-2": _msgpack({"type": "MovToCr", "cr": 2, "value": 0}),
    "table-register-cr3": _msgpack({"type": "LoadTableRegister", "which": "cr3", "value": 0}),
    "bool-as-int": _msgpack({"type": "VtlReturn", "fast": 1}),
    "int-as-float": _msgpack({"type": "Rdmsr", "msr": 1.0}),
    "int-as-string": _msgpack({"type": "Rdmsr", "msr": "1"}),
    # wide patches producing values wider than their field
    "wide-u64-field-2**64": _wide(
        {"type": "Wrmsr", "msr": 1, "value": 0}, {"path": ["value"], "low": 0, "high": 1}
    ),
    "wide-u64-context-field": _wide(
        {"type": "EnableVpVtl", "vp_index": 0, "target_vtl": 1, "context": {"type": "InitialVpContext"}},
        {"path": ["context", "rip"], "low": 0, "high": 1},
    ),
    "wide-u32-field": _wide({"type": "Rdmsr", "msr": 0}, {"path": ["msr"], "low": 1 << 32, "high": 0}),
    "wide-u8-field": _wide(
        {"type": "ExceptionInjected", "vector": 0}, {"path": ["vector"], "low": 0, "high": 1}
    ),
    "wide-enum-field": _wide(
        {"type": "HypercallResult", "status": 0}, {"path": ["status"], "low": 0, "high": 1}
    ),
    "wide-bool-field": _wide(
        {"type": "EnablePartitionVtl", "target_vtl": 1, "enable_mbec": False},
        {"path": ["enable_mbec"], "low": 1, "high": 1},
    ),
    "wide-optional-u64": _wide(
        {"type": "Completed", "value": 0}, {"path": ["value"], "low": 0, "high": U64_MAX}
    ),
    "wide-high-as-float": _wide(
        {"type": "RegisterAssoc", "name": 1, "value": 0}, {"path": ["value"], "low": 0, "high": 2.0**64}
    ),
    "wide-negative-high": _wide(
        {"type": "RegisterAssoc", "name": 1, "value": 0}, {"path": ["value"], "low": 0, "high": -1}
    ),
    # wide patches whose path does not name an integer field
    "wide-empty-path": _wide({"type": "RegisterAssoc", "name": 1}, {"path": [], "low": 0, "high": 1}),
    "wide-path-is-tag": _wide({"type": "RegisterAssoc", "name": 1}, {"path": ["type"], "low": 0, "high": 1}),
    "wide-path-missing": _wide({"type": "RegisterAssoc", "name": 1}, {"path": ["nope"], "low": 0, "high": 1}),
    "wide-path-to-struct": _wide(
        {"type": "EnableVpVtl", "vp_index": 0, "target_vtl": 1, "context": {"type": "InitialVpContext"}},
        {"path": ["context"], "low": 0, "high": 1},
    ),
    "wide-path-to-list": _wide(
        {"type": "GetVpRegisters", "names": [1]}, {"path": ["names"], "low": 0, "high": 1}
    ),
    "wide-path-index-out-of-range": _wide(
        {"type": "HypercallResult", "status": 0, "values": [0]}, {"path": ["values", 5], "low": 0, "high": 1}
    ),
    "wide-path-str-index-into-list": _wide(
        {"type": "HypercallResult", "status": 0, "values": [0]},
        {"path": ["values", "x"], "low": 0, "high": 1},
    ),
    "wide-path-int-key-into-map": _wide(
        {"type": "RegisterAssoc", "name": 1}, {"path": [0], "low": 0, "high": 1}
    ),
    "wide-path-through-int": _wide(
        {"type": "RegisterAssoc", "name": 1, "value": 0}, {"path": ["value", 0], "low": 0, "high": 1}
    ),
    "wide-path-into-string": _wide(
        {"type": "ErrorReply", "id": 0, "code": 0, "message": "abc"},
        {"path": ["message", 0], "low": 0, "high": 1},
    ),
    "wide-path-to-none": _wide(
        {"type": "ExceptionInjected", "vector": 6, "error_code": None},
        {"path": ["error_code"], "low": 0, "high": 1},
    ),
    "wide-path-to-string": _wide(
        {"type": "ErrorReply", "id": 0, "code": 0, "message": "abc"},
        {"path": ["message"], "low": 0, "high": 1},
    ),
    "wide-path-below-list-element": _wide(
        {"type": "SetVpRegisters", "registers": [{"type": "RegisterAssoc", "name": 1}]},
        {"path": ["registers", 0, "value", "x"], "low": 0, "high": 1},
    ),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frame_raises_protocol_error(data: bytes) -> None:
    """Each malformed frame (bad UTF-8, deep nesting, unknown field, bad value, bad patch) is refused."""
    _refused(data)


def test_widest_patch_gives_the_largest_128_bit_value() -> None:
    """Patches reach 2**128-1 at most (halves are u64, patches replace): no value >= 2**128 gets in."""
    frame = _wide(
        {"type": "RegisterAssoc", "name": 1, "value": 0}, {"path": ["value"], "low": U64_MAX, "high": U64_MAX}
    )
    assert decode(frame) == RegisterAssoc(name=1, value=U128_MAX)
    twice = _wide(
        {"type": "RegisterAssoc", "name": 1, "value": 0},
        {"path": ["value"], "low": U64_MAX, "high": U64_MAX},
        {"path": ["value"], "low": U64_MAX, "high": U64_MAX},
    )
    assert decode(twice) == RegisterAssoc(name=1, value=U128_MAX)


def test_wide_patch_reaches_nested_fields() -> None:
    """Patches address fields inside nested structs and lists (Request -> SetVpRegisters -> element)."""
    frame = _wide(
        {
            "type": "Request",
            "id": 7,
            "partition": 1,
            "vp_index": 2,
            "action": {"type": "SetVpRegisters", "registers": [{"type": "RegisterAssoc", "name": 0x70001}]},
        },
        {"path": ["action", "registers", 0, "value"], "low": 3, "high": 5},
    )
    expected = Request(
        id=7,
        partition=1,
        vp_index=2,
        action=SetVpRegisters(registers=[RegisterAssoc(name=Reg.GDTR, value=(5 << 64) | 3)]),
    )
    assert decode(frame) == expected


def test_validation_errors_carry_the_validation_code() -> None:
    """Schema failures are reported as VALIDATION, bad msgpack as DECODE."""
    assert _refused(_msgpack({"type": "Rdmsr", "msr": -1})).code is ProtocolErrorCode.VALIDATION
    assert _refused(b"\xc1").code is ProtocolErrorCode.DECODE
    assert _refused(MALFORMED["utf8-in-tag"]).code is ProtocolErrorCode.DECODE
    assert isinstance(_refused(_DEEP).__cause__, msgspec.ValidationError)


# ---- Frame size (RELIABILITY F1) ---------------------------------------------------------------


def _error_reply_of_size(size: int) -> bytes:
    probe = 100_000
    overhead = len(encode(ErrorReply(id=0, code=0, message="x" * probe))) - probe
    frame = encode(ErrorReply(id=0, code=0, message="x" * (size - overhead)))
    assert len(frame) == size
    return frame


def test_frame_of_exactly_max_frame_bytes_decodes() -> None:
    """A valid frame of MAX_FRAME bytes is accepted (the limit is inclusive)."""
    assert isinstance(decode(_error_reply_of_size(MAX_FRAME)), ErrorReply)


@pytest.mark.parametrize("size", [MAX_FRAME + 1, 2 * MAX_FRAME])
def test_oversize_valid_frame_is_refused_as_too_large(size: int) -> None:
    """A frame longer than MAX_FRAME is refused with TOO_LARGE even when its content is valid."""
    assert _refused(_error_reply_of_size(size)).code is ProtocolErrorCode.TOO_LARGE


def test_oversize_garbage_is_refused_as_too_large() -> None:
    """Oversize input is refused by length before it is parsed."""
    assert _refused(b"\x91" * (MAX_FRAME + 1)).code is ProtocolErrorCode.TOO_LARGE
    assert _refused(memoryview(bytes(MAX_FRAME + 1))).code is ProtocolErrorCode.TOO_LARGE


def test_max_frame_is_one_mebibyte() -> None:
    """MAX_FRAME is RELIABILITY F1's default of 1 MiB."""
    assert MAX_FRAME == 1 << 20


def test_enum_fields_come_back_as_their_enum_type() -> None:
    """Enum fields (HvStatus, Vtl, AccessKind) decode as their enum type, not as bare ints."""
    result = decode(encode(HypercallResult(status=HvStatus.INVALID_VTL_STATE)))
    assert isinstance(result, HypercallResult)
    assert type(result.status) is HvStatus
    switched = decode(encode(VtlSwitched(to_vtl=Vtl.VTL1, entry_reason=1)))
    assert isinstance(switched, VtlSwitched)
    assert type(switched.to_vtl) is Vtl
    access = decode(encode(MemoryAccess(gpa=0, kind=AccessKind.EXECUTE)))
    assert isinstance(access, MemoryAccess)
    assert type(access.kind) is AccessKind
