"""Building the model from a server's routes: :func:`build_model` selects the routes,
walks the attrs classes of each (client messages from ``.on()`` schemas or
``.client_messages()``, server messages from ``.server_messages()``) with
``_type_mapping.py``, splits the classes that differ between directions in two, names
the definitions (``_names.py``), and reads what each route's handlers are annotated to
answer and how the route authenticates.

This module does no I/O.
"""

from __future__ import annotations

import enum
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias, TypeGuard, cast

import attrs

from .._auth import token_places
from .._messages import message_type
from .._paths import PathPattern
from .._presence import PresenceJoin, PresenceLeave
from .._routes import WebSocketRoute
from .._walk import qualified_name as _qualified
from .._walk import shape
from ._model import (
    ApiModel,
    ArrayType,
    AuthScheme,
    Definition,
    Direction,
    EnumDef,
    LiteralType,
    MapType,
    MessageDef,
    ObjectDef,
    Property,
    Ref,
    RouteModel,
    RoutesSource,
    TupleType,
    TypeGenerationError,
    TypeNode,
    UnionType,
)
from ._names import FRAMEWORK_NAMES, assign_names, namespace_names
from ._type_mapping import DefinitionKey, TypeWalker

__all__ = ["build_model"]


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


def silent_routes(source: RoutesSource, routes: Iterable[str] | None = None) -> list[str]:
    """The paths of routes that handle messages but declare no server messages: their
    generated types say they send only errors and acks, which is true only if their
    handlers send nothing (the CLI warns about them)."""
    return [
        route.path
        for route in _select(_route_list(source), routes)
        if not route.server_message_types and (route.handlers or route.connect_handler)
    ]


_PRESENCE_CLASSES = (PresenceJoin, PresenceLeave)


def _presence_events(source: RoutesSource) -> bool:
    """Whether ``source`` is a server whose presence sends join and leave events."""
    policy: object = getattr(source, "presence_policy", None)
    return bool(getattr(policy, "events", False))


def _presence_info(source: RoutesSource) -> list[type[Any]] | None:
    """The classes the info functions of ``source``'s patterns with events return, from
    their return annotations (``-> Seat | None``); ``None`` when one cannot be told (no
    annotation, or something else than attrs classes and ``None``): any JSON then."""
    policy: Any = getattr(source, "presence_policy", None)
    found: list[type[Any]] = []
    for _, presence in getattr(policy, "rules", ()):
        if not presence.events or presence.info is None:
            continue
        try:
            hints = typing.get_type_hints(presence.info)
        except Exception:
            return None
        if "return" not in hints:
            return None
        result = shape(hints["return"])
        for member in result.args if result.kind == "union" else (result.type,):
            if member is None or member is type(None):
                continue
            if not (isinstance(member, type) and attrs.has(member)):
                return None
            if member not in found:
                found.append(member)
    return found


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


# -- authentication ------------------------------------------------------------------------


def _auth_schemes(fn: Callable[..., Any] | None) -> tuple[AuthScheme, ...] | None:
    if fn is None:
        return None
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    if module == "trio_wsroutes._auth" and qualname in (
        "no_auth",
        "extract_request_info.<locals>.authenticate",
    ):
        return None  # public on purpose
    places = token_places(fn)
    if places is not None:
        schemes: list[AuthScheme] = []
        if places.header:
            schemes.append(
                AuthScheme("bearer", None, "a bearer token (`Authorization: Bearer <token>`)")
            )
        if places.query is not None:
            name = places.query
            schemes.append(AuthScheme("query", name, f"a token in the `{name}` query parameter"))
        if places.cookie is not None:
            cookie = places.cookie
            schemes.append(AuthScheme("cookie", cookie, f"a token in the `{cookie}` cookie"))
        if schemes:
            return tuple(schemes)
    where = f"{module}.{qualname}" if module else qualname
    doc = inspect.getdoc(fn)
    summary = f" ({_first_paragraph(doc).rstrip('.')})" if doc else ""
    return (AuthScheme("custom", where, f"checked by `{where}`{summary}"),)


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


# -- the model -----------------------------------------------------------------------------


def _doc(cls: type[Any]) -> str | None:
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or not doc.strip():
        return None
    if issubclass(cls, enum.Enum) and doc == "An enumeration.":
        return None
    # reST ``literal`` -> Markdown `literal`, for JSDoc and AsyncAPI (CommonMark).
    return re.sub(r"``(.+?)``", r"`\1`", inspect.cleandoc(doc))


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


def _walk_message(walker: TypeWalker, cls: type[Any], direction: Direction, where: str) -> Ref:
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

    events = _presence_events(source)
    walker = TypeWalker()
    info_classes = _presence_info(source) if events else None
    info_refs: list[Ref] | None = None
    if info_classes is not None:
        info_refs = [
            _walk_message(walker, cls, "server", f"presence info {_qualified(cls)}")
            for cls in info_classes
        ]
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
            if cls in _PRESENCE_CLASSES:
                continue  # the framework's envelopes, described by the prelude
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
    pending: list[tuple[DefinitionKey, str]] = []
    merged: dict[DefinitionKey, tuple[DefinitionKey, str]] = {}
    for key in walker.order:
        cls, direction = key
        if direction is None:
            pending.append((key, ""))
            merged[key] = (key, "")
        elif cls in both and cls not in differs:
            canonical: DefinitionKey = (cls, "server")
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
    names = assign_names(pending, reserved)

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

    # What presence events carry as info: the info classes (``never``: no info at all),
    # or ``None`` for any JSON.
    presence_info: TypeNode | None = None
    if info_refs is not None:
        presence_info = (
            UnionType(tuple(final(ref) for ref in info_refs))
            if len(info_refs) > 1
            else final(info_refs[0])
            if info_refs
            else LiteralType(())
        )
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
                presence=events
                or any(cls in _PRESENCE_CLASSES for cls in route.server_message_types),
                presence_info=presence_info,
            )
        )
    return ApiModel(tuple(route_models), tuple(definitions), walker.uses_any)
