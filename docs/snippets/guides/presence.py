"""Snippets for the "Presence and users" guide (``test_presence_guide.py`` runs them
against a real server)."""

from __future__ import annotations

import os

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    Presence,
    PresenceJoin,
    PresenceLeave,
    RedisBroker,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import connect


@attrs.frozen
class User:
    id: str
    name: str


USERS = {"t-ada": User("u1", "Ada"), "t-grace": User("u2", "Grace")}


def verify(token: str) -> User | None:
    return USERS.get(token)


# [info]
@attrs.frozen
class Seat:
    """What a room lists for each connection: small, typed, the app's choice."""

    name: str
    device: str


def seat(ctx: Context[User]) -> Seat:
    return Seat(ctx.user.name, ctx.request.headers.get("x-device") or "web")


# [/info]


@message("here")
@attrs.frozen
class Here:
    """Who is in the room, sent to a connection entering it."""

    users: int
    names: list[str]


Out = Here | PresenceJoin | PresenceLeave
# Declaring the presence events types them in the Python client too.
room = (
    create_websocket_route("/rooms/:room")
    .server_messages(Here, PresenceJoin, PresenceLeave)
    .authenticate(create_token_auth(verify))
)

# [server]
PRESENCE = {"room:*": Presence(info=seat, events=True)}
server = WebSocketServer([room], presence=PRESENCE, user_id=lambda user: user.id)
# [/server]

# [redis]
if "REDIS_URL" in os.environ:
    # Several workers or hosts: who is in each room, for all of them.
    broker = RedisBroker(os.environ["REDIS_URL"])
    server = WebSocketServer([room], presence=PRESENCE, user_id=lambda u: u.id, broker=broker)
# [/redis]


# [join]
@room.on_connect
async def join(ws: Connection[Out], ctx: Context[User]) -> None:
    topic = f"room:{ctx.params['room']}"
    await ws.subscribe(topic)  # listed; the others hear presence_join (once per user)
    stats = await ws.presence_stats(topic)  # every worker's
    names = sorted({entry.info_as(Seat).name for entry in await ws.presence(topic)})
    await ws.send(Here(stats.users, names))


# [/join]


# [large]
LARGE = {
    "room:*": Presence(info=seat, events=True),
    # Thousands of viewers: no events (each would reach every one of them), a few
    # listed, and a count to poll.
    "stream:*": Presence(max_entries=100),
}


async def viewers(server: WebSocketServer, stream: str) -> int:
    return (await server.presence_stats(f"stream:{stream}")).clients


# [/large]


# [client]
async def watch(url: str, token: str, seen: list[str]) -> None:
    """Follow who comes and goes in a room."""
    async with connect(url, room, token=token) as client:
        async for msg in client:
            match msg:
                case Here(names=names):
                    seen.append("here: " + ", ".join(names))
                case PresenceJoin(info={"name": str(name)}):
                    seen.append(f"+{name}")
                case PresenceLeave(info={"name": str(name)}):
                    seen.append(f"-{name}")
                case _:
                    pass


# [/client]
