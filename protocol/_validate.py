"""Boundary checks of guest actions: every field's type and range, with a checker built once per class.

A msgspec Struct's ``__init__`` does not check types (``Rdmsr(msr=1.5)`` constructs), so an action
that reaches the runtime is checked here first: ints are ints (not bools, floats or strings) and
fit their field (a ``U8`` in 0..255, a ``U64`` in 64 bits, a ``U128`` in 128), bools are bools,
literals and enums are members, lists hold at most what a rep hypercall can carry, and nested
Structs (``InitialVpContext``, ``RegisterAssoc``) are checked field by field. The checkers are
closures built from ``msgspec.inspect`` once per action class (``validator``), so a call costs one
dict lookup plus one comparison per field: no introspection per call.
"""

from __future__ import annotations

import enum
import itertools
from typing import TYPE_CHECKING, Any, Final, TypeAlias, get_args

import msgspec
import msgspec.inspect as mi

from ._actions import Action, Hypercall, check_raw_hypercall

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("ACTION_VALIDATORS", "IMMUTABLE_ACTIONS", "Checker", "check_action", "validator")

#: Checks one value; raises ``_Invalid`` (turned into TypeError/ValueError by the validator).
Checker: TypeAlias = "Callable[[Any], None]"

_VALIDATORS: dict[type, Callable[[Any], None]] = {}
#: Checks beyond field types and ranges, run once the fields are known to be good.
_SEMANTIC: Final[dict[type, Callable[[Any], None]]] = {Hypercall: check_raw_hypercall}


def _article(name: str) -> str:
    return f"an {name}" if name[0] in "AEIOU" else f"a {name}"


def _describe(value: object) -> str:
    text = f"{value:#x}" if type(value) is int and value >= 1 << 32 else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Invalid(Exception):  # internal signal, never leaves this module
    """A value failed its check; ``path`` is filled in by the enclosing list and struct checks."""

    def __init__(self, error: type[TypeError | ValueError], value: object, why: str) -> None:
        self.error = error
        self.value = value
        self.why = why
        self.path: list[str] = []

    def to_error(self, root: str) -> TypeError | ValueError:
        path = root + "".join(reversed(self.path))
        return self.error(f"{path}={_describe(self.value)}: {self.why}")


def _wrong_type(expected: str, value: object) -> _Invalid:
    return _Invalid(TypeError, value, f"expected {expected}, got {type(value).__name__}")


def _int_checker(lo: int, hi: int, what: str) -> Checker:
    def check(value: Any) -> None:
        if value.__class__ is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise _wrong_type(what, value)
        if not lo <= value <= hi:
            why = "negative" if value < 0 else "too wide"
            raise _Invalid(ValueError, value, f"{why}, expected {what}")

    return check


def _check_bool(value: Any) -> None:
    if value.__class__ is not bool:
        raise _wrong_type("a bool", value)


def _literal_checker(values: tuple[object, ...]) -> Checker:
    allowed = frozenset((type(v), v) for v in values)
    what = " or ".join(repr(v) for v in values)

    def check(value: Any) -> None:
        if (type(value), value) not in allowed:
            if any(type(value) is type(v) for v in values):
                raise _Invalid(ValueError, value, f"expected {what}")
            raise _wrong_type(what, value)

    return check


