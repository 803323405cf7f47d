"""The tutorial's tests, as a reader would write them (pytest-trio)."""

# [tests]
from __future__ import annotations

import pytest

from trio_wsroutes.testing import TestClient, WebSocketClosed

from chat import server


async def test_two_people_chat() -> None:
    async with (
        TestClient(server) as client,
        client.connect("/rooms/lobby?name=ada") as ada,
        client.connect("/rooms/lobby?name=grace") as grace,
    ):
        await ada.send("say", {"text": "hello"})
        for ws in (ada, grace):
            assert await ws.receive() == {"type": "said", "data": {"name": "ada", "text": "hello"}}


async def test_ping_is_answered_with_the_request_id() -> None:
    async with TestClient(server) as client, client.connect("/rooms/x?name=ada") as ws:
        reply = await ws.request("ping", {"sent_at": 1.5})
        assert reply["type"] == "pong"
        assert reply["data"]["sent_at"] == 1.5


async def test_bad_input_gets_an_error_and_the_connection_stays() -> None:
    async with TestClient(server) as client, client.connect("/rooms/x?name=ada") as ws:
        error = await ws.request("say", {"text": ""})
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"][0]["path"] == "$.data.text"
        assert (await ws.request("ping", {"sent_at": 2.0}))["type"] == "pong"


async def test_a_name_is_required() -> None:
    async with TestClient(server) as client, client.connect("/rooms/x") as ws:
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive()
        assert closed.value.code == 4000


# [/tests]
