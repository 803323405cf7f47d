"""Definition-time checks of what a route's handlers say they send.

A handler's annotations already name the messages it sends: its return annotation (the
reply) and its ``ws: Connection[...]`` parameter (what ``ws.send`` and ``ws.publish``
take). Each such class must be one the route declares with ``.server_messages()``: the
generated client types, and the typed Python client, describe only those, so a class left
out would reach clients that cannot decode it. This module reads the annotations (where
they can be resolved) and says, before the first message, which class is missing.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Collection, Iterator
from typing import Any

from ._messages import message_type

__all__ = ["check_handler_messages", "named_messages"]


def _members(annotation: Any) -> Iterator[Any]:
    """The members of a union annotation (the annotation itself otherwise)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        for member in typing.get_args(annotation):
            yield from _members(member)
    elif origin is typing.Annotated:
        yield from _members(typing.get_args(annotation)[0])
    else:
        yield annotation


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The handler's resolved annotations, or none where they cannot be resolved (names
    the checker cannot see, such as classes local to a function)."""
    target: Any = getattr(fn, "__func__", fn)
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


def named_messages(fn: Callable[..., Any]) -> list[tuple[str, Any]]:
    """What ``fn``'s annotations say it sends: ``(where, class)`` for each class of its
    return annotation and of its ``Connection[...]`` parameter (``None``, ``Any`` and
    ``object`` say nothing)."""
    found: list[tuple[str, Any]] = []
    for name, annotation in _hints(fn).items():
        if name == "return":
            for member in _members(annotation):
                found.append(("its return annotation", member))
        elif getattr(typing.get_origin(annotation), "__trio_wsroutes_connection__", False):
            # Connection[...], known by a mark on the class: routes (and type generation,
            # which reads them) import nothing of the engine, which does I/O.
            for argument in typing.get_args(annotation):
                for member in _members(argument):
                    found.append((f"its {name}: Connection[...] annotation", member))
    return [
        (where, cls)
        for where, cls in found
        if cls is not None and cls is not type(None) and cls is not Any and cls is not object
    ]


def check_handler_messages(
    fn: Callable[..., Any], declared: Collection[type[Any]], where: str, path: str
) -> None:
    """Refuse (``TypeError``) a handler of route ``path`` whose annotations name a message
    the route does not declare (``declared``, from ``.server_messages()``), or something
    that is not a message at all."""
    for said, cls in named_messages(fn):
        name = getattr(cls, "__qualname__", repr(cls))
        if not isinstance(cls, type) or message_type(cls) is None:
            raise TypeError(
                f"{where} of route {path!r}: {said} names {name}, which is not a server "
                "message: handlers return (and send) instances of classes decorated with "
                '@message("type")'
            )
        if cls not in declared:
            if not declared:
                raise TypeError(
                    f"{where} of route {path!r}: {said} names {name}, but the route "
                    f"declares no server messages: add .server_messages({name}, ...) so "
                    "that generated clients can decode what it sends"
                )
            names = ", ".join(sorted(c.__qualname__ for c in declared))
            raise TypeError(
                f"{where} of route {path!r}: {said} names {name}, which the route does "
                f"not declare (it declares {names}): add it to .server_messages()"
            )
