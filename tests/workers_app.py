"""An app for the worker tests: ``/pid`` greets each connection with the pid of the
worker that serves it; ``/room`` subscribes to one topic and publishes what a client
says to it. With ``WSROUTES_REDIS_URL`` set the topic goes through Redis; with
``WSROUTES_TEST_METRICS`` set the server serves metrics."""

from __future__ import annotations

import os

import attrs

from trio_wsroutes import (
    Broker,
    Connection,
    Context,
    MemoryBroker,
    RedisBroker,
    WebSocketServer,
    create_websocket_route,
    message,
)


@message("pid")
@attrs.frozen
class Pid:
    pid: int


@message("said")
@attrs.frozen
class Said:
    text: str
    pid: int


@attrs.frozen
class Say:
    text: str


pid = create_websocket_route("/pid").server_messages(Pid)
room = create_websocket_route("/room").server_messages(Pid, Said)


@pid.on_connect
async def greet(ws: Connection[Pid], ctx: Context[None]) -> None:
    await ws.send(Pid(os.getpid()))


@room.on_connect
async def join(ws: Connection[Pid | Said], ctx: Context[None]) -> None:
    await ws.subscribe("room")
    await ws.send(Pid(os.getpid()))  # after subscribing: what is published next arrives


@room.on("say", Say)
async def say(ws: Connection[Pid | Said], data: Say, ctx: Context[None]) -> None:
    await ws.publish("room", Said(data.text, os.getpid()), include_self=True)


_url = os.environ.get("WSROUTES_REDIS_URL")
broker: Broker = RedisBroker(_url) if _url else MemoryBroker()
server = WebSocketServer(
    [pid, room], broker=broker, metrics=bool(os.environ.get("WSROUTES_TEST_METRICS"))
)
