"""Snippets for the "Testing your routes" guide: the typed client in memory and live
(collected and run by pytest)."""

# [typed-client]
from __future__ import annotations

import attrs
import pytest

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message
from trio_wsroutes.client import Backoff
from trio_wsroutes.testing import ClientFactory, TestClient


@attrs.frozen
class Echo:
    text: str


@message("echo")
@attrs.frozen
class EchoOut:
    text: str


echo = create_websocket_route("/echo").server_messages(EchoOut)


@echo.on("echo", Echo)
async def on_echo(ws: Connection[EchoOut], data: Echo, ctx: Context[None]) -> EchoOut:
    return EchoOut(data.text)


@pytest.fixture
def ws_server() -> WebSocketServer:
    return WebSocketServer([echo])


async def test_echo(ws_typed_client: ClientFactory) -> None:
    async with ws_typed_client(echo) as client:  # a trio_wsroutes.client.Client
        assert await client.request(Echo("hi"), EchoOut) == EchoOut("hi")


# [/typed-client]


# [typed-live]
async def test_echo_live(ws_typed_live_client: ClientFactory) -> None:
    async with ws_typed_live_client(echo) as client:  # the one line that changed
        assert await client.request(Echo("hi"), EchoOut) == EchoOut("hi")


# [/typed-live]


# [both-ways]
async def check_echo(open_client: ClientFactory) -> None:
    async with open_client(echo, "/echo") as client:
        await client.send(Echo("one"))
        assert await client.request(Echo("two"), EchoOut) == EchoOut("two")
        assert await client.receive() == EchoOut("one")  # kept while the request waited


async def test_echo_in_memory(ws_typed_client: ClientFactory) -> None:
    await check_echo(ws_typed_client)


async def test_echo_over_a_socket(ws_typed_live_client: ClientFactory) -> None:
    await check_echo(ws_typed_live_client)


# [/both-ways]


# [reconnect]
async def test_the_client_comes_back_after_a_restart() -> None:
    server = WebSocketServer([echo])
    async with (
        TestClient(server) as test_client,
        test_client.client(echo, reconnect=Backoff(initial=0.01)) as client,
    ):
        assert await client.request(Echo("before"), EchoOut) == EchoOut("before")
        await server.close_all(1012, "restart")  # the client reconnects, in memory
        assert await client.request(Echo("after"), EchoOut) == EchoOut("after")
        assert client.reconnects == 1


# [/reconnect]
