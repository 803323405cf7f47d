"""A chat server: rooms by path parameter, a ping/pong RPC, validated messages.

Run it with ``python -m examples.chat`` (or ``hypercorn --worker-class trio
examples.chat.app:server``) and open http://127.0.0.1:8000/ in two browser tabs.

The rooms keep history (``room:*``: the last 100 messages, for 5 minutes), so the page,
which uses the generated client (``websocket-client.js``), gets what it missed while it
was reconnecting after a network loss. A restarted process starts its history afresh with
the in-memory broker (the page is then told it could not recover, and shows the room from
there); with Redis (below) the history outlives the process, and the page gets what it
missed across a restart too.

The rooms list who is in them (``presence``): a connection entering a room is told who is
there and how many (``joined``, from ``ws.presence`` and ``ws.presence_stats``), and the
others hear of it (``presence_join``, then ``presence_leave``), under the name it goes by.

Set ``WSROUTES_REDIS_URL`` (``redis://127.0.0.1:6379/0``) to share the rooms between
processes through Redis, so that ``hypercorn --workers 2`` (or several hosts) serve one
chat, who is in each room included; unset, the rooms live in this process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import attrs
import trio

from trio_wsroutes import (
    Connection,
    Context,
    History,
    MessageError,
    Presence,
    PresenceJoin,
    PresenceLeave,
    RedisBroker,
    WebSocketServer,
    create_websocket_route,
    message,
)

# -- client -> server -------------------------------------------------------------------


@attrs.frozen
class Chat:
    """Say something in the room (or in ``room``, if given)."""

    text: str = attrs.field(validator=[attrs.validators.min_len(1), attrs.validators.max_len(500)])
    room: str | None = None


@attrs.frozen
class Ping:
    """Measure latency; answered with a ``pong`` carrying the same ``id``."""

    timestamp: float


@attrs.frozen
class SetName:
    """Choose the name other people see."""

    name: str = attrs.field(validator=[attrs.validators.min_len(1), attrs.validators.max_len(32)])


# -- server -> client -------------------------------------------------------------------


@message("message")
@attrs.frozen
class ChatOut:
    """A chat line, sent to everyone in the room."""

    user: str
    text: str
    room: str


@message("pong")
@attrs.frozen
class Pong:
    """The reply to ``ping``."""

    timestamp: float
    server_time: float


@message("joined")
@attrs.frozen
class Joined:
    """Sent to a connection when it enters a room: who is there (itself included)."""

    room: str
    you: str
    user_count: int
    people: list[str]


@attrs.frozen
class Member:
    """What a room lists for each connection in it (its presence info)."""

    name: str


ServerMessage = ChatOut | Pong | Joined | PresenceJoin | PresenceLeave

chat = create_websocket_route("/chat/:room").server_messages(
    ChatOut, Pong, Joined, PresenceJoin, PresenceLeave
)


def _name(ctx: Context[None]) -> str:
    name = ctx.data.get("name")
    return name if isinstance(name, str) else f"guest-{ctx.connection_id[:6]}"


def member(ctx: Context[None]) -> Member:
    """The presence info of a connection: the name it goes by when it enters a room."""
    return Member(name=_name(ctx))


@chat.on_connect
async def joined(ws: Connection[ServerMessage], ctx: Context[None]) -> None:
    room = ctx.params["room"]
    topic = f"room:{room}"
    await ws.subscribe(topic)  # listed in the room; the others get a presence_join
    stats = await ws.presence_stats(topic)  # every worker's, with Redis
    people = sorted(entry.info_as(Member).name for entry in await ws.presence(topic))
    await ws.send(Joined(room=room, you=_name(ctx), user_count=stats.users, people=people))


@chat.on("chat", Chat)
async def on_chat(ws: Connection[ServerMessage], data: Chat, ctx: Context[None]) -> None:
    room = data.room or ctx.params["room"]
    if room != ctx.params["room"] and f"room:{room}" not in ws.topics:
        raise MessageError(f"You are not in room {room!r}", code="NOT_IN_ROOM")
    await ws.publish(
        f"room:{room}", ChatOut(user=_name(ctx), text=data.text, room=room), include_self=True
    )


@chat.on("ping", Ping)
async def on_ping(ws: Connection[ServerMessage], data: Ping, ctx: Context[None]) -> Pong:
    return Pong(timestamp=data.timestamp, server_time=time.time())


@chat.on("set_name", SetName)
async def on_set_name(ws: Connection[ServerMessage], data: SetName, ctx: Context[None]) -> None:
    if data.name == ctx.data.get("name"):
        return
    ctx.data["name"] = data.name
    # The room lists the name a connection entered with: leave, and enter again as the
    # new one (the others see the old name leave and the new one join).
    topic = f"room:{ctx.params['room']}"
    await ws.unsubscribe(topic)
    await ws.subscribe(topic)


# -- the HTTP side: the page and its script, served by the same server --------------------

HERE = Path(__file__).parent
HTML, JS = b"text/html; charset=utf-8", b"text/javascript; charset=utf-8"
FILES = {
    "/": ("index.html", HTML),
    "/index.html": ("index.html", HTML),
    # The page's script: client.ts compiled by tsc, typed by websocket-types.ts.
    "/client.js": ("client.js", JS),
    # The generated client it imports (trio-wsroutes typegen ... --client).
    "/websocket-client.js": ("websocket-client.js", JS),
}
"""URL path -> (file beside this module, content type), read on each request."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def http_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve the chat page at ``/`` and its script; everything else is 404."""
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    found = FILES.get(scope["path"])
    if found:
        name, content_type = found
        body = await trio.Path(HERE / name).read_bytes()
    else:
        body, content_type = b"Not Found", b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": 200 if found else 404,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


REDIS_URL = os.environ.get("WSROUTES_REDIS_URL")
"""Redis shared by every worker and host; ``None``: topics stay in this process."""

server = WebSocketServer(
    [chat],
    http_app=http_app,
    broker=RedisBroker(REDIS_URL) if REDIS_URL else None,
    history={"room:*": History(size=100, ttl=300.0)},
    presence={"room:*": Presence(info=member, events=True)},
)
