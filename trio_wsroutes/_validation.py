"""The strict cattrs converter: JSON values to attrs classes, as Zod would check them.

cattrs coerces by default (``5`` becomes ``"5"``, ``1.7`` becomes ``1``); a typed API
must not. This module builds a converter on ``cattrs.preconf.orjson`` whose hooks accept
only the JSON type a field declares, and turns cattrs' structured exceptions into
:class:`~trio_wsroutes.ErrorDetail` entries with a JSON path each. Exception text from
inside cattrs or the standard library is never copied into a detail: only our own messages
and the messages of attrs validators, which are written for the client.

Beyond JSON's own types, fields may be :class:`uuid.UUID`, :class:`datetime.datetime`,
:class:`datetime.date` and :class:`decimal.Decimal`, each carried as a JSON string in
one strict form (see :data:`converter`), and enums (by value). Unknown keys are ignored
unless a hook from :func:`structure_hook_for` with ``forbid_unknown=True`` is used.
:func:`check_client_schema` and :func:`check_server_message` find, when a route is
defined, field types the converter cannot read or write.
"""

from __future__ import annotations

import contextvars
import datetime
import decimal
import enum
import re
import typing
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal, TypeVar, cast, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.fns import identity as _identity
from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.strategies import configure_union_passthrough

from ._errors import ErrorDetail
from ._walk import (
    JSON_SCALARS,
    init_fields,
    is_any_set,
    is_enum,
    is_literal,
    is_mapping,
    is_sequence,
    is_string_key,
    qualified_name,
    shape,
    type_repr,
)

__all__ = [
    "check_client_schema",
    "check_server_message",
    "converter",
    "structure_errors",
    "structure_hook_for",
    "validation_details",
]

StructureHook = Callable[[Any, Any], Any]
_T = TypeVar("_T")

