"""The model every generator writes from: routes, messages and the types of their fields.

:func:`build_model` walks the attrs classes of each route (client messages from
``.on()`` schemas or ``.client_messages()``, server messages from ``.server_messages()``)
and maps every field type to a small tree of :data:`TypeNode` values, as the project's
converter puts it on the wire. Direction matters:

* client -> server (``"client"``): what the converter *accepts*. A field with a default
  may be left out, so it is optional; ``X | None`` without a default must be sent (as
  ``null`` if need be).
* server -> client (``"server"``): what the converter *writes*. Every field is always
  written, so every property is required; ``X | None`` is a required property whose value
  may be ``null``.

A class whose shape differs between the two directions (it, or a class it contains, has a
field with a default) becomes two definitions, ``NameInput`` (as clients send it) and
``NameOutput`` (as the server sends it); otherwise one definition, ``Name``, serves both.

Leaf types that are not JSON scalars (``datetime``, ``UUID``, ``bytes``, ...) are probed:
a sample value goes through ``converter.unstructure`` and ``orjson``, and the JSON value
that comes out says what the wire carries. A type the converter cannot write (or, for
client messages, read) fails generation with a :class:`TypeGenerationError` naming the
class and field.

This module does no I/O.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import inspect
import re
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import (
    Any,
    Final,
    Literal,
    Protocol,
    TypeAlias,
    TypeGuard,
    cast,
    get_args,
)

import attrs
import orjson

from .._codes import ENVELOPE_ERROR_CODES
from .._messages import message_type
from .._paths import PathPattern
from .._routes import WebSocketRoute
from .._validation import converter
from .._walk import init_fields, is_enum, is_literal, shape, unwrap
from .._walk import qualified_name as _qualified
from .._walk import type_repr as _type_repr

__all__ = [
    "AnyJson",
    "ApiModel",
    "ArrayType",
    "AuthScheme",
    "Definition",
    "Direction",
    "EnumDef",
    "LiteralType",
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
    "build_model",
    "namespace_names",
]

Direction = Literal["client", "server"]
JsonKind = Literal["string", "number", "integer", "boolean", "null"]
LiteralValue = str | int | float | bool | None

ERROR_CODES: Final = tuple(ENVELOPE_ERROR_CODES)
"""The error codes the framework itself sends in error envelopes (handlers may add
their own); from the one list in ``_codes``."""

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
_TS_RESERVED: Final = frozenset(
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


# -- collecting routes ---------------------------------------------------------------------


def _is_route(value: object) -> TypeGuard[WebSocketRoute[Any, Any]]:
    return isinstance(value, WebSocketRoute)


def _route_list(source: RoutesSource) -> list[WebSocketRoute[Any, Any]]:
    if isinstance(source, WebSocketRoute):
        return [source]
    found: object = getattr(source, "routes", source)
    if isinstance(found, str | bytes) or not isinstance(found, Iterable):
        raise TypeGenerationError(
            f"expected a WebSocketServer, a route or an iterable of routes, got {source!r}"
        )
    routes: list[WebSocketRoute[Any, Any]] = []
    for route in cast("Iterable[object]", found):
        if not _is_route(route):
            raise TypeGenerationError(
                f"expected a route from create_websocket_route, got {route!r}"
            )
        routes.append(route)
    return routes


def _select(
    routes: list[WebSocketRoute[Any, Any]], wanted: Iterable[str] | None
) -> list[WebSocketRoute[Any, Any]]:
    if wanted is None:
        return routes
    if isinstance(wanted, str):
        wanted = [wanted]
    by_shape = {route.pattern.shape: route for route in routes}
    selected: list[WebSocketRoute[Any, Any]] = []
    for path in wanted:
        try:
            shape = PathPattern.parse(path).shape
        except ValueError as exc:
            raise TypeGenerationError(str(exc)) from None
        route = by_shape.get(shape)
        if route is None:
            known = ", ".join(sorted(r.path for r in routes)) or "none"
            raise TypeGenerationError(f"no route {path!r} (routes: {known})")
        if route not in selected:
            selected.append(route)
    return selected


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
            if not _IDENTIFIER.match(route.name) or route.name in _TS_RESERVED:
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


# -- authentication ------------------------------------------------------------------------


def _auth_schemes(fn: Callable[..., Any] | None) -> tuple[AuthScheme, ...] | None:
    if fn is None:
        return None
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    if module == "trio_wsroutes._auth":
        if qualname in ("no_auth", "extract_request_info.<locals>.authenticate"):
            return None  # public on purpose
        if qualname == "create_token_auth.<locals>.authenticate":
            settings: Mapping[str, Any]
            try:
                settings = inspect.getclosurevars(fn).nonlocals
            except (TypeError, ValueError):
                settings = {}
            schemes: list[AuthScheme] = []
            if settings.get("check_header", True):
                schemes.append(
                    AuthScheme("bearer", None, "a bearer token (`Authorization: Bearer <token>`)")
                )
            if settings.get("check_query", True):
                name = str(settings.get("query_param_name", "token"))
                schemes.append(
                    AuthScheme("query", name, f"a token in the `{name}` query parameter")
                )
            cookie = settings.get("cookie_name")
            if isinstance(cookie, str):
                schemes.append(AuthScheme("cookie", cookie, f"a token in the `{cookie}` cookie"))
            if schemes:
                return tuple(schemes)
    where = f"{module}.{qualname}" if module else qualname
    doc = inspect.getdoc(fn)
    summary = f" ({_first_paragraph(doc).rstrip('.')})" if doc else ""
    return (AuthScheme("custom", where, f"checked by `{where}`{summary}"),)


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


# -- walking types ---------------------------------------------------------------------------


_Key = tuple[type[Any], Direction | None]
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


class _Walker:
    def __init__(self) -> None:
        self.objects: dict[_Key, _RawObject] = {}
        self.enums: dict[type[enum.Enum], tuple[tuple[str, str | int | float], ...]] = {}
        self.order: list[_Key] = []
        self.uses_any = False
        # While walking, a Ref's name is a placeholder for its key (names come last).
        self.placeholders: dict[_Key, str] = {}
        self.keys: dict[str, _Key] = {}

    def ref(self, key: _Key) -> Ref:
        placeholder = self.placeholders.get(key)
        if placeholder is None:
            placeholder = self.placeholders[key] = f"#{len(self.placeholders)}"
            self.keys[placeholder] = key
        return Ref(placeholder)

    # Each call carries ``where``: a description of the field being walked, for errors.

    def walk_class(self, cls: type[Any], direction: Direction, where: str) -> Ref:
        key: _Key = (cls, direction)
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


def _doc(cls: type[Any]) -> str | None:
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or not doc.strip():
        return None
    if issubclass(cls, enum.Enum) and doc == "An enumeration.":
        return None
    # reST ``literal`` -> Markdown `literal`, for JSDoc and AsyncAPI (CommonMark).
    return re.sub(r"``(.+?)``", r"`\1`", inspect.cleandoc(doc))


# -- naming definitions ----------------------------------------------------------------------


def _base_name(cls: type[Any]) -> str:
    qualname = cls.__qualname__.rsplit("<locals>.", 1)[-1]
    return "".join(_pascal(part) for part in qualname.split(".")) or "Model"


def _module_words(cls: type[Any]) -> list[str]:
    return [_pascal(part) for part in cls.__module__.split(".") if _pascal(part)]


def _assign_names(defs: list[tuple[_Key, str]], reserved: set[str]) -> dict[tuple[_Key, str], str]:
    """Unique names for (key, suffix) pairs: the class name plus suffix; clashing ones get
    their module's last components as a prefix, then a number in discovery order."""
    level = {d: 0 for d in defs}
    index = {d: i for i, d in enumerate(defs)}

    def candidate(d: tuple[_Key, str]) -> str:
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
        groups: dict[str, list[tuple[_Key, str]]] = {}
        for d, name in names.items():
            groups.setdefault(name, []).append(d)
        clashes = [
            group
            for name, group in groups.items()
            if len(group) > 1 or name in reserved or name in _TS_RESERVED
        ]
        if not clashes:
            return names
        for group in clashes:
            for d in group:
                level[d] += 1


