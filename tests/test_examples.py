"""The chat example under a real server, in both transports."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from trio_websocket import WebSocketConnection, open_websocket_url

from examples.chat.app import server as chat_server
from tests.test_hypercorn import http_get, receive
from trio_wsroutes import BoundAddress, WebSocketServer

ServeLive = Callable[[WebSocketServer], AbstractAsyncContextManager[BoundAddress]]

TIMEOUT = 10
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def connect(url: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(url, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT)


async def send(ws: WebSocketConnection, envelope: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(envelope))


def without_position(frame: dict[str, Any]) -> dict[str, Any]:
    """A publication on a room, which keeps history, without the position it carries."""
    position = {key: frame.pop(key) for key in ("topic", "offset", "epoch")}
    assert position["topic"] == "room:general", position
    assert isinstance(position["offset"], int) and isinstance(position["epoch"], str)
    return frame


def presence(frame: dict[str, Any]) -> tuple[str, str]:
    """A presence event on the room (which keeps history: it carries a position too):
    its type and the name in its info."""
    assert frame["type"] in ("presence_join", "presence_leave"), frame
    without_position(frame)
    assert frame["data"]["user_id"] is None  # the chat is anonymous: a user per connection
    return frame["type"], frame["data"]["info"]["name"]


async def test_chat_example_two_clients_talk(serve_live: ServeLive) -> None:
    async with serve_live(chat_server) as address:
        url = address.ws_url + "/chat/general"
        async with connect(url) as alice:
            hello_alice = await receive(alice)
            assert hello_alice["type"] == "joined"
            assert hello_alice["data"]["room"] == "general"
            assert hello_alice["data"]["user_count"] == 1
            guest_alice = hello_alice["data"]["you"]
            assert hello_alice["data"]["people"] == [guest_alice]

            async with connect(url) as bob:
                hello_bob = await receive(bob)
                assert hello_bob["type"] == "joined"
                assert hello_bob["data"]["user_count"] == 2
                guest_bob = hello_bob["data"]["you"]
                assert hello_bob["data"]["people"] == sorted([guest_alice, guest_bob])
                # Alice hears of him; he does not hear of his own arrival.
                assert presence(await receive(alice)) == ("presence_join", guest_bob)

                await send(bob, {"type": "set_name", "data": {"name": "bob"}, "id": "n"})
                assert await receive(bob) == {"type": "ack", "id": "n"}
                # Renamed: the room lists him under his new name.
                assert presence(await receive(alice)) == ("presence_leave", guest_bob)
                assert presence(await receive(alice)) == ("presence_join", "bob")
                names = sorted(e.info["name"] for e in await chat_server.presence("room:general"))
                assert names == sorted([guest_alice, "bob"])

                await send(bob, {"type": "chat", "data": {"text": "hello alice"}})
                expected = {
                    "type": "message",
                    "data": {"user": "bob", "text": "hello alice", "room": "general"},
                }
                assert without_position(await receive(alice)) == expected
                assert without_position(await receive(bob)) == expected  # the sender's too

                await send(alice, {"type": "chat", "data": {"text": "hi bob"}})
                reply = await receive(bob)
                assert reply["type"] == "message"
                assert reply["data"]["text"] == "hi bob"
                assert reply["data"]["user"] == hello_alice["data"]["you"]
                assert await receive(alice) == reply

                await send(alice, {"type": "ping", "data": {"timestamp": 12.5}, "id": "p1"})
                pong = await receive(alice)
                assert pong["type"] == "pong"
                assert pong["id"] == "p1"
                assert pong["data"]["timestamp"] == 12.5
                assert isinstance(pong["data"]["server_time"], float)

                await send(bob, {"type": "chat", "data": {"text": ""}, "id": 9})
                error = await receive(bob)
                assert error["type"] == "error"
                assert error["code"] == "VALIDATION_ERROR"
                assert error["id"] == 9
                assert [d["path"] for d in error["details"]] == ["$.data.text"]

                # Bob is still connected after the validation error.
                await send(bob, {"type": "ping", "data": {"timestamp": 1}, "id": "p2"})
                assert (await receive(bob))["id"] == "p2"
            # He goes: alice hears it, and the room counts one again.
            assert presence(await receive(alice)) == ("presence_leave", "bob")
            stats = await chat_server.presence_stats("room:general")
            assert (stats.clients, stats.users) == (1, 1)


@pytest.mark.transports("hypercorn")  # the page is served by the http_app
async def test_chat_example_serves_its_page_over_http(serve_live: ServeLive) -> None:
    async with serve_live(chat_server) as address:
        response = await http_get(address, "/")
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        assert b"<html" in response.body.lower()

        missing = await http_get(address, "/nope")
        assert missing.status == 404