_JSON_NAMES: Final[dict[type[Any], str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class StrictTypeError(TypeError):
    """A JSON value of the wrong type for its field."""

    def __init__(self, expected: str, value: object) -> None:
        got = _JSON_NAMES.get(type(value), type(value).__name__)
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected


class MissingField(KeyError):
    """A required field is absent."""


class InvalidValue(ValueError):
    """A value of the right JSON type that the field does not accept."""


class UnknownField(ValueError):
    """A key that is not a field of its class, refused when unknown keys are forbidden."""

    def __init__(self, key: str) -> None:
        shown = _quote(key[:_MAX_KEY]) + ("..." if len(key) > _MAX_KEY else "")
        super().__init__(f"unknown field {shown}")
        self.key = key


class _ValidatorFailed(ValueError):
    """An attrs validator rejected a field; carries the validator's own message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- the problem budget: validation that stops ---------------------------------------------

MAX_PROBLEMS: Final = 100
"""Structuring one value stops after this many problems (a fail-fast cap).

Each problem costs an exception, a note and, later, a detail: without a cap, a 4 MiB
array of ``{}`` for a ``list[Item]`` raised millions of them (minutes of CPU on the event
loop, gigabytes, a 290 MB error reply). With it, the work done on a bad value is its
parsing plus at most this many problems, wherever they are (nested arrays, objects and
classes share one budget).
"""

MAX_ERROR_DETAILS: Final = 20
"""At most this many ``details`` in one error envelope (then one ``"and N more"`` entry)."""

MAX_ERROR_DETAILS_BYTES: Final = 4096
"""The ``details`` of one error envelope fit in this many bytes of JSON (the first detail
always goes out; every path and message is clipped to :data:`MAX_DETAIL_TEXT`)."""

MAX_DETAIL_TEXT: Final = 200
"""A detail's ``path`` or ``message`` longer than this many characters is clipped (keys and
validator messages may repeat what the client sent)."""


class _Budget:
    """The problems found so far in one top-level value, shared by the hooks under it."""

    __slots__ = ("count", "spent")

    def __init__(self) -> None:
        self.count = 0
        self.spent = False

    def spend(self, exc: BaseException) -> bool:
        """Count ``exc`` (a group's members were counted where they were found); ``True``
        once the budget is spent: stop looking, report what was found."""
        if not isinstance(exc, BaseExceptionGroup):
            self.count += 1
            if self.count >= MAX_PROBLEMS:
                self.spent = True
        return self.spent


_budget: Final[contextvars.ContextVar[_Budget | None]] = contextvars.ContextVar(
    "trio_wsroutes_problem_budget", default=None
)


class _StoppedNote(str):
    """The note on a failure whose structuring stopped at :data:`MAX_PROBLEMS`."""

    __slots__ = ()


def _as_root(hook: Callable[[Any, Any], _T], value: Any, target: Any) -> _T:
    """Run ``hook`` as the outermost structuring hook: with a fresh budget."""
    budget = _Budget()
    token = _budget.set(budget)
    try:
        return hook(value, target)
    except Exception as exc:
        if budget.spent:
            exc.add_note(_StoppedNote(f"validation stopped after {budget.count} problems"))
        raise
    finally:
        _budget.reset(token)


def _structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    raise StrictTypeError("string", value)


def _structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        return value
    raise StrictTypeError("integer", value)


def _structure_float(value: Any, _: Any) -> float:
    kind: Any = value.__class__
    if kind is float or kind is int:
        return float(value)
    raise StrictTypeError("number", value)


def _structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise StrictTypeError("boolean", value)


def _structure_none(value: Any, _: Any) -> None:
    if value is None:
        return
    raise StrictTypeError("null", value)


# -- strings in one strict form: UUID, date-time, date, decimal -------------------------------

UUID_EXAMPLE: Final = "123e4567-e89b-12d3-a456-426614174000"
DATETIME_EXAMPLE: Final = "2024-01-02T03:04:05Z"
DATE_EXAMPLE: Final = "2024-01-02"
DECIMAL_EXAMPLE: Final = "12.50"

_UUID_FORM: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# RFC 3339 (the ``date-time`` of JSON Schema): seconds required, any fraction, an offset.
_DATETIME_FORM: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_DATE_FORM: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DECIMAL_FORM: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Exponents a default decimal context can hold (no Overflow in the handler's arithmetic).
_DECIMAL_EXPONENT: Final = 999_999
_NOT_FINITE: Final = frozenset({"nan", "snan", "inf", "infinity"})


def _structure_uuid(value: Any, _: Any) -> uuid.UUID:
    expected = f"a UUID string like {_quote(UUID_EXAMPLE)}"
    if type(value) is not str:
        raise StrictTypeError(expected, value)
    if _UUID_FORM.fullmatch(value) is None:
        raise InvalidValue(f"expected {expected}")
    return uuid.UUID(value)


def _structure_datetime(value: Any, _: Any) -> datetime.datetime:
    expected = f"an ISO 8601 date-time like {_quote(DATETIME_EXAMPLE)}"
    if type(value) is not str:
        raise StrictTypeError(
            f"an ISO 8601 date-time string like {_quote(DATETIME_EXAMPLE)}", value
        )
    form = _DATETIME_FORM.fullmatch(value)
    if form is None:
        raise InvalidValue(f"expected {expected}")
    if form["offset"] is None:
        raise InvalidValue(
            f'expected an ISO 8601 date-time with a UTC offset ("Z" or "+01:00"), like '
            f"{_quote(DATETIME_EXAMPLE)}"
        )
    try:
        return datetime.datetime.fromisoformat(value.upper())
    except ValueError:  # a day, hour or offset out of range
        raise InvalidValue(f"expected {expected}") from None


def _structure_date(value: Any, _: Any) -> datetime.date:
    expected = f"an ISO 8601 date like {_quote(DATE_EXAMPLE)}"
    if type(value) is not str:
        raise StrictTypeError(f"an ISO 8601 date string like {_quote(DATE_EXAMPLE)}", value)
    if _DATE_FORM.fullmatch(value) is None:
        raise InvalidValue(f"expected {expected}")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:  # a month or day out of range
        raise InvalidValue(f"expected {expected}") from None


def _structure_decimal(value: Any, _: Any) -> decimal.Decimal:
    expected = f"a decimal number as a string like {_quote(DECIMAL_EXAMPLE)}"
    kind: Any = value.__class__
    if kind is int or kind is float:
        # Said outright: a JSON number may already have lost digits in the client.
        raise InvalidValue(f"expected {expected}, got number (JSON numbers lose precision)")
    if kind is not str:
        raise StrictTypeError(expected, value)
    if _DECIMAL_FORM.fullmatch(value) is None:
        if value.lstrip("+-").lower() in _NOT_FINITE:
            raise InvalidValue(f"expected a finite decimal number like {_quote(DECIMAL_EXAMPLE)}")
        raise InvalidValue(f"expected a decimal number like {_quote(DECIMAL_EXAMPLE)}")
    number = decimal.Decimal(value)
    if not -_DECIMAL_EXPONENT <= number.adjusted() <= _DECIMAL_EXPONENT:
        raise InvalidValue(
            f"expected a decimal number with an exponent between -{_DECIMAL_EXPONENT} and "
            f"{_DECIMAL_EXPONENT}"
        )
    return number


def _unstructure_uuid(value: uuid.UUID) -> str:
    return str(value)


def _unstructure_datetime(value: datetime.datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError(
            f"cannot send the naive datetime {value.isoformat()!r}: a date-time on the wire "
            "carries a UTC offset; give it a tzinfo (datetime.datetime.now(datetime.UTC), "
            "value.replace(tzinfo=...))"
        )
    return value.isoformat()


def _unstructure_date(value: datetime.date) -> str:
    if isinstance(value, datetime.datetime):
        raise TypeError(
            f"cannot send the datetime {value.isoformat()!r} as a date: pass value.date(), "
            "or declare the field as datetime.datetime"
        )
    return value.isoformat()


def _unstructure_decimal(value: decimal.Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"cannot send the decimal {value}: only finite numbers are supported")
    return str(value)


def _require(kind: type, expected: str, hook: StructureHook) -> StructureHook:
    def structure(value: Any, target: Any) -> Any:
        if type(value) is not kind:
            raise StrictTypeError(expected, value)
        return hook(value, target)

    return structure


def _sequence_factory(target: Any, conv: cattrs.Converter) -> StructureHook:
    args = get_args(target)
    origin = get_origin(target) or target
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        items = [conv.get_structure_hook(arg) for arg in args]

        def structure_tuple(value: Any, target: Any) -> tuple[Any, ...]:
            if len(value) != len(items):
                raise InvalidValue(f"expected an array of {len(items)} items")
            budget = _budget.get()
            if budget is None:
                return _as_root(structure_tuple, value, target)
            errors: list[Exception] = []
            out: list[Any] = []
            for index, (hook, arg, item) in enumerate(zip(items, args, value, strict=True)):
                try:
                    out.append(hook(item, arg))
                except Exception as exc:
                    exc.add_note(_index_note(index, arg))
                    errors.append(exc)
                    if budget.spend(exc):
                        break
            if errors:
                raise IterableValidationError("invalid items", errors, target)  # pyright: ignore[reportCallIssue]
            return tuple(out)

        return _require(list, "array", structure_tuple)

    element = args[0] if args else Any
    as_list = _list_hook(element, conv)
    if origin is tuple:
        return _require(list, "array", lambda v, t: tuple(as_list(v, t)))
    if is_any_set(target):
        frozen = origin is frozenset

        def structure_set(value: Any, target: Any) -> Any:
            items: list[Any] = as_list(value, target)
            return frozenset(items) if frozen else set(items)

        return _require(list, "array", structure_set)
    return _require(list, "array", as_list)


def _element_hook(element: Any, conv: cattrs.Converter) -> StructureHook:
    try:
        return conv.get_structure_hook(element)
    except RecursionError:  # a recursive class: look the hook up when it is needed
        return conv.structure


_SCALARS_ATTR: Final = "__wsroutes_scalars__"


def _scalars(
    kind: type,
    hook: StructureHook,
    json_types: set[type],
    convert: Callable[[Any], Any] | None = None,
) -> StructureHook:
    """Mark ``hook`` as the strict hook of the JSON scalar ``kind``: a ``list[kind]`` whose
    items all have one of ``json_types`` is taken in one pass in C (``convert`` applied
    to each, if given)."""
    setattr(hook, _SCALARS_ATTR, (kind, frozenset(json_types), convert))
    return hook


def _list_hook(element: Any, conv: cattrs.Converter) -> StructureHook:
    """A JSON array as a list of ``element``, item by item, stopping at the budget."""
    if element is Any:

        def structure_any(value: Any, _: Any) -> list[Any]:
            return list(value)

        return structure_any
    hook = _element_hook(element, conv)

    def structure_list(value: Any, target: Any) -> list[Any]:
        budget = _budget.get()
        if budget is None:
            return _as_root(structure_list, value, target)
        out: list[Any] = []
        append = out.append
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                append(hook(item, element))
            except Exception as exc:
                exc.add_note(_index_note(index, element))
                errors.append(exc)
                if budget.spend(exc):
                    break
        if errors:
            raise IterableValidationError("invalid items", errors, target)  # pyright: ignore[reportCallIssue]
        return out

    scalars: tuple[type, frozenset[type], Callable[[Any], Any] | None] | None = getattr(
        hook, _SCALARS_ATTR, None
    )
    if scalars is None or element is not scalars[0]:  # (not for enums and other subclasses)
        return structure_list
    # Arrays of strings, integers, numbers or booleans are checked and copied in C: a
    # 15 MiB array of integers took 1.6 s item by item, 0.26 s so. An array with any
    # other item goes down the item-by-item path, which reports it.
    _, json_types, convert = scalars

    def structure_scalars(value: Any, target: Any) -> list[Any]:
        if json_types.issuperset(map(type, value)):
            return list(value) if convert is None else list(map(convert, value))
        return structure_list(value, target)

    return structure_scalars


def _index_note(index: int, arg: Any) -> IterableValidationNote:
    return IterableValidationNote(f"Structuring item @ index {index}", index, arg)  # pyright: ignore[reportCallIssue]


def _field_note(name: str, field_type: Any) -> AttributeValidationNote:
    return AttributeValidationNote(f"Structuring field {name}", name, field_type)  # pyright: ignore[reportCallIssue]


def _mapping_factory(target: Any, conv: cattrs.Converter) -> StructureHook:
    args = get_args(target)
    if (
        args
        and args[0] is not str
        and not (isinstance(args[0], type) and issubclass(args[0], str))
    ):
        raise TypeError(
            f"{target!r}: JSON object keys are strings; use dict[str, ...] in messages"
        )
    key_type: Any = args[0] if args else Any
    value_type: Any = args[1] if len(args) == 2 else Any
    # JSON keys are strings already: only a narrower key type (Literal, a str enum) is read.
    key_hook = None if key_type is Any or key_type is str else _element_hook(key_type, conv)
    value_hook = None if value_type is Any else _element_hook(value_type, conv)
    if key_hook is None and value_hook is None:

        def structure_any(value: Any, _: Any) -> dict[Any, Any]:
            return dict(value)

        return _require(dict, "object", structure_any)

    def structure_mapping(value: Any, target: Any) -> dict[Any, Any]:
        budget = _budget.get()
        if budget is None:
            return _as_root(structure_mapping, value, target)
        out: dict[Any, Any] = {}
        errors: list[Exception] = []
        for key, item in cast("dict[str, Any]", value).items():
            try:
                out[key if key_hook is None else key_hook(key, key_type)] = (
                    item if value_hook is None else value_hook(item, value_type)
                )
            except Exception as exc:
                exc.add_note(_key_note(key, value_type))
                errors.append(exc)
                if budget.spend(exc):
                    break
        if errors:
            raise IterableValidationError("invalid entries", errors, target)  # pyright: ignore[reportCallIssue]
        return out

    return _require(dict, "object", structure_mapping)


def _key_note(key: str, value_type: Any) -> IterableValidationNote:
    return IterableValidationNote("Structuring mapping value", key, value_type)  # pyright: ignore[reportCallIssue]


def _literal_factory(target: Any, _conv: cattrs.Converter) -> StructureHook:
    # Compare type and value, so that Literal[1] refuses True and Literal["1"] refuses 1.
    members = [(m.value if isinstance(m, enum.Enum) else m, m) for m in get_args(target)]
    wire = ", ".join(repr(raw) for raw, _ in members)

    def structure(value: Any, _: Any) -> Any:
        for raw, member in members:
            if type(value) is type(raw) and value == raw:
                return member
        raise InvalidValue(f"expected one of {wire}")

    return structure


def _enum_factory(target: Any, _conv: cattrs.Converter) -> StructureHook:
    members: list[enum.Enum] = list(target)
    by_value: dict[tuple[Any, Any], enum.Enum] = {(type(m.value), m.value): m for m in members}
    wire = ", ".join(repr(m.value) for m in members)

    def structure(value: Any, _: Any) -> Any:
        try:
            return by_value[(type(value), value)]
        except (KeyError, TypeError):
            raise InvalidValue(f"expected one of {wire}") from None

    return structure


def _attrs_factory(cls: Any, conv: cattrs.Converter) -> StructureHook:
    """Structure an attrs class field by field, then construct it once.

    Written out (rather than cattrs' generated function) so that an attrs validator's
    failure can be reported on its own field with its own message.
    """
    attrs.resolve_types(cls)  # string annotations (``from __future__ import annotations``)
    fields = [
        (a.name, a.alias, a.type, conv.get_structure_hook(a.type), a.default is attrs.NOTHING)
        for a in attrs.fields(cls)
        if a.init
    ]
    name = cls.__name__
    known = frozenset(key for key, *_ in fields)

    def structure(value: Any, target: Any) -> Any:
        if type(value) is not dict:
            raise StrictTypeError("object", value)
        budget = _budget.get()
        if budget is None:
            return _as_root(structure, value, target)
        obj = cast("dict[str, Any]", value)
        kwargs: dict[str, Any] = {}
        errors: list[Exception] = []
        found = 0
        for key, alias, field_type, hook, required in fields:
            try:
                raw = obj[key]
            except KeyError:
                if required:
                    missing = MissingField(key)
                    missing.add_note(_field_note(key, field_type))
                    errors.append(missing)
                    if budget.spend(missing):
                        break
                continue
            found += 1
            try:
                kwargs[alias] = hook(raw, field_type)
            except Exception as exc:
                exc.add_note(_field_note(key, field_type))
                errors.append(exc)
                if budget.spend(exc):
                    break
        # Only an object with keys beyond its fields pays for the look-up.
        if found != len(obj) and _forbid_unknown.get() and not budget.spent:
            for key in obj:
                if key not in known:
                    unknown = UnknownField(key)
                    errors.append(unknown)
                    if budget.spend(unknown):
                        break
        if not errors:
            try:
                return cls(**kwargs)
            except (ValueError, TypeError):
                pass  # an attrs validator (or __attrs_post_init__) refused: find which
        # Report every problem at once, as Zod does: type errors, and the validators of
        # the fields that did have the right type (unless the budget is spent already).
        if not budget.spent:
            for failure in _validator_failures(cls, kwargs):
                errors.append(failure)
                if budget.spend(failure):
                    break
        if not errors:
            raise InvalidValue(f"invalid {name}")
        raise ClassValidationError(f"While structuring {name}", errors, cls)  # pyright: ignore[reportCallIssue]

    return structure


def _validator_failures(cls: Any, kwargs: dict[str, Any]) -> list[Exception]:
    """Run the attrs validators of the fields in ``kwargs``, one by one, and return each
    refusal as a detail on its own field (only on the error path).

    Fields missing from ``kwargs`` (absent, or refused for their type) take their default
    or stay unset; a validator that needs such a field and fails otherwise is skipped.
    """
    instance = object.__new__(cls)
    for a in attrs.fields(cls):
        if a.alias in kwargs:
            value = kwargs[a.alias]
        elif isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
            factory: Any = a.default
            try:
                value = factory.factory(instance) if factory.takes_self else factory.factory()
            except Exception:  # a factory that needs an unset field
                continue
        elif a.default is not attrs.NOTHING:
            value = a.default
        else:
            continue
        object.__setattr__(instance, a.name, value)
    failures: list[Exception] = []
    for a in attrs.fields(cls):
        if a.validator is None or a.alias not in kwargs:
            continue
        try:
            a.validator(instance, a, kwargs[a.alias])
        except (ValueError, TypeError) as exc:
            failure = _ValidatorFailed(a.name, str(exc.args[0]) if exc.args else "invalid value")
            failure.add_note(_field_note(a.name, a.type))
            failures.append(failure)
        except Exception:  # e.g. AttributeError on an unset field
            continue
    return failures


_forbid_unknown: Final = contextvars.ContextVar("trio_wsroutes_forbid_unknown", default=False)
"""Set while a hook from ``structure_hook_for(..., forbid_unknown=True)`` runs: every
attrs class structured meanwhile, however deeply nested, refuses keys it does not have."""


def _is_collection(target: Any) -> bool:
    origin: Any = get_origin(target) or target
    return bool(is_sequence(target) or is_any_set(target) or origin is tuple)


_JSON_SCALARS: Final = (*JSON_SCALARS, type(None))


def _enum_unstructure_factory(conv: cattrs.Converter) -> Callable[[Any], Any]:
    def unstructure_enum(member: enum.Enum) -> Any:
        value: Any = member.value
        if value.__class__ in _JSON_SCALARS:
            return value
        return conv.unstructure(value)

    return unstructure_enum


def _make_converter() -> OrjsonConverter:
    conv = make_converter(detailed_validation=True)
    enum_hooks: dict[Any, StructureHook] = {}

    def scalar(kind: type, hook: StructureHook) -> StructureHook:
        # cattrs hands subclasses of str/int/float (StrEnum, IntEnum, ``class C(str, Enum)``)
        # to the hook of their base type; those are enums, checked as enums.
        def structure(value: Any, target: Any) -> Any:
            if target is kind or not is_enum(target):
                return hook(value, target)
            enum_hook = enum_hooks.get(target)
            if enum_hook is None:
                enum_hook = enum_hooks[target] = _enum_factory(target, conv)
            return enum_hook(value, target)

        return structure

    conv.register_structure_hook(str, _scalars(str, scalar(str, _structure_str), {str}))
    conv.register_structure_hook(int, _scalars(int, scalar(int, _structure_int), {int}))
    conv.register_structure_hook(
        float, _scalars(float, scalar(float, _structure_float), {int, float}, float)
    )
    conv.register_structure_hook(bool, _scalars(bool, _structure_bool, {bool}))
    conv.register_structure_hook(type(None), _structure_none)
    # Strings in one strict form, both ways (orjson gets strings, never objects).
    conv.register_structure_hook(uuid.UUID, _structure_uuid)
    conv.register_structure_hook(datetime.datetime, _structure_datetime)
    conv.register_structure_hook(datetime.date, _structure_date)
    conv.register_structure_hook(decimal.Decimal, _structure_decimal)
    conv.register_unstructure_hook(uuid.UUID, _unstructure_uuid)
    conv.register_unstructure_hook(datetime.datetime, _unstructure_datetime)
    conv.register_unstructure_hook(datetime.date, _unstructure_date)
    conv.register_unstructure_hook(decimal.Decimal, _unstructure_decimal)
    # Enums by value: ``converter.unstructure`` returns plain JSON data, as orjson writes it.
    unstructure_enum = _enum_unstructure_factory(conv)

    def enum_factory(_: Any) -> Callable[[Any], Any]:
        return unstructure_enum

    conv.register_unstructure_hook_factory(is_enum, enum_factory)
    # The preconf passthrough for unions of JSON scalars accepts subclasses of each member,
    # so ``int | str`` took ``True``. Without ``bool`` in the set, a boolean goes to the
    # strict bool hook, which only a union naming ``bool`` reaches.
    configure_union_passthrough(str | int | float | None, conv)
    factories: list[tuple[Callable[[Any], bool], Callable[[Any, cattrs.Converter], Any]]] = [
        (attrs.has, _attrs_factory),
        (is_literal, _literal_factory),
        (is_enum, _enum_factory),
        (is_mapping, _mapping_factory),
        (_is_collection, _sequence_factory),
    ]
    for predicate, factory in factories:
        conv.register_structure_hook_factory(predicate, factory)
    return conv


converter: Final = _make_converter()
"""The project's converter: strict structuring, orjson-friendly unstructuring.

Each field type takes one JSON form, and nothing else (no coercion):

=========================  ===============================================================
``str``                    a string
``int``                    an integer (not ``1.0``, not ``true``)
``float``                  a number (an integer is accepted and becomes a ``float``)
``bool``                   ``true`` or ``false``
``None``                   ``null``
lists, tuples, sets        an array (``tuple[X, Y]``: of exactly two items)
``dict[str, X]``           an object
``Literal``, enums         one of the values (compared with their JSON type)
attrs classes              an object (unknown keys ignored, or refused on request)
``uuid.UUID``              a string, ``"123e4567-e89b-12d3-a456-426614174000"`` (any case)
``datetime.datetime``      an RFC 3339 date-time with an offset: ``"2024-01-02T03:04:05Z"``,
                           ``"...+01:00"``; read as an aware datetime, written with
                           ``isoformat()``; a naive datetime is refused both ways
``datetime.date``          ``"2024-01-02"``
``decimal.Decimal``        a string, ``"12.50"``, ``"-1E+3"``; never a JSON number (it may
                           have lost digits already); NaN and infinities are refused
``bytes``                  a base85 string
=========================  ===============================================================

Register hooks on it for other types (``converter.register_structure_hook(T, fn)`` and
``converter.register_unstructure_hook(T, fn)``) before defining the routes that use them.
"""


def structure_hook_for(cls: type[_T], *, forbid_unknown: bool = False) -> Callable[[Any, Any], _T]:
    """The hook that structures ``data`` as ``cls``: ``hook(data, cls)``.

    With ``forbid_unknown=False`` (the default, as Zod's) keys that are not fields are
    ignored. With ``forbid_unknown=True`` each one is an error detail on its own path
    (``$.data.extra``, ``$.data.items[0].extra``: nested classes are strict too), with
    the message ``unknown field "extra"``, reported with the other problems.

    Both hooks are cached; take them after registering any hooks of your own on
    :data:`converter`. Failures are cattrs exceptions; :func:`validation_details` turns
    them into details.
    """
    base = cast("Callable[[Any, Any], _T]", converter.get_structure_hook(cls))
    if not forbid_unknown:
        return base
    strict = _strict_hooks.get(cls)
    if strict is None:

        def structure_strictly(value: Any, target: Any) -> _T:
            token = _forbid_unknown.set(True)
            try:
                return base(value, target)
            finally:
                _forbid_unknown.reset(token)

        strict = _strict_hooks[cls] = structure_strictly
    return cast("Callable[[Any, Any], _T]", strict)


_strict_hooks: dict[type[Any], Callable[[Any, Any], Any]] = {}


def structure_errors(exc: BaseException, path: str) -> Iterator[ErrorDetail]:
    """Walk a cattrs exception (group) and yield one detail per leaf problem."""
    if isinstance(exc, _ValidatorFailed):
        yield ErrorDetail(path, exc.message)
    elif isinstance(exc, UnknownField):
        yield ErrorDetail(_key_path(path, exc.key), str(exc))
    elif isinstance(exc, MissingField):
        yield ErrorDetail(path, "required field missing")
    elif isinstance(exc, StrictTypeError | InvalidValue):
        yield ErrorDetail(path, str(exc))
    elif isinstance(exc, BaseExceptionGroup):
        # cattrs' ClassValidationError and IterableValidationError are groups whose
        # members carry notes naming the field or index.
        group = cast("BaseExceptionGroup[BaseException]", exc)
        for sub in group.exceptions:
            yield from structure_errors(sub, _extend(path, sub))
    else:
        # Text from arbitrary code (a stdlib parser, a user hook) is not for clients.
        yield ErrorDetail(path, "invalid value")


def _extend(path: str, exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return f"{path}.{note.name}"
        if isinstance(note, IterableValidationNote):
            index = note.index
            if isinstance(index, str):
                return _key_path(path, index)
            return f"{path}[{index!r}]"
    return path


def _key_path(path: str, key: str) -> str:
    if len(key) > _MAX_KEY:
        return f"{path}[{_quote(key[:_MAX_KEY])}...]"
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{_quote(key)}]"


_MAX_KEY: Final = 64
"""Characters of a client's key repeated in a path or message."""


def _quote(key: str) -> str:
    return orjson.dumps(key).decode()


def validation_details(
    exc: BaseException,
    path: str = "$.data",
    *,
    max_details: int = MAX_ERROR_DETAILS,
    max_bytes: int = MAX_ERROR_DETAILS_BYTES,
) -> list[ErrorDetail]:
    """The problems in ``exc``, a failure from :data:`converter`, with JSON paths.

    At most ``max_details`` of them, within ``max_bytes`` of JSON (the first always goes
    out), each path and message clipped to :data:`MAX_DETAIL_TEXT` characters; a last
    detail at ``path`` says how many more there are, and whether checking stopped at
    :data:`MAX_PROBLEMS` (``"and 80 more problems (checking stopped after 100)"``).
    """
    details: list[ErrorDetail] = []
    size = 0
    more = 0
    for found in structure_errors(exc, path):
        if more == 0 and len(details) < max_details:
            detail = ErrorDetail(_clip_path(found.path), _clip_text(found.message))
            cost = len(orjson.dumps(detail.to_json())) + 1
            if not details or size + cost <= max_bytes:
                details.append(detail)
                size += cost
                continue
        more += 1
    if not details:
        return [ErrorDetail(path, "invalid value")]
    stopped = any(type(note) is _StoppedNote for note in getattr(exc, "__notes__", ()))
    if stopped:
        count = f"at least {more} more problems" if more else "possibly more problems"
        details.append(ErrorDetail(path, f"and {count} (checking stopped after {MAX_PROBLEMS})"))
    elif more:
        details.append(ErrorDetail(path, f"and {more} more problem{'s' if more > 1 else ''}"))
    return details


def _clip_text(text: str) -> str:
    if len(text) <= MAX_DETAIL_TEXT:
        return text
    return text[: MAX_DETAIL_TEXT - 3] + "..."


def _clip_path(path: str) -> str:
    # The start names the field, the end the place inside it: keep both.
    if len(path) <= MAX_DETAIL_TEXT:
        return path
    half = (MAX_DETAIL_TEXT - 3) // 2
    return path[:half] + "..." + path[-half:]


# -- definition-time checks --------------------------------------------------------------------

_Direction = Literal["client", "server"]

# Leaf types the converter writes as JSON strings (with its hooks, or orjson's own).
_WRITABLE_LEAVES: Final = frozenset(
    {datetime.datetime, datetime.date, datetime.time, uuid.UUID, decimal.Decimal, bytes}
)
_SUPPORTED: Final = (
    "str, int, float, bool, None, lists, tuples, sets, dict[str, X], Literal, enums, "
    "attrs classes, unions of these, datetime, date, UUID, Decimal, bytes"
)


def check_client_schema(cls: type[Any], where: str) -> None:
    """Check, when a route is defined, that :data:`converter` can read ``cls`` from JSON.

    Walks every field of ``cls`` and of the attrs classes it contains. A field type the
    converter has no structure hook for (``object``, ``complex``, a plain class, ...)
    raises :class:`TypeError` naming ``where`` (the route and message type, for the
    reader), the class, the field and its type, with a hint on registering a hook on
    ``trio_wsroutes.converter``. A field without an annotation, an annotation that
    cannot be resolved, and ``dict`` keys other than strings are refused the same way.
    """
    _SchemaCheck("client", where).check(cls)


def check_server_message(cls: type[Any], where: str | None = None) -> None:
    """Check, when a route is defined, that :data:`converter` can write ``cls`` as JSON.

    Like :func:`check_client_schema`, for the other direction: a field type that would
    reach orjson as an object it cannot serialise (``object``, ``complex``,
    ``timedelta``, a plain class without an unstructure hook) raises :class:`TypeError`
    naming the class, the field and its type, at definition time instead of on the first
    send. ``where`` defaults to ``server message`` and the class's name.
    """
    if where is None:
        where = f"server message {qualified_name(cls)}" if isinstance(cls, type) else ""
    _SchemaCheck("server", where).check(cls)


class _SchemaCheck:
    """One walk over a message class: its fields, and the classes they reach."""

    def __init__(self, direction: _Direction, where: str) -> None:
        self.direction: _Direction = direction
        self.where = where
        self.seen: set[type[Any]] = set()
        # (class, field name) from the message class down to the field being walked.
        self.chain: list[tuple[type[Any], str]] = []
        self.field_type: Any = None

    def check(self, cls: type[Any]) -> None:
        if not (isinstance(cls, type) and attrs.has(cls)):
            raise TypeError(self.prefix() + f"{type_repr(cls)} is not an attrs class")
        self.walk_class(cls)
        if self.direction == "client":
            try:
                converter.get_structure_hook(cls)
            except Exception as exc:
                raise TypeError(
                    self.prefix() + f"the converter cannot read {qualified_name(cls)} from JSON "
                    f"({exc}); register a structure hook on trio_wsroutes.converter"
                ) from None

    def prefix(self) -> str:
        return f"{self.where}: " if self.where else ""

    def walk_class(self, cls: type[Any]) -> None:
        if cls in self.seen:
            return
        self.seen.add(cls)
        try:
            fields = init_fields(cls)
        except Exception as exc:
            raise TypeError(
                self.prefix() + f"cannot resolve the field annotations of {qualified_name(cls)}"
                f"{self.reached()}: {type(exc).__name__}: {exc}"
            ) from None
        for field in fields:
            self.chain.append((cls, field.name))
            self.field_type = field.type
            if field.type is None or isinstance(field.type, str):
                raise TypeError(self.prefix() + f"{self.field()} has no type annotation")
            self.walk(field.type)
            self.chain.pop()

    def walk(self, tp: Any) -> None:
        found = shape(tp)
        kind, tp, args = found.kind, found.type, found.args
        if kind in ("any", "none", "scalar"):
            return
        if kind == "literal":
            for value in args:
                if not isinstance(value, enum.Enum | str | int | float | bool | None):
                    self.fail(tp, f"the Literal value {value!r} has no JSON form")
        elif kind == "union":
            for arg in args:
                self.walk(arg)
            if self.direction == "client":
                try:
                    converter.get_structure_hook(tp)
                except Exception as exc:
                    self.fail(tp, f"the converter cannot read {type_repr(tp)} from JSON ({exc})")
        elif kind == "enum":
            if self.direction == "server":
                for member in tp:
                    try:
                        orjson.dumps(converter.unstructure(member, tp))
                    except Exception:
                        self.fail(tp, f"the value of {tp.__name__}.{member.name} has no JSON form")
        elif kind == "attrs":
            outer = self.field_type
            self.walk_class(tp)
            self.field_type = outer
        elif kind == "mapping":
            if args:
                if not is_string_key(args[0]):
                    self.fail(tp, "JSON object keys are strings; use dict[str, ...]")
                self.walk(args[1])
        elif kind in ("tuple", "collection"):
            for arg in args:
                if arg is not Ellipsis and arg != ():
                    self.walk(arg)
        else:  # a generic attrs class, or another leaf
            self.leaf(tp)

    def leaf(self, tp: Any) -> None:
        if self.direction == "client":
            try:
                converter.get_structure_hook(tp)
            except Exception:
                self.fail(
                    tp,
                    f"the converter cannot read {type_repr(tp)} from JSON",
                    f"register a structure hook on trio_wsroutes.converter "
                    f"(converter.register_structure_hook({type_repr(tp)}, fn)) or use a "
                    f"supported type ({_SUPPORTED})",
                )
        elif tp not in _WRITABLE_LEAVES and converter.get_unstructure_hook(tp) is _identity:
            # No hook: the object itself would reach orjson, which cannot write it.
            self.fail(
                tp,
                f"the converter cannot write {type_repr(tp)} as JSON",
                f"register an unstructure hook on trio_wsroutes.converter "
                f"(converter.register_unstructure_hook({type_repr(tp)}, fn)) or use a "
                f"supported type ({_SUPPORTED})",
            )

    def field(self) -> str:
        cls, name = self.chain[-1]
        return f"field {name!r} of {qualified_name(cls)}{self.reached()}"

    def reached(self) -> str:
        outer = self.chain[:-1] if self.chain else []
        if not outer:
            return ""
        path = ", ".join(
            f"field {name!r} of {qualified_name(cls)}" for cls, name in reversed(outer)
        )
        return f" (reached through {path})"

    def fail(self, tp: Any, problem: str, hint: str | None = None) -> typing.NoReturn:
        del tp  # named in ``problem``
        text = f"{self.field()} has type {type_repr(self.field_type)}: {problem}"
        if hint is not None:
            text += f"; {hint}"
        raise TypeError(self.prefix() + text)
