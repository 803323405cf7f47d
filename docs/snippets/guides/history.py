"""Snippets for the "History and recovery" guide (``test_history_guide.py`` runs them
against a real server)."""

from __future__ import annotations

import os

import attrs
import orjson

from trio_wsroutes import (
    Connection,
    Context,
    History,
    HistoryPolicy,
    Position,
    RedisBroker,
    WebSocketServer,
    converter,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import connect


@attrs.frozen
class Chat:
    text: str


@message("message")
@attrs.frozen
class ChatOut:
    user: str
    text: str


@message("backlog")
@attrs.frozen
class Backlog:
    """The last messages of a topic, and the position they end at."""

    topic: str
    messages: list[ChatOut]
    epoch: str
    offset: int


Out = ChatOut | Backlog
room = create_websocket_route("/rooms/:room").server_messages(ChatOut, Backlog)

# [server]
HISTORY = {"room:*": History(size=100, ttl=300.0)}
server = WebSocketServer([room], history=HISTORY)
# [/server]

# [redis]
if "REDIS_URL" in os.environ:
    # Several workers or hosts: topics and history live in Redis, for all of them.
    broker = RedisBroker(os.environ["REDIS_URL"], secret=os.environ.get("WSROUTES_REDIS_SECRET"))
    server = WebSocketServer([room], history=HISTORY, broker=broker)
# [/redis]


# [join]
@room.on_connect
async def join(ws: Connection[Out], ctx: Context[None]) -> None:
    topic = f"room:{ctx.params['room']}"
    # If the client named a position for this topic (its `since`), what it missed
    # comes first, in order.
    recovery = await ws.subscribe(topic)
    if recovery.recovered:
        return  # recovery.missed publications resent; live ones follow
    # A new client, or one whose position is out of reach: a backlog instead.
    await ws.unsubscribe(topic)
    page = await server.history(topic, limit=20)
    messages = [
        converter.structure(orjson.loads(p.payload)["data"], ChatOut) for p in page.publications
    ]
    await ws.send(Backlog(topic, messages, page.position.epoch, page.position.offset))
    # What was published after the history was read, then the live ones.
    await ws.subscribe(topic, since=page.position)


# [/join]


@room.on("chat", Chat)
async def chat(ws: Connection[Out], data: Chat, ctx: Context[None]) -> None:
    topic = f"room:{ctx.params['room']}"
    await ws.publish(topic, ChatOut(ws.id[:8], data.text), include_self=True)


# [client]
async def follow(url: str, saved: dict[str, Position], shown: list[ChatOut]) -> None:
    """Show a room, resuming from ``saved`` (store it anywhere: it is plain data)."""
    async with connect(url, room, reconnect=True, since=saved) as client:
        async for msg in client:
            if isinstance(msg, Backlog):
                shown[:] = msg.messages  # a backlog replaces everything before it
                saved[msg.topic] = Position(msg.epoch, msg.offset)
            else:
                shown.append(msg)
                saved.update(client.positions)  # the last publication's, per topic


# [/client]

# [policy]
policy = HistoryPolicy(
    {
        "room:*": History(size=100, ttl=300.0),
        "ticker:*": History(size=1000, ttl=60.0),
    },
    max_topics=50_000,  # topics with history one process keeps (MemoryBroker)
)
# [/policy]
