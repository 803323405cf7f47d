"""The tutorial's chat server, complete. Run: hypercorn --worker-class trio chat:server."""

# [messages]
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    MessageError,
    WebSocketServer,
    create_websocket_route,
    message,
)


@attrs.frozen
class Say:
    """Client -> server: a chat line."""

    text: str = attrs.field(validator=[attrs.validators.min_len(1), attrs.validators.max_len(500)])


@attrs.frozen
class Ping:
    """Client -> server: measure latency."""

    sent_at: float


@message("said")
@attrs.frozen
class Said:
    """Server -> client: someone said something in your room."""

    name: str
    text: str


@message("pong")
@attrs.frozen
class Pong:
    """Server -> client: the answer to a ping."""

    sent_at: float
    server_time: float


# [/messages]

# [route]
ChatMessage = Said | Pong
chat = create_websocket_route("/rooms/:room").server_messages(Said, Pong)


@chat.on_connect
async def join(ws: Connection[ChatMessage], ctx: Context[None]) -> None:
    name = ctx.request.query.get("name", "")
    if not name:
        await ws.close(4000, "pass ?name=")
        return
    ctx.data["name"] = name
    await ws.subscribe(f"room:{ctx.params['room']}")


@chat.on("say", Say)
async def say(ws: Connection[ChatMessage], data: Say, ctx: Context[None]) -> None:
    name = str(ctx.data["name"])
    if data.text.startswith("/"):
        raise MessageError("Commands are not supported yet", code="NO_COMMANDS")
    await ws.publish(f"room:{ctx.params['room']}", Said(name, data.text), include_self=True)


@chat.on("ping", Ping)
async def ping(ws: Connection[ChatMessage], data: Ping, ctx: Context[None]) -> Pong:
    return Pong(sent_at=data.sent_at, server_time=time.time())


# [/route]

# [server]
PAGE = Path(__file__).with_name("page.html").read_bytes()
Scope = MutableMapping[str, Any]


async def page(
    scope: Scope,
    receive: Callable[[], Awaitable[Scope]],
    send: Callable[[Scope], Awaitable[None]],
) -> None:
    """The HTTP side: one HTML page at ``/``."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": PAGE})


server = WebSocketServer([chat], http_app=page)
# [/server]
