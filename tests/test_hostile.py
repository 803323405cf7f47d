"""Property-based hostile input over real sockets, in both transports.

Each Hypothesis example starts a fresh server on 127.0.0.1, opens a bystander connection
and a hostile one, sends the hostile frames, and checks what a user relies on: every
frame gets a defined answer (a reply, an error envelope with a documented code, or a
close with a documented code), no exception text reaches the client, and the bystander
still works.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests._messages import Ping, Pong
from tests.conftest import live_server
from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message

CODES = {"INVALID_JSON", "INVALID_MESSAGE", "UNKNOWN_TYPE", "VALIDATION_ERROR", "INTERNAL_ERROR"}
CLOSE_CODES = {1003, 1007, 1009, 1011}
LEAK = re.compile(r"Traceback|Error\(|Exception|<class |File \"")


@attrs.frozen
class Item:
    name: str = attrs.field(validator=attrs.validators.max_len(50))
    tags: list[str] = attrs.Factory(list)
    price: float = 0.0


@message("stored")
@attrs.frozen
class Stored:
    name: str


def make_server() -> WebSocketServer:
    route = create_websocket_route("/h").server_messages(Pong, Stored)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong | Stored], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    @route.on("item", Item)
    async def item(ws: Connection[Pong | Stored], data: Item, ctx: Context[None]) -> Stored:
        if data.name == "boom":
            raise RuntimeError("secret internal detail")
        return Stored(data.name)

    return WebSocketServer([route], max_payload_length=4096)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "item", "nope", ""]) | st.integers()},
    optional={
        "data": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "n": json_values,
                "name": json_values | st.just("boom"),
                "tags": json_values,
                "price": json_values,
            },
        ),
        "id": json_values,
    },
)
# The standard json module writes integers of any size (orjson refuses over 64 bits).
text_frames = (
    envelopes.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=200)
    | st.just("[" * 3000 + "]" * 3000)
    | st.just("x" * 5000)
)
frames = st.lists(text_frames | st.binary(max_size=64), min_size=1, max_size=12)


async def next_json(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        value: dict[str, Any] = orjson.loads(await ws.get_message())
    return value


async def scenario(transport: str, hostile: list[str | bytes]) -> None:
    async with live_server(make_server(), transport) as address:
        url = f"{address.ws_url}/h"
        async with open_websocket_url(url) as bystander, open_websocket_url(url) as ws:
            try:
                for frame in hostile:
                    await ws.send_message(frame)
                    if isinstance(frame, bytes):
                        with trio.fail_after(5):
                            await ws.get_message()
                        pytest.fail("a binary frame on a route without on_binary got an answer")
                    answer = await next_json(ws)
                    assert not LEAK.search(orjson.dumps(answer).decode()), answer
                    if answer["type"] == "error":
                        assert answer["code"] in CODES, answer
                        if answer["code"] == "INTERNAL_ERROR":
                            assert answer["error"] == "Internal server error"
                    else:
                        assert answer["type"] in ("pong", "stored"), answer
            except ConnectionClosed as closed:
                assert closed.reason.code in CLOSE_CODES, closed.reason
            # Whatever happened to the hostile connection, the bystander is fine.
            await bystander.send_message('{"type": "ping", "data": {"n": 7}, "id": "b"}')
            assert await next_json(bystander) == {"type": "pong", "data": {"n": 7}, "id": "b"}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=frames)
def test_hostile_frames_get_defined_answers(transport: str, hostile: list[str | bytes]) -> None:
    # A plain function: each example runs its own Trio run with a fresh server.
    trio.run(scenario, transport, hostile)