# -- the model ---------------------------------------------------------------------------


_Answers: TypeAlias = "tuple[tuple[str, ...], bool | None]"


def _replies(
    handler: Callable[..., Any] | None, server: Mapping[type[Any], str]
) -> tuple[tuple[str, ...], bool | None]:
    """The server messages ``handler`` is annotated to return, and whether it may return
    ``None`` (``None``: the annotation does not say; see :attr:`MessageDef.acked`)."""
    if handler is None:
        return (), None
    try:
        hints = typing.get_type_hints(handler)
    except Exception:
        return (), None
    if "return" not in hints:
        return (), None
    result = shape(hints["return"])
    members = result.args if result.kind == "union" else (result.type,)
    replies = tuple(sorted({server[m] for m in members if isinstance(m, type) and m in server}))
    acked = any(m is None or m is type(None) for m in members)
    declared = all(
        m is None or m is type(None) or (isinstance(m, type) and m in server) for m in members
    )
    return replies, acked if declared else None


def _client_messages(
    route: WebSocketRoute[Any, Any],
) -> list[tuple[str, type[Any], Callable[..., Any] | None]]:
    if not route.client_message_types:
        return [(t, spec.schema, spec.handler) for t, spec in route.handlers.items()]
    found: list[tuple[str, type[Any], Callable[..., Any] | None]] = []
    for cls in route.client_message_types:
        registered = [(t, spec) for t, spec in route.handlers.items() if spec.schema is cls]
        if registered:
            found.extend((t, cls, spec.handler) for t, spec in registered)
            continue
        wire = message_type(cls)
        if wire is None:
            raise TypeGenerationError(
                f"route {route.path!r}: client message {_qualified(cls)} has no wire type; "
                f'register it with .on("type", {cls.__name__}, ...) or tag it with '
                f'@message("type")'
            )
        found.append((wire, cls, None))
    return found


