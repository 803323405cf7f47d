"""Field types as the model's :data:`~._model.TypeNode` trees, as the project's converter
puts them on the wire: :class:`TypeWalker` walks the attrs classes of messages and the
types their fields reach, and records each class (per direction) and enum it meets.

Leaf types that are not JSON scalars (``datetime``, ``UUID``, ``bytes``, ...) are probed:
a sample value goes through ``converter.unstructure`` and ``orjson``, and the JSON value
that comes out says what the wire carries. A type the converter cannot write (or, for
client messages, read) fails generation with a :class:`~._model.TypeGenerationError`
naming the class and field.

This module does no I/O.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import uuid
from collections.abc import Mapping
from typing import Any, Final, get_args

import attrs
import orjson

from .._validation import converter
from .._walk import init_fields, is_enum, is_literal, shape, unwrap
from .._walk import qualified_name as _qualified
from .._walk import type_repr as _type_repr
from ._model import (
    AnyJson,
    ArrayType,
    Direction,
    LiteralType,
    LiteralValue,
    MapType,
    Ref,
    Scalar,
    TupleType,
    TypeGenerationError,
    TypeNode,
    UnionType,
)

__all__ = ["DefinitionKey", "TypeWalker"]


DefinitionKey = tuple[type[Any], Direction | None]
"""A definition before naming: (class, direction); enums have direction ``None``."""


@attrs.define
class _RawObject:
    cls: type[Any]
    direction: Direction
    properties: list[tuple[str, TypeNode, bool, str | None]]
    """(name, node, required, description); its ``Ref`` names are placeholders."""


_PROBES: Final[dict[type[Any], tuple[object, str | None, str]]] = {
    datetime.datetime: (
        datetime.datetime(2000, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "date-time",
        "ISO 8601 date and time",
    ),
    datetime.date: (datetime.date(2000, 1, 2), "date", "ISO 8601 date"),
    # No "time" format: RFC 3339 times carry an offset, and Python's are usually naive.
    datetime.time: (datetime.time(3, 4, 5), None, "ISO 8601 time"),
    uuid.UUID: (uuid.UUID(int=1), "uuid", "UUID"),
    decimal.Decimal: (decimal.Decimal("1.5"), None, "decimal number"),
    bytes: (b"\x00\xfe", None, "bytes"),
}

_SCALARS: Final[Mapping[type[Any], Scalar]] = {
    bool: Scalar("boolean"),
    int: Scalar("integer"),
    float: Scalar("number"),
    str: Scalar("string"),
}


class TypeWalker:
    def __init__(self) -> None:
        self.objects: dict[DefinitionKey, _RawObject] = {}
        self.enums: dict[type[enum.Enum], tuple[tuple[str, str | int | float], ...]] = {}
        self.order: list[DefinitionKey] = []
        self.uses_any = False
        # While walking, a Ref's name is a placeholder for its key (names come last).
        self.placeholders: dict[DefinitionKey, str] = {}
        self.keys: dict[str, DefinitionKey] = {}

    def ref(self, key: DefinitionKey) -> Ref:
        placeholder = self.placeholders.get(key)
        if placeholder is None:
            placeholder = self.placeholders[key] = f"#{len(self.placeholders)}"
            self.keys[placeholder] = key
        return Ref(placeholder)

    # Each call carries ``where``: a description of the field being walked, for errors.

    def walk_class(self, cls: type[Any], direction: Direction, where: str) -> Ref:
        key: DefinitionKey = (cls, direction)
        ref = self.ref(key)
        if key in self.objects:
            return ref
        if getattr(cls, "__parameters__", ()):
            raise TypeGenerationError(
                f"{_qualified(cls)} ({where}) is a generic attrs class; client types need "
                "concrete classes"
            )
        try:
            fields = init_fields(cls)
        except Exception as exc:
            raise TypeGenerationError(
                f"cannot resolve the field annotations of {_qualified(cls)} ({where}): {exc}"
            ) from exc
        raw = _RawObject(cls, direction, [])
        self.objects[key] = raw  # before the fields: recursive classes refer back to it
        self.order.append(key)
        for field in fields:
            here = f"field {field.name!r} of {_qualified(cls)}"
            if field.type is None:
                raise TypeGenerationError(f"{here} has no type annotation")
            node = self.walk(field.type, direction, here)
            if direction == "client":
                self.check_structurable(field.type, here)
            has_default = field.default is not attrs.NOTHING
            required = (
                not has_default
                if direction == "client"
                else not (has_default and converter.omit_if_default)
            )
            description = field.metadata.get("description")
            raw.properties.append(
                (field.name, node, required, description if isinstance(description, str) else None)
            )
        return ref

    def check_structurable(self, tp: Any, where: str) -> None:
        try:
            converter.get_structure_hook(tp)
        except Exception as exc:
            raise TypeGenerationError(
                f"{where} has type {_type_repr(tp)}, which the converter cannot read from "
                f"JSON ({exc}); register a structure hook on trio_wsroutes.converter or use "
                "another type"
            ) from None

    def walk(self, tp: Any, direction: Direction, where: str) -> TypeNode:
        found = shape(tp)
        kind, tp, args = found.kind, found.type, found.args
        if kind == "any":
            self.uses_any = True
            return AnyJson()
        if kind == "none":
            return Scalar("null")
        if kind == "scalar":
            return _SCALARS[tp]
        if kind == "literal":
            return LiteralType(tuple(_literal_value(v, where) for v in args))
        if kind == "union":
            return self.walk_union(args, direction, where)
        if kind == "enum":
            return self.walk_enum(tp, where)
        if kind == "attrs":
            return self.walk_class(tp, direction, where)
        if kind == "generic_attrs":
            raise TypeGenerationError(
                f"{where} has type {_type_repr(tp)}: generic attrs classes are not supported "
                "in messages; use a concrete class"
            )
        if kind == "mapping":
            return self.walk_mapping(tp, direction, where)
        if kind == "tuple":
            if len(args) == 2 and args[1] is Ellipsis:
                return ArrayType(self.walk(args[0], direction, where))
            if not args and tp is tuple:
                self.uses_any = True
                return ArrayType(AnyJson())
            if args == ((),):  # tuple[()] on old typing versions
                return TupleType(())
            return TupleType(tuple(self.walk(arg, direction, where) for arg in args))
        if kind == "collection":
            if args:
                items = self.walk(args[0], direction, where)
            else:
                self.uses_any = True
                items = AnyJson()
            # A set is an array: the server writes each value once, and de-duplicates
            # what clients send (so the schema does not demand unique items).
            return ArrayType(items)
        if tp in _PROBES:
            return self.probe(tp, direction, where)
        raise TypeGenerationError(
            f"{where} has type {_type_repr(tp)}, which has no JSON form: the converter does "
            "not know how to write it. Use a JSON type (str, int, float, bool, None, lists, "
            "dict[str, ...], attrs classes, enums, Literal, datetime, date, UUID, bytes) or "
            "register hooks on trio_wsroutes.converter"
        )

    def walk_union(self, args: tuple[Any, ...], direction: Direction, where: str) -> TypeNode:
        options: list[TypeNode] = []
        literals: list[LiteralValue] = []
        nullable = False
        for arg in args:
            node = self.walk(arg, direction, where)
            if node == Scalar("null"):
                nullable = True
            elif isinstance(node, LiteralType):
                for value in node.values:
                    if not any(type(v) is type(value) and v == value for v in literals):
                        literals.append(value)
            elif isinstance(node, UnionType):
                options.extend(o for o in node.options if o not in options)
            elif node not in options:
                options.append(node)
        if literals:
            if None in literals:
                nullable = True
                literals.remove(None)
            options.insert(0, LiteralType(tuple(literals)))
        if nullable:
            options.append(Scalar("null"))
        if len(options) == 1:
            return options[0]
        return UnionType(tuple(options))

    def walk_enum(self, cls: type[enum.Enum], where: str) -> Ref:
        if cls not in self.enums:
            members: list[tuple[str, str | int | float]] = []
            for member in cls:
                value = _wire_value(member, cls, where)
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    raise TypeGenerationError(
                        f"{where} has type {_qualified(cls)}, an enum whose member "
                        f"{member.name} goes over the wire as {value!r}; enum values must be "
                        "strings or numbers"
                    )
                members.append((member.name, value))
            self.enums[cls] = tuple(members)
            self.order.append((cls, None))
        return self.ref((cls, None))

    def walk_mapping(self, tp: Any, direction: Direction, where: str) -> TypeNode:
        args = get_args(tp)
        key_type = unwrap(args[0]) if args else str
        value_type = args[1] if len(args) > 1 else Any
        keys: TypeNode | None = None
        if key_type is Any or key_type is str:
            keys = None
        elif is_literal(key_type) and all(isinstance(v, str) for v in get_args(key_type)):
            keys = self.walk(key_type, direction, where)
        elif is_enum(key_type) and issubclass(key_type, str):
            keys = self.walk_enum(key_type, where)
        else:
            raise TypeGenerationError(
                f"{where} has type {_type_repr(tp)}: JSON object keys are strings; use "
                "dict[str, ...] in messages"
            )
        if value_type is Any:
            self.uses_any = True
        return MapType(self.walk(value_type, direction, where), keys)

    def probe(self, tp: type[Any], direction: Direction, where: str) -> Scalar:
        sample, fmt, meaning = _PROBES[tp]
        try:
            wire = orjson.loads(orjson.dumps(converter.unstructure(sample, tp)))
        except Exception as exc:
            raise TypeGenerationError(
                f"{where} has type {_type_repr(tp)}, which the converter cannot serialise "
                f"to JSON ({exc}); register an unstructure hook on trio_wsroutes.converter "
                f"(for example converter.register_unstructure_hook({tp.__name__}, str)) or "
                "use another type"
            ) from None
        if direction == "client":
            try:
                converter.structure(wire, tp)
            except Exception as exc:
                raise TypeGenerationError(
                    f"{where} has type {_type_repr(tp)}, which the converter cannot read "
                    f"back from JSON ({type(exc).__name__}: {exc}); register a structure hook "
                    "on trio_wsroutes.converter or use another type"
                ) from None
        if isinstance(wire, str):
            encoding: str | None = None
            if isinstance(sample, bytes):
                if wire == base64.b85encode(sample).decode():
                    encoding = "base85"
                elif wire == base64.b64encode(sample).decode():
                    encoding = "base64"
                meaning = f"bytes, {encoding}-encoded" if encoding else "bytes"
            expected = getattr(sample, "isoformat", None)
            if fmt in ("date-time", "date") and (expected is None or wire != expected()):
                fmt = None
            if fmt == "uuid" and wire != str(sample):
                fmt = None
            return Scalar("string", fmt, encoding, meaning)
        if isinstance(wire, bool):
            return Scalar("boolean", description=meaning)
        if isinstance(wire, int):
            return Scalar("integer", description=meaning)
        if isinstance(wire, float):
            return Scalar("number", description=meaning)
        raise TypeGenerationError(
            f"{where} has type {_type_repr(tp)}, which the converter writes as {wire!r}; "
            "only JSON scalars are supported for this type"
        )


def _literal_value(value: object, where: str) -> LiteralValue:
    if isinstance(value, enum.Enum):
        value = _wire_value(value, type(value), where)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeGenerationError(
        f"{where}: Literal value {value!r} has no JSON form (use strings, numbers, booleans)"
    )


def _wire_value(member: enum.Enum, cls: type[enum.Enum], where: str) -> object:
    try:
        return orjson.loads(orjson.dumps(converter.unstructure(member, cls)))
    except Exception as exc:
        raise TypeGenerationError(
            f"{where} has type {_qualified(cls)}, whose member {member.name} the converter "
            f"cannot serialise ({exc})"
        ) from None