def _enum_checker(cls: type[enum.IntEnum]) -> Checker:
    members = frozenset(int(m) for m in cls)
    what = _article(cls.__name__)

    def check(value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(what, value)
        if value not in members:
            raise _Invalid(ValueError, value, f"expected {what} ({', '.join(m.name for m in cls)})")

    return check


def _optional(inner: Checker) -> Checker:
    def check(value: Any) -> None:
        if value is not None:
            inner(value)

    return check


def _list_checker(item: Checker, max_length: int | None) -> Checker:
    def check(value: Any) -> None:
        if value.__class__ is not list and value.__class__ is not tuple:
            raise _wrong_type("a list", value)
        if max_length is not None and len(value) > max_length:
            why = f"{len(value)} elements, at most {max_length} fit (12-bit rep count)"
            raise _Invalid(ValueError, f"[...{len(value)} elements]", why)
        i = 0
        try:
            for i, element in enumerate(value):  # noqa: B007  # i names the element in an error
                item(element)
        except _Invalid as bad:
            bad.path.append(f"[{i}]")
            raise

    return check


def _struct_checker(cls: type[msgspec.Struct], fields: tuple[tuple[str, Checker], ...]) -> Checker:
    name = cls.__name__

    def check(value: Any) -> None:
        if value.__class__ is not cls:
            raise _wrong_type(_article(name), value)
        field = ""
        try:
            for field, checker in fields:  # field names the culprit in an error
                checker(getattr(value, field))
        except _Invalid as bad:
            bad.path.append(f".{field}")
            raise

    return check


def _checker(info: mi.Type, where: str) -> tuple[Checker, str]:
    """The precise (slow) check of one field type and a fast expression over ``{v}``.

    The expression is true exactly when the slow check passes; the validator evaluates only the
    expressions, and runs the slow checks to say what is wrong once an expression is false.
    """
    bits: int | None = None
    if isinstance(info, mi.Metadata):
        bits = (info.extra or {}).get("bits")
        info = info.type
    if isinstance(info, mi.IntType):
        lo = info.ge if info.ge is not None else 0
        hi = info.le if info.le is not None else (1 << bits) - 1 if bits is not None else None
        if info.ge is None or hi is None:
            msg = f"{where}: an int field needs bounds (U8..U128) to be checked at the boundary"
            raise TypeError(msg)
        if bits is None and lo == 0 and not (hi + 1) & hi:
            bits = hi.bit_length()
        what = f"an unsigned {bits}-bit int" if bits is not None and lo == 0 else f"an int in {lo}..{hi:#x}"
        return _int_checker(
            lo, hi, what
        ), f"(({{v}}).__class__ in _INTS or _isint({{v}})) and {lo} <= {{v}} <= {hi}"
    if isinstance(info, mi.BoolType):
        return _check_bool, "({v}).__class__ is bool"
    if isinstance(info, mi.LiteralType):
        name = _constant(frozenset((type(v), v) for v in info.values))
        return _literal_checker(info.values), f"(({{v}}).__class__, {{v}}) in {name}"
    if isinstance(info, mi.EnumType) and issubclass(info.cls, enum.IntEnum):
        name = _constant(frozenset(int(m) for m in info.cls))
        return _enum_checker(info.cls), f"_isint({{v}}) and {{v}} in {name}"
    if isinstance(info, mi.UnionType):
        others = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(others) == 1 and len(info.types) == 2:
            slow, fast = _checker(others[0], where)
            return _optional(slow), f"({{v}} is None or ({fast}))"
    if isinstance(info, mi.ListType):
        slow, fast = _checker(info.item_type, where)
        limit = info.max_length if info.max_length is not None else -1
        name = _compile(
            "def {name}(v):\n"
            "    if (v.__class__ is not list and v.__class__ is not tuple) or "
            f"({limit} >= 0 and len(v) > {limit}):\n"
            "        return False\n"
            "    for x in v:\n"
            f"        if not ({fast.format(v='x')}):\n"
            "            return False\n"
            "    return True\n"
        )
        return _list_checker(slow, info.max_length), f"{name}({{v}})"
    if isinstance(info, mi.StructType):
        fields = [(f.name, *_checker(f.type, f"{where}.{f.name}")) for f in info.fields]
        cls_name = _constant(info.cls)
        tests = "".join(
            f"    v = a.{field}\n    if not ({fast.format(v='v')}):\n        return False\n"
            for field, _, fast in fields
        )
        head = f"def {{name}}(a):\n    if a.__class__ is not {cls_name}:\n        return False\n"
        name = _compile(f"{head}{tests}    return True\n")
        return _struct_checker(info.cls, tuple((f, slow) for f, slow, _ in fields)), f"{name}({{v}})"
    msg = f"{where}: no boundary check for a field of type {info!r}"
    raise TypeError(msg)


#: Classes known to be ints (int and the IntEnums seen so far, never bool): one set lookup.
_INTS: Final[set[type]] = {int}


def _isint(value: object) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        _INTS.add(type(value))  # bounded: one entry per int subclass in the program
        return True
    return False


#: Names the generated expressions refer to (constants and generated functions).
_NAMESPACE: dict[str, Any] = {"_isint": _isint, "_INTS": _INTS}
_names = itertools.count()


def _constant(value: object) -> str:
    name = f"_c{next(_names)}"
    _NAMESPACE[name] = value
    return name


def _compile(source: str) -> str:
    """Define the function ``source`` (its name is ``{name}``) in the namespace; return its name."""
    name = f"_f{next(_names)}"
    exec(source.replace("{name}", name), _NAMESPACE)  # our own generated source, no user input
    return name


def _field_checkers(cls: type[msgspec.Struct]) -> tuple[tuple[str, Checker, str], ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return tuple((f.name, *_checker(f.type, f"{cls.__name__}.{f.name}")) for f in info.fields)


def validator(cls: type[msgspec.Struct]) -> Callable[[Any], None]:
    """The check of every field of ``cls`` (built on first use, then cached).

    The returned function raises ``TypeError`` (wrong type) or ``ValueError`` (out of range)
    naming the field, e.g. ``LoadTableRegister.value=1.5: expected an unsigned 128-bit int``.
    Valid actions take the fast path: one generated function of inline comparisons.
    """
    found = _VALIDATORS.get(cls)
    if found is None:
        fields = _field_checkers(cls)
        name = cls.__name__

        def explain(action: Any) -> None:
            field = ""
            try:
                for field, slow, _ in fields:  # field names the culprit
                    slow(getattr(action, field))
            except _Invalid as bad:
                raise bad.to_error(f"{name}.{field}") from None
            msg = f"{name}: the fast and precise checks disagree (a bug in protocol._validate)"
            raise AssertionError(msg)

        explain_name = _constant(explain)
        tests = "".join(
            f"    v = a.{field}\n    if not ({fast.format(v='v')}):\n        {explain_name}(a)\n"
            for field, _, fast in fields
        )
        semantic = _SEMANTIC.get(cls)
        if semantic is not None:
            tests += f"    {_constant(semantic)}(a)\n"
        body = tests or "    pass\n"
        found = _NAMESPACE[_compile(f"def {{name}}(a):\n{body}")]
        _VALIDATORS[cls] = found
    return found


#: The checker of every class of the ``Action`` union, built at import.
ACTION_VALIDATORS: Final[dict[type, Callable[[Any], None]]] = {
    cls: validator(cls) for cls in get_args(Action)
}


def _immutable(info: mi.Type) -> bool:
    """True when a value of type ``info`` cannot change once made (no list, set or dict inside)."""
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.DictType | mi.VarTupleType):
        return isinstance(info, mi.FrozenSetType | mi.VarTupleType) and _immutable(info.item_type)
    if isinstance(info, mi.TupleType):
        return all(_immutable(item) for item in info.item_types)
    if isinstance(info, mi.UnionType):
        return all(_immutable(member) for member in info.types)
    if isinstance(info, mi.StructType):
        return bool(info.cls.__struct_config__.frozen) and all(_immutable(f.type) for f in info.fields)
    return not isinstance(info, mi.CustomType | mi.AnyType)  # ints, bools, strings, enums, None


#: Action classes whose instances never change (frozen, no list inside): an instance checked
#: once stays valid, so a caller that sends the same one again need not be checked again.
IMMUTABLE_ACTIONS: Final[frozenset[type]] = frozenset(
    cls for cls in get_args(Action) if _immutable(mi.type_info(cls))
)


def check_action(action: object) -> None:
    """Check ``action``'s type and every field; raise TypeError/ValueError naming the field."""
    check = ACTION_VALIDATORS.get(action.__class__)
    if check is None:
        msg = f"not a guest action: {_describe(action)} ({type(action).__name__})"
        raise TypeError(msg)
    check(action)
