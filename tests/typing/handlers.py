"""Handler signatures are checked against the schema, the user and the server messages."""

from __future__ import annotations

from typing import assert_type

import attrs

from trio_wsroutes import Connection, Context, WebSocketRoute, create_websocket_route, message


@attrs.frozen
class Chat:
    text: str


@attrs.frozen
class Ping:
    timestamp: float


@message("pong")
@attrs.frozen
class Pong:
    timestamp: float


@message("other")
@attrs.frozen
class Other:
    x: int


route = create_websocket_route("/r").server_messages(Pong)


# ✅ data typed from the schema; a returned message is the reply.
@route.on("ping", Ping)
async def ping(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Pong:
    assert_type(data.timestamp, float)
    return Pong(data.timestamp)


# ❌ a handler for Chat registered with Ping.
@route.on("chat", Ping)  # expect-error
async def chat(ws: Connection[Pong], data: Chat, ctx: Context[None]) -> None: ...


# ❌ replying with a message the route does not send.
@route.on("other", Ping)  # expect-error
async def other(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Other:
    return Other(1)


# ❌ claiming to send more than the route declares.
@route.on("wide", Ping)  # expect-error
async def wide(ws: Connection[Pong | Other], data: Ping, ctx: Context[None]) -> None: ...


# ❌ expecting a user on a route without authenticate.
@route.on_connect  # expect-error
async def connect(ws: Connection[Pong], ctx: Context[str]) -> None: ...


async def chained(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Pong:
    return Pong(data.timestamp)


# ✅ the three-argument form chains.
chain = route.on("chained", Ping, chained)
assert_type(chain, WebSocketRoute[None, Pong])

# ❌ server messages as one union value instead of separate classes.
create_websocket_route("/u").server_messages(Pong | Other)  # expect-error
