"""The examples work as their docs say: under a real hypercorn, and as the README runs them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from examples.chat.app import server as chat_server
from tests.test_hypercorn import http_get
from trio_wsroutes import BoundAddress, WebSocketServer

ServeLive = Callable[[WebSocketServer], AbstractAsyncContextManager[BoundAddress]]

TIMEOUT = 10
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def connect(url: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(url, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT)


async def send(ws: WebSocketConnection, envelope: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(envelope))


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        raw = await ws.get_message()
    assert isinstance(raw, str)
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


async def test_chat_example_two_clients_talk(serve_live: ServeLive) -> None:
    async with serve_live(chat_server) as address:
        url = address.ws_url + "/chat/general"
        async with connect(url) as alice:
            hello_alice = await receive(alice)
            assert hello_alice["type"] == "joined"
            assert hello_alice["data"]["room"] == "general"
            assert hello_alice["data"]["user_count"] == 1

            async with connect(url) as bob:
                hello_bob = await receive(bob)
                assert hello_bob["type"] == "joined"
                assert hello_bob["data"]["user_count"] == 2

                await send(bob, {"type": "set_name", "data": {"name": "bob"}})
                await send(bob, {"type": "chat", "data": {"text": "hello alice"}})
                expected = {
                    "type": "message",
                    "data": {"user": "bob", "text": "hello alice", "room": "general"},
                }
                assert await receive(alice) == expected
                assert await receive(bob) == expected  # the sender sees its own line

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


@pytest.mark.transports("hypercorn")  # the page is served by the http_app
async def test_chat_example_serves_its_page_over_http(serve_live: ServeLive) -> None:
    async with serve_live(chat_server) as address:
        response = await http_get(address, "/")
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        assert b"<html" in response.body.lower()

        missing = await http_get(address, "/nope")
        assert missing.status == 404


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_readme_run_command_serves_the_chat() -> None:
    """``python -m examples.chat`` (the README's command) as a real process."""
    port = free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "examples.chat", "--port", str(port)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = bytearray()
    try:
        assert process.stdout is not None
        wanted = f"http://127.0.0.1:{port}".encode()
        with trio.fail_after(TIMEOUT):
            while wanted not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, f"the example exited early: {output.decode(errors='replace')}"
                output += chunk

            async with connect(f"ws://127.0.0.1:{port}/chat/readme") as ws:
                joined = await receive(ws)
                assert joined["type"] == "joined"
                assert joined["data"]["room"] == "readme"
                await send(ws, {"type": "ping", "data": {"timestamp": 3.25}, "id": 1})
                pong = await receive(ws)
                assert pong["type"] == "pong"
                assert pong["id"] == 1
                assert pong["data"]["timestamp"] == 3.25
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
