"""A server whose messages use every field type the generators map.

``python -m trio_wsroutes typegen tests.typegen.app:server`` works on it like on any app.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any, Literal

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)

from . import other


class Color(enum.Enum):
    """A colour, by name."""

    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Point:
    """A point on the plane."""

    x: float
    y: float


@attrs.frozen
class Circle:
    center: Point
    radius: float


@attrs.frozen
class Square:
    corner: Point
    side: float


@attrs.frozen
class TreeNode:
    """A node of a tree: a recursive class."""

    label: str
    children: list[TreeNode] = attrs.Factory(list)


# -- client -> server ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Draw:
    """Draw a shape."""

    shape: Circle | Square
    color: Color
    note: str | None
    """Required, but may be null."""
    priority: Priority = Priority.LOW
    label: str | None = None
    tags: frozenset[str] = frozenset()
    layer: Literal["top", "bottom"] = "top"
    at: datetime.datetime | None = None
    blob: bytes = b""
    place: other.Point | None = None


@attrs.frozen
class Ping:
    timestamp: float


@attrs.frozen
class Settings:
    """Used both ways: clients send it with defaults left out, the server sends it whole."""

    theme: str = "light"
    volume: int = attrs.field(default=5, metadata={"description": "From 0 to 10"})


# -- server -> client ------------------------------------------------------------------------


@message("everything")
@attrs.frozen(kw_only=True)
class Everything:
    """Every field type, as the converter writes it."""

    text: str
    count: int
    ratio: float
    flag: bool
    nothing: None
    maybe: str | None
    defaulted: int = 3
    items: list[int]
    pair: tuple[int, str]
    many: tuple[float, ...]
    unique: set[str]
    frozen: frozenset[int]
    scores: dict[str, float]
    nested: dict[str, list[Point | None]]
    mode: Literal["fast", "slow"]
    color: Color
    priority: Priority
    at: datetime.datetime
    day: datetime.date
    time_of_day: datetime.time
    ident: uuid.UUID
    blob: bytes
    extra: Any
    shape: Circle | Square
    tree: TreeNode
    place: other.Point
    here: Point
    hidden: int = attrs.field(init=False, default=0)
    """Not an __init__ argument: the converter does not write it."""


@message("pong")
@attrs.frozen
class Pong:
    timestamp: float
    server_time: float


@message("drawn")
@attrs.frozen
class Drawn:
    shape: Circle | Square
    by: str


message("settings")(Settings)


class User:
    def __init__(self, name: str) -> None:
        self.name = name


def verify(token: str) -> User | None:
    return User(token) if token else None


shapes = (
    create_websocket_route("/api/shapes")
    .server_messages(Everything, Pong, Drawn, Settings)
    .authenticate(create_token_auth(verify, cookie_name="session"))
)


@shapes.on("draw", Draw)
async def on_draw(ws: Connection[Any], data: Draw, ctx: Context[User]) -> Drawn:
    return Drawn(shape=data.shape, by=ctx.user.name)


@shapes.on("ping", Ping)
async def on_ping(ws: Connection[Any], data: Ping, ctx: Context[User]) -> Pong:
    return Pong(timestamp=data.timestamp, server_time=0.0)


@shapes.on("update_settings", Settings)
async def on_settings(ws: Connection[Any], data: Settings, ctx: Context[User]) -> Settings:
    return data


@attrs.frozen
class Say:
    text: str


@message("said")
@attrs.frozen
class Said:
    text: str
    room_id: str


def session_user(request: Request) -> str | None:
    """Looks the session cookie up in the session store."""
    return request.cookies.get("sid")


chat = (
    create_websocket_route("/rooms/:room_id/chat/{thread}")
    .server_messages(Said)
    .authenticate(session_user)
)


@chat.on("say", Say)
async def on_say(ws: Connection[Any], data: Say, ctx: Context[str]) -> None:
    return None


@attrs.frozen
class Join:
    """A wire type that is no identifier: quoted in TypeScript, sanitised in AsyncAPI."""


@chat.on("thread:join", Join)
async def on_join(ws: Connection[Any], data: Join, ctx: Context[str]) -> None:
    return None


status = create_websocket_route("/internal/status", name="Status").server_messages(Pong)

server = WebSocketServer([shapes, chat, status])
