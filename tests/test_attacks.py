"""Attacks from issue 20, one test each: what the server does, and the bound it keeps.

Every test is small and bounded (KiB to a few MiB, seconds), runs on 127.0.0.1 only and
stops what it starts. Those that apply to both transports take ``serve_live`` and run on
each (``transport``). Each failed before its fix; the numbers measured before and after
are in ``docs/topics/guarantees.rst`` ("Attacks and their bounds").
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import orjson
import trio

from tests._rawws import TEXT, raw_connect
from tests.conftest import ServeLive
from trio_wsroutes import (
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)

TIMEOUT = 10


@attrs.frozen
class Item:
    name: str
    qty: int


@attrs.frozen
class Order:
    items: list[Item]


@attrs.frozen
class Ping:
    n: int


@message("pong")
@attrs.frozen
class Pong:
    n: int


def shop(**options: Any) -> WebSocketServer:
    route = create_websocket_route("/shop").server_messages(Pong)

    @route.on("order", Order)
    async def order(ws: Connection[Pong], data: Order, ctx: Context[None]) -> None:
        pass

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    return WebSocketServer([route], **options)


# -- 2. validation-error amplification -----------------------------------------------------


async def test_validation_errors_are_bounded_in_size_and_time(serve_live: ServeLive) -> None:
    # 1 MiB of [{}, {}, ...] for a list[Item]: before, a 50-72 MB error reply after 25 s
    # of validation on the event loop (+1.5 GiB); now the first problems, one "and N
    # more" entry, and validation that stops after MAX_PROBLEMS.
    attack = b'{"type":"order","id":1,"data":{"items":[' + b",".join([b"{}"] * 350_000) + b"]}}"
    assert len(attack) > 1024 * 1024 - 1024
    async with serve_live(shop()) as address:
        with trio.fail_after(TIMEOUT):
            async with raw_connect(address, "/shop") as raw, raw_connect(address, "/shop") as by:
                started = time.monotonic()
                await raw.send(TEXT, attack)
                reply = await raw.receive_data()
                elapsed = time.monotonic() - started
                # A bystander is served at once.
                await by.send(TEXT, b'{"type":"ping","id":2,"data":{"n":2}}')
                assert orjson.loads((await by.receive_data()).payload)["data"] == {"n": 2}
    assert reply.opcode == TEXT
    assert len(reply.payload) < 4096 + 512
    body = orjson.loads(reply.payload)
    assert body["code"] == "VALIDATION_ERROR"
    assert body["id"] == 1
    assert len(body["details"]) == 21
    assert body["details"][0] == {
        "path": "$.data.items[0].name",
        "message": "required field missing",
    }
    assert body["details"][-1] == {
        "path": "$.data",
        "message": "and at least 80 more problems (checking stopped after 100)",
    }
    assert elapsed < 3.0, elapsed
