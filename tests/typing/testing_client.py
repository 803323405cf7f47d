"""The typed client in memory (``TestClient.client``) and live (``live_clients``) is the
same ``Client``, typed by the route; ``TestConnection.request`` returns the answer dict."""

from __future__ import annotations

from typing import Any, assert_type

import attrs

from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import Client
from trio_wsroutes.testing import (
    ClientFactory,
    ClientOptions,
    RequestTimeout,
    TestClient,
    live_clients,
)


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


server = WebSocketServer([chat])


async def in_memory() -> None:
    async with TestClient(server) as test_client:
        # ✅ the in-memory client is the typed Client of the route.
        async with test_client.client(chat, "/chat/general", token="t") as client:
            assert_type(client, Client[ChatOut | Pong, object])
            pong = await client.request(Ping(timestamp=1.0), Pong)
            assert_type(pong, Pong)
            assert_type(await client.receive(), ChatOut | Pong)
            assert_type(await client.request(Chat(text="hi")), None)

            # ❌ the reply is a Pong, not a ChatOut.
            wrong: ChatOut = await client.request(Ping(timestamp=1.0), Pong)  # expect-error
            print(wrong)

        # ✅ and so is TestClient.client, as a ClientFactory.
        await either_way(test_client.client)

        # ❌ the route object, not its path.
        test_client.client("/chat/:room")  # expect-error

        # ❌ the options are connect()'s, typed.
        test_client.client(chat, "/chat/a", token=5)  # expect-error
        test_client.client(chat, "/chat/a", request_timout=1.0)  # expect-error

        # ❌ no TLS or proxy in memory.
        test_client.client(chat, "/chat/a", proxy=False)  # expect-error

        # ✅ TestConnection.request: the answer as a dict.
        async with test_client.connect("/chat/general") as ws:
            assert_type(await ws.request("ping", {"timestamp": 1.0}), dict[str, Any])
            try:
                await ws.request("ping", {"timestamp": 1.0}, timeout=0.5)
            except RequestTimeout as timed_out:
                assert_type(timed_out.id, str | int)
                assert_type(timed_out.received, tuple[str | bytes, ...])

            # ❌ the timeout is seconds.
            await ws.request("ping", timeout="1")  # expect-error


async def either_way(open_client: ClientFactory) -> None:
    # ✅ a factory gives the route's Client, in memory or live.
    options: ClientOptions = {"token": "t", "request_timeout": 2.0}
    async with open_client(chat, "/chat/general", **options) as client:
        assert_type(client, Client[ChatOut | Pong, object])
        assert_type(await client.request(Ping(timestamp=1.0), Pong), Pong)

    # ❌ ClientOptions holds connect()'s options only.
    bad: ClientOptions = {"ssl_context": None}  # expect-error
    print(bad)


async def live(address: BoundAddress) -> None:
    # ✅ live_clients is a ClientFactory too.
    await either_way(live_clients(address))
    await either_way(live_clients("ws://127.0.0.1:8000"))

    # ❌ an address or a base URL.
    live_clients(8000)  # expect-error


declared = create_websocket_route("/declared").server_messages(ChatOut).client_messages(Chat)


@declared.on("chat", Chat)
async def declared_chat(ws: Connection[ChatOut], data: Chat, ctx: Context[None]) -> None:
    pass


async def in_memory_declared(server: WebSocketServer) -> None:
    async with TestClient(server) as test, test.client(declared) as client:
        # ✅ the route's declared client message.
        await client.send(Chat(text="hi"))

        # ❌ a server message is not something a client sends.
        await client.send(ChatOut(text="hi"))  # expect-error
