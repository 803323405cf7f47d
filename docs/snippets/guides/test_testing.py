"""Snippets for the "Testing your routes" guide (collected and run by pytest)."""

# [fixtures]
from __future__ import annotations

import attrs
import pytest
import trio
from trio_websocket import open_websocket_url

from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import ConnectionDenied, RequestTimeout, TestClient, TransportName


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


async def test_in_memory(ws_client: TestClient) -> None:
    async with ws_client.connect("/echo") as ws:
        assert (await ws.request("echo", {"text": "hi"}))["data"] == {"text": "hi"}


async def test_over_a_real_socket(ws_live_server: BoundAddress) -> None:
    async with open_websocket_url(f"{ws_live_server.ws_url}/echo") as ws:
        await ws.send_message('{"type": "echo", "data": {"text": "live"}}')
        assert await ws.get_message() == '{"type":"echo","data":{"text":"live"}}'


# [/fixtures]


# [denials]
async def test_unknown_path_is_denied(ws_client: TestClient) -> None:
    with pytest.raises(ConnectionDenied) as denied:
        async with ws_client.connect("/nope"):
            pass
    assert denied.value.status == 404
    assert denied.value.json()["code"] == "NOT_FOUND"


# [/denials]


# [request]
async def test_a_request_keeps_other_messages(ws_client: TestClient) -> None:
    async with ws_client.connect("/echo") as ws:
        await ws.send("echo", {"text": "first"})  # no id: its answer has none either
        reply = await ws.request("echo", {"text": "second"})
        assert reply == {"type": "echo", "data": {"text": "second"}, "id": "req-1"}
        assert (await ws.receive())["data"] == {"text": "first"}  # kept for receive()
        ws.pause_reading()  # nothing gets through now
        with pytest.raises(RequestTimeout, match="no reply to request 'req-2'"):
            await ws.request("echo", {"text": "late"}, timeout=0.1)


# [/request]


# [slow-client]
async def test_a_client_that_stops_reading(ws_server: WebSocketServer) -> None:
    async with TestClient(ws_server) as client, client.connect("/echo") as ws:
        ws.pause_reading()  # the server's sends to this client now wait
        await ws.send("echo", {"text": "queued"})
        with pytest.raises(trio.TooSlowError):
            await ws.receive(timeout=0.1)
        ws.resume_reading()
        assert (await ws.receive())["data"] == {"text": "queued"}


# [/slow-client]


# [both-transports]
@pytest.mark.parametrize("transport", ["asgi", "native"])
async def test_on_both_transports(ws_server: WebSocketServer, transport: TransportName) -> None:
    async with TestClient(ws_server, transport=transport) as client, client.connect("/echo") as ws:
        assert (await ws.request("echo", {"text": "hi"}))["data"] == {"text": "hi"}
        await ws.send_text("x" * (17 * 1024 * 1024))  # over max_payload_length
        assert await ws.wait_closed() == 1009


# [/both-transports]
