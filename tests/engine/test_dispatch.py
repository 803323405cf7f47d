"""Dispatch alone, over a transport in memory: answers, and the failure policy (what an
exception does depends only on where it is raised)."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

from tests.engine._fake import FakeTransport
from tests.engine._spec import spec_of
from trio_wsroutes import (
    Connection,
    Context,
    Headers,
    MemoryBroker,
    MessageError,
    Request,
    create_websocket_route,
    message,
)
from trio_wsroutes._engine import new_context, run_connection
from trio_wsroutes._engine.dispatch import FAILURE_POLICY, Failure


@attrs.frozen
class Ask:
    n: int


@message("told")
@attrs.frozen
class Told:
    n: int


def app(events: list[str]) -> Any:
    route = create_websocket_route("/d").server_messages(Told)

    @route.on("ask", Ask)
    async def ask(ws: Connection[Told], data: Ask, ctx: Context[None]) -> Told | None:
        if data.n == 0:
            return None
        if data.n == 1:
            raise MessageError("no", "NOPE")
        if data.n == 2:
            raise RuntimeError("secret details")
        return Told(data.n)

    @route.on_error
    async def on_error(ws: Connection[Told], error: Exception, ctx: Context[None]) -> None:
        events.append(f"on_error {type(error).__name__}")
        raise ValueError("on_error fails too")

    @route.on_close
    async def on_close(ws: Connection[Told], code: int, reason: str, ctx: Context[None]) -> None:
        events.append(f"on_close {code}")
        raise ValueError("on_close fails too")

    return route


async def run(messages: list[str]) -> tuple[list[dict[str, Any]], FakeTransport, list[str]]:
    events: list[str] = []
    transport = FakeTransport()
    connection: Connection[Any] = Connection(
        transport=transport,
        spec=spec_of(app(events)),
        context=new_context("c1", None, Request(path="/d", headers=Headers())),
        broker=MemoryBroker(),
    )
    for text in messages:
        await transport.feed(text)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_connection, connection)
            await trio.testing.wait_all_tasks_blocked()
            if not connection.closed:
                await connection.close()
    return [orjson.loads(f.payload) for f in transport.written], transport, events


def test_the_policy_names_every_place_application_code_runs() -> None:
    assert FAILURE_POLICY["handler"] is Failure.ENDS_CONNECTION
    assert FAILURE_POLICY["on_connect"] is Failure.ENDS_CONNECTION
    assert FAILURE_POLICY["on_error"] is Failure.IS_LOGGED
    assert FAILURE_POLICY["on_close"] is Failure.IS_LOGGED


async def test_every_envelope_with_an_id_gets_one_answer_and_bad_input_keeps_it_open() -> None:
    sent, transport, events = await run(
        [
            '{"type":"ask","id":1,"data":{"n":5}}',
            '{"type":"ask","id":2,"data":{"n":0}}',
            '{"type":"ask","id":3,"data":{"n":1}}',
            '{"type":"ask","id":4,"data":{"n":"x"}}',
            '{"type":"nope","id":5}',
        ]
    )
    assert sent[0] == {"type": "told", "data": {"n": 5}, "id": 1}
    assert sent[1] == {"type": "ack", "id": 2}
    assert (sent[2]["code"], sent[2]["id"]) == ("NOPE", 3)
    assert (sent[3]["code"], sent[3]["id"]) == ("VALIDATION_ERROR", 4)
    assert (sent[4]["code"], sent[4]["id"]) == ("UNKNOWN_TYPE", 5)
    assert transport.closed_with == (1000, "")  # closed by the test, not by an error
    # A MessageError is deliberate: on_error runs for validation failures only here.
    assert events[:2] == ["on_error ValidationError", "on_error ProtocolError"]


async def test_a_handler_exception_ends_the_connection_and_hook_failures_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="trio_wsroutes"):
        sent, transport, events = await run(
            ['{"type":"ask","id":7,"data":{"n":2}}', '{"type":"ask","id":8,"data":{"n":5}}']
        )
    assert sent == [
        {"type": "error", "error": "Internal server error", "code": "INTERNAL_ERROR", "id": 7}
    ]
    assert transport.closed_with == (1011, "internal error")
    assert events == ["on_error RuntimeError", "on_close 1011"]
    assert "secret details" not in str(sent)
    logged = [r.getMessage() for r in caplog.records]
    assert any("on_error hook" in line for line in logged)
    assert any("on_close hook" in line for line in logged)
