"""The strict cattrs converter: JSON values to attrs classes, as Zod would check them.

cattrs coerces by default (``5`` becomes ``"5"``, ``1.7`` becomes ``1``); a typed API
must not. This module builds a converter on ``cattrs.preconf.orjson`` whose hooks accept
only the JSON type a field declares (``_strict_scalars.py``, ``_strict_collections.py``,
``_strict_classes.py``); ``_validation_details.py`` turns cattrs' structured exceptions
into :class:`~trio_wsroutes.ErrorDetail` entries with a JSON path each. Exception text
from inside cattrs or the standard library is never copied into a detail: only our own
messages and the messages of attrs validators, which are written for the client.

Beyond JSON's own types, fields may be :class:`uuid.UUID`, :class:`datetime.datetime`,
:class:`datetime.date` and :class:`decimal.Decimal`, each carried as a JSON string in
one strict form (see :data:`converter`), and enums (by value). Unknown keys are ignored
unless a hook from :func:`structure_hook_for` with ``forbid_unknown=True`` is used.
``check_client_schema`` and ``check_server_message`` (``_definition_checks.py``) find,
when a route is defined, field types the converter cannot read or write.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import attrs
import cattrs
from cattrs.preconf.orjson import OrjsonConverter, make_converter
from cattrs.strategies import configure_union_passthrough

from ._strict_classes import attrs_factory, forbidding_unknown
from ._strict_collections import is_collection, mapping_factory, mark_scalars, sequence_factory
from ._strict_scalars import (
    enum_factory,
    literal_factory,
    structure_bool,
    structure_date,
    structure_datetime,
    structure_decimal,
    structure_float,
    structure_int,
    structure_none,
    structure_str,
    structure_uuid,
    unstructure_date,
    unstructure_datetime,
    unstructure_decimal,
    unstructure_uuid,
)
from ._validation_problems import StructureHook
from ._walk import JSON_SCALARS, is_enum, is_literal, is_mapping

__all__ = ["converter", "structure_hook_for"]

_T = TypeVar("_T")

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
                enum_hook = enum_hooks[target] = enum_factory(target, conv)
            return enum_hook(value, target)

        return structure

    conv.register_structure_hook(str, mark_scalars(str, scalar(str, structure_str), {str}))
    conv.register_structure_hook(int, mark_scalars(int, scalar(int, structure_int), {int}))
    conv.register_structure_hook(
        float, mark_scalars(float, scalar(float, structure_float), {int, float}, float)
    )
    conv.register_structure_hook(bool, mark_scalars(bool, structure_bool, {bool}))
    conv.register_structure_hook(type(None), structure_none)
    # Strings in one strict form, both ways (orjson gets strings, never objects).
    conv.register_structure_hook(uuid.UUID, structure_uuid)
    conv.register_structure_hook(datetime.datetime, structure_datetime)
    conv.register_structure_hook(datetime.date, structure_date)
    conv.register_structure_hook(decimal.Decimal, structure_decimal)
    conv.register_unstructure_hook(uuid.UUID, unstructure_uuid)
    conv.register_unstructure_hook(datetime.datetime, unstructure_datetime)
    conv.register_unstructure_hook(datetime.date, unstructure_date)
    conv.register_unstructure_hook(decimal.Decimal, unstructure_decimal)
    # Enums by value: ``converter.unstructure`` returns plain JSON data, as orjson writes it.
    unstructure_enum = _enum_unstructure_factory(conv)

    def unstructure_enum_factory(_: Any) -> Callable[[Any], Any]:
        return unstructure_enum

    conv.register_unstructure_hook_factory(is_enum, unstructure_enum_factory)
    # The preconf passthrough for unions of JSON scalars accepts subclasses of each member,
    # so ``int | str`` took ``True``. Without ``bool`` in the set, a boolean goes to the
    # strict bool hook, which only a union naming ``bool`` reaches.
    configure_union_passthrough(str | int | float | None, conv)
    factories: list[tuple[Callable[[Any], bool], Callable[[Any, cattrs.Converter], Any]]] = [
        (attrs.has, attrs_factory),
        (is_literal, literal_factory),
        (is_enum, enum_factory),
        (is_mapping, mapping_factory),
        (is_collection, sequence_factory),
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
            token = forbidding_unknown.set(True)
            try:
                return base(value, target)
            finally:
                forbidding_unknown.reset(token)

        strict = _strict_hooks[cls] = structure_strictly
    return cast("Callable[[Any, Any], _T]", strict)


_strict_hooks: dict[type[Any], Callable[[Any, Any], Any]] = {}
