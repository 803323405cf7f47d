"""Walking the types of message fields: what a field type is, said once for every walker.

The definition-time checks (``_definition_checks.py``: can the converter read or write this
class?) and type generation (``_typegen``: what does this class look like on the wire?)
both walk a message class's fields and the types those reach. They share this module:
:func:`unwrap` sees through ``Annotated``, ``NewType`` and ``type`` aliases,
:func:`shape` says which kind of type a field has (the order of the questions matters:
``bool`` is an ``int``, a ``str`` enum is a ``str``), and :func:`init_fields` gives the
fields the converter reads and writes.

This module does no I/O (type generation imports it).
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Final, Literal, TypeGuard, cast, get_args, get_origin

import attrs
from cattrs import cols as _cols

__all__ = [
    "JSON_SCALARS",
    "Kind",
    "Shape",
    "init_fields",
    "is_any_set",
    "is_enum",
    "is_literal",
    "is_mapping",
    "is_sequence",
    "is_string_key",
    "qualified_name",
    "shape",
    "type_repr",
    "unwrap",
]

# cattrs' collection helpers, with the types they have (their stubs leave some unknown).
is_any_set = cast("Callable[[Any], bool]", _cols.is_any_set)  # pyright: ignore[reportUnknownMemberType]
is_mapping: Callable[[Any], bool] = _cols.is_mapping
is_sequence: Callable[[Any], bool] = _cols.is_sequence

JSON_SCALARS: Final = (str, int, float, bool)
"""The Python types of JSON's scalars (``null`` is the ``"none"`` kind)."""

Kind = Literal[
    "any",
    "none",
    "scalar",
    "literal",
    "union",
    "enum",
    "attrs",
    "generic_attrs",
    "mapping",
    "tuple",
    "collection",
    "other",
]
"""What a field type is:

* ``"any"``: ``typing.Any``; ``"none"``: ``None``; ``"scalar"``: ``str``, ``int``,
  ``float`` or ``bool`` (:data:`JSON_SCALARS`);
* ``"literal"``, ``"union"`` (``X | Y`` or ``Union``), ``"enum"`` (an ``enum.Enum``
  subclass);
* ``"attrs"``: an attrs class; ``"generic_attrs"``: a parametrised generic attrs class;
* ``"mapping"`` (``dict``, ``Mapping``, ...), ``"tuple"`` (``tuple``, ``tuple[X, ...]``,
  ``tuple[X, Y]``), ``"collection"`` (lists, sequences, sets);
* ``"other"``: anything else, a leaf the converter has hooks for (``datetime``, ``UUID``,
  ``bytes``, ...) or not.
"""


@attrs.frozen
class Shape:
    """A field type, unwrapped, with its kind and its arguments."""

    kind: Kind
    type: Any
    """The type with ``Annotated``, ``NewType`` and aliases taken off."""
    args: tuple[Any, ...] = ()
    """``get_args`` of the type: the Literal values, the union's members, the mapping's
    key and value types, the tuple's or collection's item types."""


def unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated[...]``, ``NewType`` and ``type`` aliases around it (as
    the converter sees it)."""
    while True:
        if get_origin(tp) is typing.Annotated:
            tp = get_args(tp)[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        elif type(tp).__name__ == "TypeAliasType" and hasattr(tp, "__value__"):
            tp = tp.__value__
        else:
            return tp


def is_literal(tp: Any) -> bool:
    """Whether ``tp`` is a ``Literal[...]``."""
    return get_origin(tp) is Literal


def is_enum(tp: Any) -> TypeGuard[type[enum.Enum]]:
    """Whether ``tp`` is an ``enum.Enum`` subclass."""
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def shape(tp: Any) -> Shape:
    """What the field type ``tp`` is (see :data:`Kind`)."""
    tp = unwrap(tp)
    origin = get_origin(tp)
    if tp is Any:
        return Shape("any", tp)
    if tp is None or tp is type(None):
        return Shape("none", tp)
    if tp in JSON_SCALARS:
        return Shape("scalar", tp)
    if origin is Literal:
        return Shape("literal", tp, get_args(tp))
    if origin is typing.Union or origin is types.UnionType:
        return Shape("union", tp, get_args(tp))
    if is_enum(tp):
        return Shape("enum", tp)
    if isinstance(tp, type) and attrs.has(tp):
        return Shape("attrs", tp)
    if origin is not None and attrs.has(origin):
        return Shape("generic_attrs", tp, get_args(tp))
    if is_mapping(tp):
        return Shape("mapping", tp, get_args(tp))
    if tp is tuple or origin is tuple:
        return Shape("tuple", tp, get_args(tp))
    if is_any_set(tp) or is_sequence(tp):
        return Shape("collection", tp, get_args(tp))
    return Shape("other", tp)


def is_string_key(key: Any) -> bool:
    """Whether a mapping key type can be a JSON object's key: ``str`` (or a subclass,
    such as a ``str`` enum), a ``Literal`` of strings, or ``Any``."""
    key = unwrap(key)
    if key is Any or (isinstance(key, type) and issubclass(key, str)):
        return True
    return is_literal(key) and all(isinstance(v, str) for v in get_args(key))


def init_fields(cls: type[Any]) -> list[attrs.Attribute[Any]]:
    """The fields of attrs class ``cls`` that the converter reads and writes (those of
    ``__init__``), with their annotations resolved; raises what resolving raises (a name
    that does not exist, ...)."""
    attrs.resolve_types(cls)
    return [field for field in attrs.fields(cls) if field.init]


def qualified_name(cls: type[Any]) -> str:
    """``module.QualName`` of a class, as error messages name it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def type_repr(tp: Any) -> str:
    """A type as error messages show it: builtins bare, classes qualified."""
    if isinstance(tp, type):
        return tp.__name__ if tp.__module__ == "builtins" else qualified_name(tp)
    return repr(tp).replace("typing.", "")
