"""Full type safety: what the type checkers accept (✅ pass) and reject (❌ expect-error)."""

from __future__ import annotations

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    Request,
    create_websocket_route,
    message,
)


@attrs.frozen
class User:
    name: str


def auth(request: Request) -> User | None:
    return User("ada") if request.query.get("token") else None


# Client -> server schemas.
@attrs.frozen
class Chat:
    text: str
    room: str | None = None


@attrs.frozen
class Ping:
    timestamp: float


@attrs.frozen
class Join:
    room: str


# Server -> client messages.
@message("message")
@attrs.frozen
class MessageOut:
    user: str
    text: str
    room: str


@message("pong")
@attrs.frozen
class Pong:
    timestamp: float


@message("joined")
@attrs.frozen
class Joined:
    room: str
    user_count: int


@message("invalid")
@attrs.frozen
class Invalid:
    foo: str


ServerMessage = MessageOut | Pong | Joined

chat = (
    create_websocket_route("/api/chat")
    .client_messages(Chat, Ping, Join)
    .server_messages(MessageOut, Pong, Joined)
    .authenticate(auth)
)


@chat.on("chat", Chat)
async def on_chat(ws: Connection[ServerMessage], data: Chat, ctx: Context[User]) -> None:
    room = data.room or "general"
    # ✅ matches ServerMessage
    await ws.publish(f"room:{room}", MessageOut(user=ctx.user.name, text=data.text, room=room))
    # ❌ "invalid" is not in the ServerMessage union
    await ws.send(Invalid(foo="bar"))  # expect-error
    # ❌ missing required field "room"
    await ws.send(MessageOut(user=ctx.user.name, text=data.text))  # expect-error


@chat.on("ping", Ping)
async def on_ping(ws: Connection[ServerMessage], data: Ping, ctx: Context[User]) -> None:
    # ✅
    await ws.send(Pong(timestamp=data.timestamp))


@chat.on("join", Join)
async def on_join(ws: Connection[ServerMessage], data: Join, ctx: Context[User]) -> None:
    await ws.subscribe(f"room:{data.room}")
    # ✅
    await ws.send(Joined(room=data.room, user_count=1))
