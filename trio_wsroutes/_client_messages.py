"""What a client sends and receives on its route: the message classes the route
declares, the envelopes encoded from them, frames classified as they arrive (and kept as
text in the receive queue), and strict decoding when they are received."""

from __future__ import annotations

import builtins
import sys
from collections.abc import Mapping
from typing import Any, Final, cast

import attrs
import orjson

from ._auth import TokenPlaces, token_places
from ._client_errors import ClientError, DecodeError, ServerError
from ._errors import ErrorDetail
from ._history import Position
from ._messages import message_type
from ._presence import PRESENCE_TYPES, PresenceJoin, PresenceLeave
from ._routes import WebSocketRoute
from ._validation import converter
from ._validation_details import validation_details

__all__ = [
    "ITEM_OVERHEAD",
    "READ_AHEAD_FRAMES",
    "Item",
    "RouteTypes",
    "classify",
    "position",
    "route_types",
    "server_error",
]

# -- route introspection --------------------------------------------------------------


@attrs.frozen
class RouteTypes:
    """What a client takes from its route: the message classes and their wire types."""

    path: str
    client: Mapping[type[Any], tuple[str, ...]]
    """Client message class -> the wire types it is registered under with ``.on()``."""
    documented: frozenset[type[Any]]
    """Classes given to ``.client_messages()`` (sendable with an explicit ``type=``)."""
    server: Mapping[str, type[Any]]
    """Wire type -> server message class."""
    server_wire: Mapping[type[Any], str]
    subprotocols: tuple[str, ...]
    token: TokenPlaces | None
    """Where the route reads a token (``create_token_auth``), else ``None``."""

    def envelope(self, msg: object, wire_type: str | None) -> tuple[str, Any]:
        """The wire type and data of ``msg``'s envelope; a ``TypeError`` if the route
        does not take it."""
        cls = builtins.type(msg)
        registered = self.client.get(cls, ())
        if wire_type is None:
            if len(registered) == 1:
                wire_type = registered[0]
            elif registered:
                raise TypeError(
                    f"{cls.__qualname__} is registered under {', '.join(registered)} on "
                    f"route {self.path!r}: pass type=..."
                )
            elif cls in self.documented:
                raise TypeError(
                    f"{cls.__qualname__} has no handler on route {self.path!r}: "
                    "pass its wire type with type=..."
                )
            else:
                raise TypeError(
                    f"{cls.__qualname__} is not a client message of route "
                    f"{self.path!r} (register it with .on(type, {cls.__qualname__}))"
                )
        elif wire_type not in registered and cls not in self.documented:
            raise TypeError(
                f"{cls.__qualname__} is not registered as {wire_type!r} on route {self.path!r}"
            )
        return wire_type, converter.unstructure(msg, cls)

    def decode_reply(
        self,
        body: dict[str, Any],
        raw: str,
        reply_type: builtins.type[Any] | None,
        request_id: int,
    ) -> Any:
        wire: str = body["type"]
        if reply_type is None:
            return None  # an ack, or a reply nobody asked to decode
        expected = self.server_wire[reply_type]
        if wire != expected:
            got = "an ack" if wire == "ack" else repr(wire)
            raise DecodeError(
                f"request {request_id!r} expected a {expected!r} reply, got {got}",
                type=wire,
                raw=raw,
                id=request_id,
            )
        return _structure(body, reply_type, raw)

    def decode_message(self, body: dict[str, Any], raw: str) -> Any:
        """The server message a queued frame holds; raises what stands in its place."""
        wire: str = body["type"]
        if wire == "error":
            raise server_error(body, raw)
        cls = self.server.get(wire)
        if wire in PRESENCE_TYPES:
            return _presence_event(body, wire, raw)
        if cls is None:
            raise DecodeError(
                f"unknown message type {wire!r} for route {self.path!r}",
                type=wire,
                raw=raw,
                id=body.get("id"),
            )
        return _structure(body, cls, raw)


def route_types(route: WebSocketRoute[Any, Any]) -> RouteTypes:
    """Everything the client needs from a route; the one place that reads its attributes."""
    if not isinstance(route, WebSocketRoute):
        raise TypeError(f"connect() needs a route from create_websocket_route, got {route!r}")
    client: dict[type[Any], tuple[str, ...]] = {}
    for spec in route.handlers.values():
        client[spec.schema] = (*client.get(spec.schema, ()), spec.type)
    # Presence events come to any route of a server with presence events: decoded
    # whether the route declares them or not.
    server_wire: dict[type[Any], str] = {
        PresenceJoin: "presence_join",
        PresenceLeave: "presence_leave",
    }
    for cls in route.server_message_types:
        wire = message_type(cls)
        if wire is not None:
            server_wire[cls] = wire
    return RouteTypes(
        path=route.path,
        client=client,
        documented=frozenset(route.client_message_types),
        server={wire: cls for cls, wire in server_wire.items()},
        server_wire=server_wire,
        subprotocols=tuple(route.subprotocol_choices),
        token=token_places(route.authenticate_fn),
    )


