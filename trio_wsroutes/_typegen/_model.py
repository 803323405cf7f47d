"""The model every generator writes from: routes, messages and the types of their fields.

:func:`~._build.build_model` makes it from a server's routes; each field's type is a
small tree of :data:`TypeNode` values, as the project's converter puts it on the wire
(``_type_mapping.py``). Direction matters:

* client -> server (``"client"``): what the converter *accepts*. A field with a default
  may be left out, so it is optional; ``X | None`` without a default must be sent (as
  ``null`` if need be).
* server -> client (``"server"``): what the converter *writes*. Every field is always
  written, so every property is required; ``X | None`` is a required property whose value
  may be ``null``.

A class whose shape differs between the two directions (it, or a class it contains, has a
field with a default) becomes two definitions, ``NameInput`` (as clients send it) and
``NameOutput`` (as the server sends it); otherwise one definition, ``Name``, serves both.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal, Protocol, TypeAlias

import attrs

from .._codes import ENVELOPE_ERROR_CODES
from .._routes import WebSocketRoute

__all__ = [
    "ERROR_CODES",
    "AnyJson",
    "ApiModel",
    "ArrayType",
    "AuthScheme",
    "Definition",
    "Direction",
    "EnumDef",
    "HasRoutes",
    "JsonKind",
    "LiteralType",
    "LiteralValue",
    "MapType",
    "MessageDef",
    "ObjectDef",
    "Property",
    "Ref",
    "RouteModel",
    "RoutesSource",
    "Scalar",
    "TupleType",
    "TypeGenerationError",
    "TypeNode",
    "UnionType",
]

Direction = Literal["client", "server"]
JsonKind = Literal["string", "number", "integer", "boolean", "null"]
LiteralValue = str | int | float | bool | None

ERROR_CODES: Final = tuple(ENVELOPE_ERROR_CODES)
"""The error codes the framework itself sends in error envelopes (handlers may add
their own); from the one list in ``_codes``."""


class HasRoutes(Protocol):
    """A ``WebSocketServer``, or anything else with a ``routes`` list."""

    @property
    def routes(self) -> list[WebSocketRoute[Any, Any]]: ...


RoutesSource: TypeAlias = (
    "HasRoutes | WebSocketRoute[Any, Any] | Iterable[WebSocketRoute[Any, Any]]"
)
"""A ``WebSocketServer`` (anything with a ``routes`` list), one route, or routes."""


class TypeGenerationError(TypeError):
    """A route or message class cannot be described as client types.

    The message names the class and field (and the route and message that reach them),
    and says what to change.
    """


# -- the type tree ---------------------------------------------------------------------------


@attrs.frozen
class Scalar:
    """A JSON scalar: ``string``, ``number``, ``integer``, ``boolean`` or ``null``."""

    kind: JsonKind
    format: str | None = None
    """JSON Schema ``format`` (``date-time``, ``date``, ``time``, ``uuid``)."""
    encoding: str | None = None
    """JSON Schema ``contentEncoding`` of a string carrying bytes (``base85``)."""
    description: str | None = None
    """What the string holds, for readers (``ISO 8601 date and time``)."""


@attrs.frozen
class AnyJson:
    """Any JSON value (``typing.Any``)."""


@attrs.frozen
class LiteralType:
    """One of a fixed set of JSON values (``Literal[...]``)."""

    values: tuple[LiteralValue, ...]


@attrs.frozen
class ArrayType:
    """A JSON array of one item type (``list``, ``tuple[X, ...]``, ``set``)."""

    items: TypeNode


@attrs.frozen
class TupleType:
    """A JSON array of fixed length (``tuple[X, Y]``)."""

    items: tuple[TypeNode, ...]


@attrs.frozen
class MapType:
    """A JSON object used as a map (``dict[str, X]``); ``keys`` limits the keys."""

    values: TypeNode
    keys: TypeNode | None = None


@attrs.frozen
class UnionType:
    """Any of ``options`` (``X | Y``); ``null`` comes last."""

    options: tuple[TypeNode, ...]


@attrs.frozen
class Ref:
    """A named definition (an attrs class or an enum)."""

    name: str


TypeNode: TypeAlias = (
    "Scalar | AnyJson | LiteralType | ArrayType | TupleType | MapType | UnionType | Ref"
)


@attrs.frozen
class Property:
    """One field of an object definition."""

    name: str
    type: TypeNode
    required: bool
    description: str | None = None


@attrs.frozen
class ObjectDef:
    """An attrs class, as one JSON object type."""

    name: str
    python: str
    """``module.QualName`` of the class."""
    description: str | None
    properties: tuple[Property, ...]
    direction: Direction | None
    """``None`` when both directions share this definition."""


@attrs.frozen
class EnumDef:
    """An ``enum.Enum``: its members' values as they go over the wire."""

    name: str
    python: str
    description: str | None
    members: tuple[tuple[str, str | int | float], ...]


Definition: TypeAlias = "ObjectDef | EnumDef"


@attrs.frozen
class MessageDef:
    """One message type of a route: the wire ``type`` and the ``data`` definition."""

    type: str
    data: Ref
    python: str
    description: str | None
    replies: tuple[str, ...] = ()
    """Wire types of the server messages a handler returns as the reply (client messages)."""
    acked: bool | None = None
    """For a client message whose handler's return annotation names only server messages
    of the route and ``None``: whether ``None`` is among them (the server then answers a
    request with ``ack``). ``None`` when the annotation is missing or names anything else:
    any server message, or an ``ack``, may answer."""


@attrs.frozen
class AuthScheme:
    """Where an authenticated route looks for credentials."""

    kind: Literal["bearer", "query", "cookie", "custom"]
    name: str | None
    """The query parameter or cookie name; the function's ``module.qualname`` for custom."""
    description: str
    """A phrase for readers: lower-case, no final period."""


@attrs.frozen
class RouteModel:
    """One route, with its namespace name and messages."""

    namespace: str
    path: str
    """As written (``/chat/:room``)."""
    address: str
    """With ``{param}`` placeholders (``/chat/{room}``)."""
    params: tuple[str, ...]
    module: str | None
    auth: tuple[AuthScheme, ...] | None
    """``None`` for a public route (no ``authenticate``, or ``no_auth``)."""
    client_messages: tuple[MessageDef, ...]
    server_messages: tuple[MessageDef, ...]
    presence: bool = False
    """Whether the server may send ``presence_join`` / ``presence_leave`` on this route:
    the route declares them (``PresenceJoin``, ``PresenceLeave``), or it is a route of a
    server with presence events (subscriptions are not tied to routes statically, so
    every route of such a server may get them)."""
    presence_info: TypeNode | None = None
    """The type of the info presence events carry (besides ``null``): the classes the
    server's info functions are annotated to return; ``None``: any JSON."""

    @property
    def acks(self) -> bool:
        """Whether the server may answer a message of this route with ``ack``: some client
        message's handler may return ``None``, or does not declare what it returns."""
        return any(message.acked is not False for message in self.client_messages)


@attrs.frozen
class ApiModel:
    """Everything a generator needs, in a deterministic order."""

    routes: tuple[RouteModel, ...]
    definitions: tuple[Definition, ...]
    """Sorted by name."""
    uses_any: bool
    """Some field is ``typing.Any`` (TypeScript then needs ``JsonValue``)."""

    @property
    def presence(self) -> bool:
        """Some route may get presence events (the types then describe them)."""
        return any(route.presence for route in self.routes)
