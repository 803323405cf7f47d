"""The strict cattrs converter: JSON values to attrs classes, as Zod would check them.

cattrs coerces by default (``5`` becomes ``"5"``, ``1.7`` becomes ``1``); a typed API
must not. This module builds a converter on ``cattrs.preconf.orjson`` whose hooks accept
only the JSON type a field declares, and turns cattrs' structured exceptions into
:class:`~trio_wsroutes.ErrorDetail` entries with a JSON path each. Exception text from
inside cattrs or the standard library is never copied into a detail: only our own messages
and the messages of attrs validators, which are written for the client.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal, cast, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs import cols as _cols
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.strategies import configure_union_passthrough

from ._errors import ErrorDetail

__all__ = ["converter", "structure_errors", "validation_details"]

# cattrs' collection helpers, with the types they have (their stubs leave some unknown).
is_any_set = cast("Callable[[Any], bool]", _cols.is_any_set)  # pyright: ignore[reportUnknownMemberType]
is_mapping: Callable[[Any], bool] = _cols.is_mapping
is_sequence: Callable[[Any], bool] = _cols.is_sequence
list_structure_factory: Callable[[Any, cattrs.Converter], Any] = _cols.list_structure_factory
mapping_structure_factory = cast(
    "Callable[[Any, cattrs.Converter], Any]",
    _cols.mapping_structure_factory,  # pyright: ignore[reportUnknownMemberType]
)

StructureHook = Callable[[Any, Any], Any]

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


class _ValidatorFailed(ValueError):
    """An attrs validator rejected a field; carries the validator's own message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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

        def structure_tuple(value: Any, _: Any) -> tuple[Any, ...]:
            if len(value) != len(items):
                raise InvalidValue(f"expected an array of {len(items)} items")
            errors: list[Exception] = []
            out: list[Any] = []
            for index, (hook, arg, item) in enumerate(zip(items, args, value, strict=True)):
                try:
                    out.append(hook(item, arg))
                except Exception as exc:
                    exc.add_note(_index_note(index, arg))
                    errors.append(exc)
            if errors:
                raise IterableValidationError("invalid items", errors, target)  # pyright: ignore[reportCallIssue]
            return tuple(out)

        return _require(list, "array", structure_tuple)

    element = args[0] if args else Any
    as_list = list_structure_factory(list[element], conv)  # type: ignore[valid-type]
    if origin is tuple:
        return _require(list, "array", lambda v, t: tuple(as_list(v, t)))
    if is_any_set(target):
        frozen = origin is frozenset

        def structure_set(value: Any, target: Any) -> Any:
            items: list[Any] = as_list(value, target)
            return frozenset(items) if frozen else set(items)

        return _require(list, "array", structure_set)
    return _require(list, "array", as_list)


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
    return _require(dict, "object", mapping_structure_factory(target, conv))


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

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not dict:
            raise StrictTypeError("object", value)
        obj = cast("dict[str, Any]", value)
        kwargs: dict[str, Any] = {}
        errors: list[Exception] = []
        for key, alias, field_type, hook, required in fields:
            try:
                raw = obj[key]
            except KeyError:
                if required:
                    missing = MissingField(key)
                    missing.add_note(_field_note(key, field_type))
                    errors.append(missing)
                continue
            try:
                kwargs[alias] = hook(raw, field_type)
            except Exception as exc:
                exc.add_note(_field_note(key, field_type))
                errors.append(exc)
        if not errors:
            try:
                return cls(**kwargs)
            except (ValueError, TypeError):
                pass  # an attrs validator (or __attrs_post_init__) refused: find which
        # Report every problem at once, as Zod does: type errors, and the validators of
        # the fields that did have the right type.
        errors.extend(_validator_failures(cls, kwargs))
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


def _is_literal(target: Any) -> bool:
    return get_origin(target) is Literal


def _is_enum(target: Any) -> bool:
    return isinstance(target, type) and issubclass(target, enum.Enum)


def _is_collection(target: Any) -> bool:
    origin: Any = get_origin(target) or target
    return bool(is_sequence(target) or is_any_set(target) or origin is tuple)


def _make_converter() -> OrjsonConverter:
    conv = make_converter(detailed_validation=True)
    enum_hooks: dict[Any, StructureHook] = {}

    def scalar(kind: type, hook: StructureHook) -> StructureHook:
        # cattrs hands subclasses of str/int/float (StrEnum, IntEnum, ``class C(str, Enum)``)
        # to the hook of their base type; those are enums, checked as enums.
        def structure(value: Any, target: Any) -> Any:
            if target is kind or not _is_enum(target):
                return hook(value, target)
            enum_hook = enum_hooks.get(target)
            if enum_hook is None:
                enum_hook = enum_hooks[target] = _enum_factory(target, conv)
            return enum_hook(value, target)

        return structure

    conv.register_structure_hook(str, scalar(str, _structure_str))
    conv.register_structure_hook(int, scalar(int, _structure_int))
    conv.register_structure_hook(float, scalar(float, _structure_float))
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(type(None), _structure_none)
    # The preconf passthrough for unions of JSON scalars accepts subclasses of each member,
    # so ``int | str`` took ``True``. Without ``bool`` in the set, a boolean goes to the
    # strict bool hook, which only a union naming ``bool`` reaches.
    configure_union_passthrough(str | int | float | None, conv)
    factories: list[tuple[Callable[[Any], bool], Callable[[Any, cattrs.Converter], Any]]] = [
        (attrs.has, _attrs_factory),
        (_is_literal, _literal_factory),
        (_is_enum, _enum_factory),
        (is_mapping, _mapping_factory),
        (_is_collection, _sequence_factory),
    ]
    for predicate, factory in factories:
        conv.register_structure_hook_factory(predicate, factory)
    return conv


converter: Final = _make_converter()
"""The project's converter: strict structuring, orjson-friendly unstructuring."""


def structure_errors(exc: BaseException, path: str) -> Iterator[ErrorDetail]:
    """Walk a cattrs exception (group) and yield one detail per leaf problem."""
    if isinstance(exc, _ValidatorFailed):
        yield ErrorDetail(path, exc.message)
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
                return f"{path}.{index}" if index.isidentifier() else f"{path}[{_quote(index)}]"
            return f"{path}[{index!r}]"
    return path


def _quote(key: str) -> str:
    return orjson.dumps(key).decode()


def validation_details(exc: BaseException, path: str = "$.data") -> list[ErrorDetail]:
    """All problems in ``exc``, a failure from :data:`converter`, with JSON paths."""
    details = list(structure_errors(exc, path))
    return details or [ErrorDetail(path, "invalid value")]
