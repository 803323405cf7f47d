"""A room route with presence, shared by the presence tests, and a server over Redis for the
tests that run it in a process of their own (``WSROUTES_REDIS_URL``, ``PRESENCE_TTL``)::

    python -m hypercorn --worker-class trio --workers 0 tests.presence_app:server

``/room/:room`` authenticates with a token that is the user id and subscribes to
``room:<room>``. The client messages: ``who`` (``Who(topic)``, answered with
``People``: the user ids ``ws.presence`` lists and ``ws.presence_stats``), ``sub``
(``Sub(topic)``: subscribe to another topic).
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    History,
    Presence,
    PresenceJoin,
    PresenceLeave,
    RedisBroker,
    WebSocketRoute,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)


@attrs.frozen
class User:
    id: str


@attrs.frozen
class Seat:
    name: str


@attrs.frozen
class Who:
    topic: str


@attrs.frozen
class Sub:
    topic: str


@message("people")
@attrs.frozen
class People:
    user_ids: list[str | None]
    clients: int
    users: int


@message("marker")
@attrs.frozen
class Marker:
    n: int


@message("hello")
@attrs.frozen
class Hello:
    pid: int


Out = People | Marker | Hello | PresenceJoin | PresenceLeave


def seat(ctx: Context[Any]) -> Seat | None:
    user = ctx.user
    return None if user is None else Seat(name=f"seat of {user.id}")


def allowed(ws: Connection[Out], topic: str, ctx: Context[Any]) -> bool:
    return not topic.startswith("secret:")


def room_route() -> WebSocketRoute[User, Out]:
    route = (
        create_websocket_route("/room/:room")
        .server_messages(People, Marker, Hello, PresenceJoin, PresenceLeave)
        .authenticate(create_token_auth(User))
    )
    route.authorize_subscribe(allowed)

    @route.on_connect
    async def joined(ws: Connection[Out], ctx: Context[User]) -> None:
        await ws.subscribe(f"room:{ctx.params['room']}")
        await ws.send(Hello(pid=os.getpid()))

    @route.on("who", Who)
    async def who(ws: Connection[Out], data: Who, ctx: Context[User]) -> People:
        entries = await ws.presence(data.topic)
        stats = await ws.presence_stats(data.topic)
        ids = sorted((e.user_id for e in entries), key=str)
        return People(user_ids=[None if i is None else str(i) for i in ids], **attrs.asdict(stats))

    @route.on("sub", Sub)
    async def sub(ws: Connection[Out], data: Sub, ctx: Context[User]) -> None:
        await ws.subscribe(data.topic)

    return route


def open_route() -> WebSocketRoute[None, Out]:
    """``/open/:room``: anonymous connections in ``open:<room>``."""
    route = create_websocket_route("/open/:room").server_messages(
        People, Marker, Hello, PresenceJoin, PresenceLeave
    )

    @route.on_connect
    async def joined(ws: Connection[Out], ctx: Context[None]) -> None:
        await ws.subscribe(f"open:{ctx.params['room']}")
        await ws.send(Hello(pid=os.getpid()))

    return route


def presence(ttl: float = 30.0, **options: Any) -> dict[str, Presence]:
    """Presence on ``room:*`` (info and events), ``secret:*``, ``open:*``, ``big:*``
    (two entries listed at most) and ``kept:*`` (with history)."""
    return {
        "room:*": Presence(info=seat, events=True, ttl=ttl, **options),
        "secret:*": Presence(events=True, ttl=ttl),
        "open:*": Presence(events=True, ttl=ttl),
        "big:*": Presence(max_entries=2, ttl=ttl),
        "kept:*": Presence(info=seat, events=True, ttl=ttl),
    }


HISTORY = {"kept:*": History(size=10)}


def make_server(broker: Any = None, *, ttl: float = 30.0, **options: Any) -> WebSocketServer:
    """The test server: both routes, presence on every test topic."""
    return WebSocketServer(
        [room_route(), open_route()],
        broker=broker,
        presence=presence(ttl),
        history=HISTORY,
        **options,
    )


def _server_from_environment() -> WebSocketServer | None:
    url = os.environ.get("WSROUTES_REDIS_URL")
    if url is None:
        return None
    broker = RedisBroker(url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    return make_server(broker, ttl=float(os.environ.get("PRESENCE_TTL", "30")))


server = _server_from_environment()
