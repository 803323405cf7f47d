"""Names in the generated code: the namespace of each route, and a unique name for each
definition (a class's name, prefixed with its module's last components when two
clash), never one the generated code uses itself or a reserved word.

This module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from .._routes import WebSocketRoute
from ._model import TypeGenerationError
from ._type_mapping import DefinitionKey

__all__ = ["FRAMEWORK_NAMES", "TS_RESERVED", "assign_names", "namespace_names"]


# Names the generated TypeScript uses itself; a class with one of these names is renamed.
FRAMEWORK_NAMES: Final = frozenset(
    {
        "MessageId",
        "JsonValue",
        "WebSocketErrorMessage",
        "WebSocketErrorDetail",
        "WebSocketAckMessage",
        "WebSocketErrorCode",
        "WebSocketTopicPosition",
        "WebSocketPresence",
        "WebSocketPresenceJoinMessage",
        "WebSocketPresenceLeaveMessage",
        # The JSON Schema definitions of its fields.
        "WebSocketTopic",
        "WebSocketOffset",
        "WebSocketEpoch",
        # Members of every route namespace, which would hide a top-level name.
        "Params",
        "ClientMessage",
        "ServerMessage",
        "ClientData",
        "ServerData",
    }
)
TS_RESERVED: Final = frozenset(
    # Keywords and primitive type names.
    """any as asserts async await bigint boolean break case catch class const constructor
    continue debugger declare default delete do else enum export extends false finally
    for from function get if implements import in infer instanceof interface is keyof
    let module namespace never new null number object of package private protected
    public readonly require return satisfies set static string super switch symbol this
    throw true try type typeof undefined unique unknown var void while with yield""".split()  # noqa: SIM905
    # Global types a generated file refers to, or that a reader expects untouched.
    + """Array ArrayBuffer BigInt Boolean Date Error Exclude Extract Function JSON Map Math
    NonNullable Number Object Omit Partial Pick Promise Readonly ReadonlyArray Record
    RegExp Required Set String Symbol Uint8Array WeakMap WeakSet WebSocket""".split()  # noqa: SIM905
)


# -- namespace names -----------------------------------------------------------------------


_IDENTIFIER: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def _pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", text))


def _segment_words(route: WebSocketRoute[Any, Any]) -> list[str]:
    names = iter(route.pattern.param_names)
    return [
        _pascal(segment) if segment is not None else "By" + _pascal(next(names))
        for segment in route.pattern.segments
    ]


def _short_name(route: WebSocketRoute[Any, Any]) -> str:
    static = [s for s in route.pattern.segments if s is not None and _pascal(s)]
    if static:
        return _pascal(static[-1])
    words = _segment_words(route)
    return "".join(words) or "Root"


def _long_name(route: WebSocketRoute[Any, Any]) -> str:
    return "".join(_segment_words(route)) or "Root"


def _finish(stem: str) -> str:
    name = stem + "WebSocket"
    return "Route" + name if name[0].isdigit() else name


def namespace_names(routes: Sequence[WebSocketRoute[Any, Any]]) -> dict[int, str]:
    """The namespace name of each route, keyed by ``id(route)``.

    * ``create_websocket_route(path, name="Chat")``: the name as given.
    * Otherwise the last static segment in PascalCase plus ``WebSocket``: ``/api/chat``,
      ``/chat`` and ``/chat/:room`` give ``ChatWebSocket``; ``/live-data/{feed}`` gives
      ``LiveDataWebSocket``; ``/`` gives ``RootWebSocket``.
    * Routes whose short names clash use every segment, parameters as ``By<Name>``:
      ``/chat`` and ``/chat/:room`` together give ``ChatWebSocket`` and
      ``ChatByRoomWebSocket``; ``/api/v1/chat`` and ``/api/v2/chat`` give
      ``ApiV1ChatWebSocket`` and ``ApiV2ChatWebSocket``.

    Names are derived over all the server's routes, so ``routes=[...]`` never renames one.
    Two routes that still share a name are an error: pass ``name=`` to one of them.
    """
    explicit: dict[int, str] = {}
    for route in routes:
        if route.name is not None:
            if not _IDENTIFIER.match(route.name) or route.name in TS_RESERVED:
                raise TypeGenerationError(
                    f"route {route.path!r}: name={route.name!r} is not a usable TypeScript "
                    "namespace name (letters, digits, _ and $, not a reserved word)"
                )
            explicit[id(route)] = route.name
    derived = [r for r in routes if r.name is None]
    shorts: dict[str, int] = {}
    for route in derived:
        key = _finish(_short_name(route))
        shorts[key] = shorts.get(key, 0) + 1
    taken = set(explicit.values())
    names = dict(explicit)
    for route in derived:
        short = _finish(_short_name(route))
        names[id(route)] = (
            short if shorts[short] == 1 and short not in taken else _finish(_long_name(route))
        )
    seen: dict[str, WebSocketRoute[Any, Any]] = {}
    for route in routes:
        name = names[id(route)]
        other = seen.get(name)
        if other is not None:
            raise TypeGenerationError(
                f"routes {other.path!r} and {route.path!r} both get the namespace {name}; "
                "pass name=... to create_websocket_route for one of them"
            )
        seen[name] = route
    return names


# -- naming definitions --------------------------------------------------------------------


def _base_name(cls: type[Any]) -> str:
    qualname = cls.__qualname__.rsplit("<locals>.", 1)[-1]
    return "".join(_pascal(part) for part in qualname.split(".")) or "Model"


def _module_words(cls: type[Any]) -> list[str]:
    return [_pascal(part) for part in cls.__module__.split(".") if _pascal(part)]


def assign_names(
    defs: list[tuple[DefinitionKey, str]], reserved: set[str]
) -> dict[tuple[DefinitionKey, str], str]:
    """Unique names for (key, suffix) pairs: the class name plus suffix; clashing ones get
    their module's last components as a prefix, then a number in discovery order."""
    level = {d: 0 for d in defs}
    index = {d: i for i, d in enumerate(defs)}

    def candidate(d: tuple[DefinitionKey, str]) -> str:
        (cls, _), suffix = d
        words = _module_words(cls)
        n = level[d]
        if n <= len(words):
            prefix = "".join(words[len(words) - n :]) if n else ""
            name = prefix + _base_name(cls) + suffix
        else:
            name = "".join(words) + _base_name(cls) + suffix + str(index[d] + 1)
        return "Model" + name if name[0].isdigit() else name

    while True:
        names = {d: candidate(d) for d in defs}
        groups: dict[str, list[tuple[DefinitionKey, str]]] = {}
        for d, name in names.items():
            groups.setdefault(name, []).append(d)
        clashes = [
            group
            for name, group in groups.items()
            if len(group) > 1 or name in reserved or name in TS_RESERVED
        ]
        if not clashes:
            return names
        for group in clashes:
            for d in group:
                level[d] += 1