def _walk_message(walker: _Walker, cls: type[Any], direction: Direction, where: str) -> Ref:
    try:
        return walker.walk_class(cls, direction, where)
    except TypeGenerationError as exc:
        if where in str(exc):
            raise
        raise TypeGenerationError(f"{exc} (in the {where})") from exc.__cause__


def build_model(source: RoutesSource, routes: Iterable[str] | None = None) -> ApiModel:
    """Walk the routes of ``source`` (only those whose paths are in ``routes``, if given)."""
    all_routes = _route_list(source)
    namespaces = namespace_names(all_routes)
    selected = sorted(_select(all_routes, routes), key=lambda r: r.path)

    walker = _Walker()
    # (route, [(type, raw ref, class, (replies, acked))], [...])
    walked: list[
        tuple[
            WebSocketRoute[Any, Any],
            list[tuple[str, Ref, type[Any], _Answers]],
            list[tuple[str, Ref, type[Any], _Answers]],
        ]
    ] = []
    for route in selected:
        server_types: dict[type[Any], str] = {}
        server: list[tuple[str, Ref, type[Any], _Answers]] = []
        for cls in route.server_message_types:
            wire = message_type(cls)
            if wire is None:  # pragma: no cover - server_messages() refuses these
                raise TypeGenerationError(f"{_qualified(cls)} has no @message wire type")
            server_types[cls] = wire
        for cls, wire in sorted(server_types.items(), key=lambda item: item[1]):
            where = f"server message {wire!r} of route {route.path}"
            server.append((wire, _walk_message(walker, cls, "server", where), cls, ((), None)))
        client: list[tuple[str, Ref, type[Any], _Answers]] = []
        for wire, cls, handler in sorted(_client_messages(route), key=lambda item: item[0]):
            where = f"client message {wire!r} of route {route.path}"
            if not attrs.has(cls):
                raise TypeGenerationError(f"{where}: {cls!r} is not an attrs class")
            answers = _replies(handler, server_types)
            client.append((wire, _walk_message(walker, cls, "client", where), cls, answers))
        walked.append((route, client, server))

    # Which classes look different from each direction (fixpoint over references).
    def normalise(node: TypeNode | None) -> object:
        if isinstance(node, Ref):
            return walker.keys[node.name][0]
        if isinstance(node, ArrayType):
            return ("array", normalise(node.items))
        if isinstance(node, TupleType):
            return ("tuple", tuple(normalise(n) for n in node.items))
        if isinstance(node, MapType):
            return ("map", normalise(node.values), normalise(node.keys))
        if isinstance(node, UnionType):
            return ("union", tuple(normalise(n) for n in node.options))
        return node

    def refs(node: TypeNode) -> Iterable[type[Any]]:
        if isinstance(node, Ref):
            yield walker.keys[node.name][0]
        elif isinstance(node, ArrayType):
            yield from refs(node.items)
        elif isinstance(node, TupleType | UnionType):
            for n in node.items if isinstance(node, TupleType) else node.options:
                yield from refs(n)
        elif isinstance(node, MapType):
            yield from refs(node.values)

    both = {
        cls
        for (cls, direction) in walker.objects
        if direction == "client" and (cls, "server") in walker.objects
    }
    differs: set[type[Any]] = set()
    for cls in both:
        c, s = walker.objects[(cls, "client")], walker.objects[(cls, "server")]
        shape_c = [(n, normalise(t), r) for n, t, r, _ in c.properties]
        shape_s = [(n, normalise(t), r) for n, t, r, _ in s.properties]
        if shape_c != shape_s:
            differs.add(cls)
    changed = True
    while changed:
        changed = False
        for cls in both - differs:
            if any(
                ref in differs
                for _, t, _, _ in walker.objects[(cls, "server")].properties
                for ref in refs(t)
            ):
                differs.add(cls)
                changed = True

    # Definitions to emit, in discovery order: (key, suffix).
    pending: list[tuple[_Key, str]] = []
    merged: dict[_Key, tuple[_Key, str]] = {}
    for key in walker.order:
        cls, direction = key
        if direction is None:
            pending.append((key, ""))
            merged[key] = (key, "")
        elif cls in both and cls not in differs:
            canonical: _Key = (cls, "server")
            if (canonical, "") not in pending:
                pending.append((canonical, ""))
            merged[key] = (canonical, "")
        elif cls in differs:
            entry = (key, "Input" if direction == "client" else "Output")
            pending.append(entry)
            merged[key] = entry
        else:
            pending.append((key, ""))
            merged[key] = (key, "")
    reserved = set(FRAMEWORK_NAMES)
    for namespace in namespaces.values():
        # The namespace, and the names JSON Schema gives its unions.
        reserved.update((namespace, namespace + "ClientMessage", namespace + "ServerMessage"))
    names = _assign_names(pending, reserved)

    def final(node: TypeNode) -> TypeNode:
        if isinstance(node, Ref):
            return Ref(names[merged[walker.keys[node.name]]])
        if isinstance(node, ArrayType):
            return ArrayType(final(node.items))
        if isinstance(node, TupleType):
            return TupleType(tuple(final(n) for n in node.items))
        if isinstance(node, MapType):
            return MapType(final(node.values), None if node.keys is None else final(node.keys))
        if isinstance(node, UnionType):
            return UnionType(tuple(final(n) for n in node.options))
        return node

    definitions: list[Definition] = []
    for entry in pending:
        (cls, direction), _ = entry
        name = names[entry]
        if direction is None:
            definitions.append(EnumDef(name, _qualified(cls), _doc(cls), walker.enums[cls]))
            continue
        raw = walker.objects[(cls, direction)]
        shared = cls in both and cls not in differs
        definitions.append(
            ObjectDef(
                name,
                _qualified(cls),
                _doc(cls),
                tuple(Property(n, final(t), r, d) for n, t, r, d in raw.properties),
                None if shared else direction,
            )
        )
    definitions.sort(key=lambda d: d.name)

    route_models: list[RouteModel] = []
    for route, client, server in walked:

        def message_defs(
            items: list[tuple[str, Ref, type[Any], _Answers]],
        ) -> tuple[MessageDef, ...]:
            return tuple(
                MessageDef(
                    wire,
                    Ref(names[merged[walker.keys[ref.name]]]),
                    _qualified(cls),
                    _doc(cls),
                    replies,
                    acked,
                )
                for wire, ref, cls, (replies, acked) in items
            )

        params = route.pattern.param_names
        names_iter = iter(params)
        address = "/" + "/".join(
            s if s is not None else "{" + next(names_iter) + "}" for s in route.pattern.segments
        )
        route_models.append(
            RouteModel(
                namespace=namespaces[id(route)],
                path=route.path,
                address=address,
                params=params,
                module=route.module,
                auth=_auth_schemes(route.authenticate_fn),
                client_messages=message_defs(client),
                server_messages=message_defs(server),
            )
        )
    return ApiModel(tuple(route_models), tuple(definitions), walker.uses_any)
