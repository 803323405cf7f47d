"""The pytest plugin's fixtures, as a user of the package would use them."""

from __future__ import annotations

import attrs
import pytest
from trio_websocket import open_websocket_url

from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import TestClient


@attrs.frozen
class Echo:
    text: str


@message("echo")
@attrs.frozen
class EchoOut:
    text: str


@pytest.fixture
def ws_server() -> WebSocketServer:
    route = create_websocket_route("/echo").server_messages(EchoOut)

    @route.on("echo", Echo)
    async def echo(ws: Connection[EchoOut], data: Echo, ctx: Context[None]) -> EchoOut:
        return EchoOut(data.text)

    return WebSocketServer([route])


async def test_ws_client_fixture(ws_client: TestClient) -> None:
    async with ws_client.connect("/echo") as ws:
        reply = await ws.request("echo", {"text": "hi"})
    assert reply["type"] == "echo"
    assert reply["data"] == {"text": "hi"}


async def test_ws_live_server_fixture(ws_live_server: BoundAddress) -> None:
    async with open_websocket_url(f"{ws_live_server.ws_url}/echo") as ws:
        await ws.send_message('{"type": "echo", "data": {"text": "live"}, "id": 1}')
        assert await ws.get_message() == '{"type":"echo","data":{"text":"live"},"id":1}'