# -- the receive queue's entries ---------------------------------------------------


class Item:
    """One entry of the receive queue: a frame as it arrived (decoded by receive()), or
    an error to raise in its place."""

    __slots__ = ("error", "position", "raw", "size")

    def __init__(
        self,
        raw: str | bytes,
        error: ClientError | None = None,
        position: tuple[str, Position] | None = None,
    ) -> None:
        self.raw = raw
        self.error = error
        self.position = position
        self.size = sys.getsizeof(raw) + ITEM_OVERHEAD


READ_AHEAD_FRAMES: Final = 4
"""Frames the WebSocket layer reads ahead of the receive queue (``websockets``'
``max_queue``) before it stops reading the socket: the queue does the buffering."""

ITEM_OVERHEAD: Final = 200
"""Bytes an entry of the receive queue holds besides its frame: the entry, its slot in
the queue, a position or an error."""


def classify(frame: str | bytes) -> tuple[dict[str, Any] | None, Item | None]:
    """Parse one frame: the envelope, or an item holding the error to raise."""
    if isinstance(frame, bytes):
        error = DecodeError("the server sent a binary frame; this client reads JSON", raw=frame)
        return None, Item(frame, error=error)
    try:
        parsed: Any = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None, Item(frame, error=DecodeError("the server sent invalid JSON", raw=frame))
    if type(parsed) is not dict:
        return None, Item(frame, error=DecodeError("not an envelope: no JSON object", raw=frame))
    body = cast("dict[str, Any]", parsed)
    wire: Any = body.get("type")
    msg_id: Any = body.get("id")
    if type(wire) is not str or (msg_id is not None and type(msg_id) not in (str, int)):
        error = DecodeError("not an envelope: no string 'type' or a bad 'id'", raw=frame)
        return None, Item(frame, error=error)
    return body, None


# -- decoding ---------------------------------------------------------------------


def position(topic: object, offset: object, epoch: object) -> Position | None:
    """The position a publication carries, or ``None`` if it is malformed."""
    if type(topic) is not str or type(offset) is not int or type(epoch) is not str:
        return None
    try:
        return Position(epoch, offset)
    except ValueError:
        return None


def _structure(body: dict[str, Any], cls: type[Any], raw: str) -> Any:
    wire: str = body["type"]
    data: Any = body.get("data", {})
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        details = validation_details(exc)
        first = details[0]
        raise DecodeError(
            f"invalid {wire!r} message: {first.message} at {first.path}",
            type=wire,
            details=details,
            raw=raw,
            id=body.get("id"),
        ) from None


def _presence_event(body: dict[str, Any], wire: str, raw: str) -> PresenceJoin | PresenceLeave:
    """A ``presence_join`` / ``presence_leave`` envelope: ``topic`` beside ``data``."""
    data: Any = body.get("data")
    topic: Any = body.get("topic")
    fields = cast("dict[str, Any]", data) if type(data) is dict else None
    user_id: Any = None if fields is None else fields.get("user_id")
    if (
        fields is None
        or type(topic) is not str
        or "user_id" not in fields
        or (user_id is not None and type(user_id) not in (str, int))
    ):
        raise DecodeError(
            f"invalid {wire!r} message: expected a string 'topic' and data with a "
            "string, integer or null 'user_id'",
            type=wire,
            raw=raw,
            id=body.get("id"),
        )
    cls = PresenceJoin if wire == "presence_join" else PresenceLeave
    return cls(topic, user_id, fields.get("info"))


def server_error(body: dict[str, Any], raw: str) -> ClientError:
    """The exception an error envelope stands for (a :class:`DecodeError` if it is
    malformed)."""
    code, text, msg_id = body.get("code"), body.get("error"), body.get("id")
    details_raw: Any = body.get("details", [])
    details: list[ErrorDetail] = []
    ok = type(code) is str and type(text) is str and type(details_raw) is list
    for entry in cast("list[Any]", details_raw) if ok else []:
        fields = cast("dict[str, Any]", entry) if type(entry) is dict else {}
        path, text_ = fields.get("path"), fields.get("message")
        if type(path) is str and type(text_) is str:
            details.append(ErrorDetail(path, text_))
        else:
            ok = False
    if not ok:
        return DecodeError("malformed error envelope", type="error", raw=raw, id=msg_id)
    return ServerError(cast(str, code), cast(str, text), details, msg_id)
