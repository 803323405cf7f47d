"""The Python client is typed by the route it connects to: replies by the class asked
for, received messages by the route's server messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_type

import attrs

from trio_wsroutes import Connection, Context, create_websocket_route, message
from trio_wsroutes.client import Backoff, Client, Position, ServerError, connect


@attrs.frozen
class Ping:
    timestamp: float


@attrs.frozen
class Chat:
    text: str


@message("pong")
@attrs.frozen
class Pong:
    timestamp: float


@message("message")
@attrs.frozen
class ChatOut:
    text: str


chat = create_websocket_route("/chat/:room").server_messages(ChatOut, Pong)


@chat.on("ping", Ping)
async def on_ping(ws: Connection[ChatOut | Pong], data: Ping, ctx: Context[None]) -> Pong:
    return Pong(data.timestamp)


@chat.on("chat", Chat)
async def on_chat(ws: Connection[ChatOut | Pong], data: Chat, ctx: Context[None]) -> None:
    await ws.send(ChatOut(data.text))


async def main() -> None:
    # ✅ connect() takes the route's server messages.
    async with connect("ws://127.0.0.1:8000/chat/general", chat, token="t") as client:
        assert_type(client, Client[ChatOut | Pong, object])  # any client message: none declared

        # ✅ a request's result is the reply class asked for.
        pong = await client.request(Ping(timestamp=1.0), Pong, timeout=5.0)
        assert_type(pong, Pong)
        assert_type(pong.timestamp, float)

        # ✅ without a reply class, a request completes on the ack: None.
        assert_type(await client.request(Chat(text="hi")), None)

        # ✅ receive() and iteration yield the route's server messages.
        assert_type(await client.receive(), ChatOut | Pong)
        async for msg in client:
            assert_type(msg, ChatOut | Pong)
            if isinstance(msg, ChatOut):
                assert_type(msg.text, str)

        # ✅ positions per topic.
        assert_type(client.positions, Mapping[str, Position])
        assert_type(client.positions["room:general"].offset, int)

        await client.send(Chat(text="hi"))

        # ❌ the reply is a Pong, not a ChatOut.
        wrong: ChatOut = await client.request(Ping(timestamp=1.0), Pong)  # expect-error

        # ❌ a received message may be a Pong: narrow it first.
        line: ChatOut = await client.receive()  # expect-error

        # ❌ the reply type is a class, not a wire type.
        await client.request(Ping(timestamp=1.0), "pong")  # expect-error

        # ❌ a request without a reply class returns nothing to use.
        print((await client.request(Chat(text="hi"))).text)  # expect-error

        # ❌ no field of that name on the reply.
        print(pong.server_time)  # expect-error

        # ❌ timeouts are seconds.
        await client.request(Ping(timestamp=1.0), Pong, timeout="5")  # expect-error

        print(wrong, line)

    # ❌ connect() needs the route object, not its path.
    connect("ws://127.0.0.1:8000/chat/general", "/chat/:room")  # expect-error

    # ❌ reconnect takes True/False or a Backoff.
    connect("ws://h/chat/a", chat, reconnect=5)  # expect-error

    # ✅ a Backoff, and ServerError's fields.
    async with connect("ws://h/chat/a", chat, reconnect=Backoff(initial=0.1)) as again:
        try:
            await again.request(Ping(timestamp=1.0), Pong)
        except ServerError as error:
            assert_type(error.code, str)
            assert_type(error.id, str | int | None)


# A route that declares its client messages: send() and request() take only those.

declared = (
    create_websocket_route("/declared").server_messages(ChatOut, Pong).client_messages(Chat, Ping)
)


@declared.on("ping", Ping)
async def declared_ping(ws: Connection[ChatOut | Pong], data: Ping, ctx: Context[None]) -> Pong:
    return Pong(data.timestamp)


@declared.on("chat", Chat)
async def declared_chat(ws: Connection[ChatOut | Pong], data: Chat, ctx: Context[None]) -> None:
    pass


async def typed_sends() -> None:
    async with connect("ws://h/declared", declared) as client:
        assert_type(client, Client[ChatOut | Pong, Chat | Ping])

        # ✅ the declared client messages.
        await client.send(Chat(text="hi"))
        assert_type(await client.request(Ping(timestamp=1.0), Pong), Pong)

        # ❌ a server message is not something a client sends.
        await client.send(ChatOut(text="hi"))  # expect-error

        # ❌ nor is anything else.
        await client.send({"type": "chat", "data": {"text": "hi"}})  # expect-error

        # ❌ requests too.
        await client.request(Pong(timestamp=1.0), Pong)  # expect-error

    # ✅ an annotation without the client messages still takes the client.
    plain: Client[ChatOut | Pong] = connect("ws://h/declared", declared)
    print(plain)
