"""The app of the multi-process metrics test: ``/play/:room`` (ping, join a topic,
shout to the topic ``room``) with metrics on, and Redis from ``WSROUTES_REDIS_URL``."""

from __future__ import annotations

import os

import attrs

from tests._messages import Ping, Pong
from trio_wsroutes import Connection, Context, RedisBroker, WebSocketServer, create_websocket_route
from trio_wsroutes import message as message


@message("joined")
@attrs.frozen
class Joined:
    topic: str


@attrs.frozen
class Join:
    topic: str


route = create_websocket_route("/play/:room").server_messages(Pong, Joined)


@route.on("ping", Ping)
async def ping(ws: Connection[Pong | Joined], data: Ping, ctx: Context[None]) -> Pong:
    return Pong(data.n)


@route.on("join", Join)
async def join(ws: Connection[Pong | Joined], data: Join, ctx: Context[None]) -> Joined:
    await ws.subscribe(data.topic)
    return Joined(data.topic)


@route.on("shout", Ping)
async def shout(ws: Connection[Pong | Joined], data: Ping, ctx: Context[None]) -> None:
    await ws.publish("room", Pong(data.n), include_self=True)


server = WebSocketServer(
    [route], broker=RedisBroker(os.environ["WSROUTES_REDIS_URL"]), metrics=True
)
