"""The converter's strict hooks for JSON arrays (lists, tuples, sets) and objects used
as maps (``dict[str, X]``): item by item, each problem noted with its index or key,
stopping at the problem budget; arrays of scalars are checked in one pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast, get_args, get_origin

import cattrs
from cattrs.errors import IterableValidationError

from ._validation_problems import (
    InvalidValue,
    StrictTypeError,
    StructureHook,
    as_root,
    index_note,
    key_note,
    problem_budget,
)
from ._walk import is_any_set, is_sequence

__all__ = [
    "element_hook",
    "is_collection",
    "mapping_factory",
    "mark_scalars",
    "require",
    "sequence_factory",
]


def require(kind: type, expected: str, hook: StructureHook) -> StructureHook:
    def structure(value: Any, target: Any) -> Any:
        if type(value) is not kind:
            raise StrictTypeError(expected, value)
        return hook(value, target)

    return structure


def sequence_factory(target: Any, conv: cattrs.Converter) -> StructureHook:
    args = get_args(target)
    origin = get_origin(target) or target
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        items = [conv.get_structure_hook(arg) for arg in args]

        def structure_tuple(value: Any, target: Any) -> tuple[Any, ...]:
            if len(value) != len(items):
                raise InvalidValue(f"expected an array of {len(items)} items")
            budget = problem_budget.get()
            if budget is None:
                return as_root(structure_tuple, value, target)
            errors: list[Exception] = []
            out: list[Any] = []
            for index, (hook, arg, item) in enumerate(zip(items, args, value, strict=True)):
                try:
                    out.append(hook(item, arg))
                except Exception as exc:
                    exc.add_note(index_note(index, arg))
                    errors.append(exc)
                    if budget.spend(exc):
                        break
            if errors:
                raise IterableValidationError("invalid items", errors, target)  # pyright: ignore[reportCallIssue]
            return tuple(out)

        return require(list, "array", structure_tuple)

    element = args[0] if args else Any
    as_list = _list_hook(element, conv)
    if origin is tuple:
        return require(list, "array", lambda v, t: tuple(as_list(v, t)))
    if is_any_set(target):
        frozen = origin is frozenset

        def structure_set(value: Any, target: Any) -> Any:
            items: list[Any] = as_list(value, target)
            return frozenset(items) if frozen else set(items)

        return require(list, "array", structure_set)
    return require(list, "array", as_list)


def element_hook(element: Any, conv: cattrs.Converter) -> StructureHook:
    try:
        return conv.get_structure_hook(element)
    except RecursionError:  # a recursive class: look the hook up when it is needed
        return conv.structure


_SCALARS_ATTR: Final = "__wsroutes_scalars__"


def mark_scalars(
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
    hook = element_hook(element, conv)

    def structure_list(value: Any, target: Any) -> list[Any]:
        budget = problem_budget.get()
        if budget is None:
            return as_root(structure_list, value, target)
        out: list[Any] = []
        append = out.append
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                append(hook(item, element))
            except Exception as exc:
                exc.add_note(index_note(index, element))
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


def mapping_factory(target: Any, conv: cattrs.Converter) -> StructureHook:
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
    key_hook = None if key_type is Any or key_type is str else element_hook(key_type, conv)
    value_hook = None if value_type is Any else element_hook(value_type, conv)
    if key_hook is None and value_hook is None:

        def structure_any(value: Any, _: Any) -> dict[Any, Any]:
            return dict(value)

        return require(dict, "object", structure_any)

    def structure_mapping(value: Any, target: Any) -> dict[Any, Any]:
        budget = problem_budget.get()
        if budget is None:
            return as_root(structure_mapping, value, target)
        out: dict[Any, Any] = {}
        errors: list[Exception] = []
        for key, item in cast("dict[str, Any]", value).items():
            try:
                out[key if key_hook is None else key_hook(key, key_type)] = (
                    item if value_hook is None else value_hook(item, value_type)
                )
            except Exception as exc:
                exc.add_note(key_note(key, value_type))
                errors.append(exc)
                if budget.spend(exc):
                    break
        if errors:
            raise IterableValidationError("invalid entries", errors, target)  # pyright: ignore[reportCallIssue]
        return out

    return require(dict, "object", structure_mapping)


def is_collection(target: Any) -> bool:
    origin: Any = get_origin(target) or target
    return bool(is_sequence(target) or is_any_set(target) or origin is tuple)
