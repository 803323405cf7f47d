"""Mistakes fail when the route is defined, with a message naming what is wrong, and
what slips through (a message the route never declared) is refused at run time, never
sent."""

from __future__ import annotations

import decimal
import logging
from typing import Any

import attrs
import pytest

from tests._messages import Ping, Pong
from trio_wsroutes import (
    CloseCode,
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import TestClient, TransportName


@message("other")
@attrs.frozen
class Other:
    n: int


# -- handler signatures ---------------------------------------------------------------


def test_a_message_handler_with_too_few_parameters_fails_at_definition() -> None:
    route = create_websocket_route("/r")

    async def two(ws: Any, data: Any) -> None: ...

    with pytest.raises(TypeError) as caught:
        route.on("ping", Ping)(two)
    error = str(caught.value)
    assert "handler for 'ping'" in error
    assert "test_definitions." in error  # where it is
    assert "cannot be called as two(ws, data, ctx)" in error
    assert "it takes (ws, data)" in error


def test_a_message_handler_with_a_required_keyword_only_parameter_fails() -> None:
    route = create_websocket_route("/r")

    async def keyword(ws: Any, data: Any, ctx: Any, *, extra: int) -> None: ...

    with pytest.raises(TypeError, match=r"keyword\(ws, data, ctx\).*'extra'.*\*, extra"):
        route.on("ping", Ping, keyword)


@pytest.mark.parametrize(
    ("hook", "called_as"),
    [
        ("on_connect", "(ws, ctx)"),
        ("on_close", "(ws, code, reason, ctx)"),
        ("on_error", "(ws, error, ctx)"),
        ("on_binary", "(ws, data, ctx)"),
        ("on_text", "(ws, text, ctx)"),
    ],
)
def test_hooks_with_the_wrong_parameters_fail_at_definition(hook: str, called_as: str) -> None:
    route = create_websocket_route("/r")

    async def one(ws: Any) -> None: ...

    with pytest.raises(TypeError) as caught:
        getattr(route, hook)(one)
    assert f"{hook} " in str(caught.value)
    assert f"cannot be called as one{called_as}" in str(caught.value)


def test_handlers_with_defaults_and_star_args_are_accepted() -> None:
    route = create_websocket_route("/r")

    async def flexible(*args: Any, extra: int = 0) -> None: ...

    async def close(ws: Any, code: int, reason: str, ctx: Any, more: int = 1) -> None: ...

    route.on("ping", Ping, flexible)
    route.on_close(close)


def test_a_sync_handler_fails_at_definition() -> None:
    def sync(ws: Any, data: Any, ctx: Any) -> None: ...

    with pytest.raises(TypeError, match="must be an async function"):
        create_websocket_route("/r").on("ping", Ping, sync)  # type: ignore[arg-type]


# -- message classes --------------------------------------------------------------------


def test_a_client_schema_the_converter_cannot_read_fails_at_definition() -> None:
    @attrs.frozen
    class Bad:
        value: complex

    with pytest.raises(TypeError) as caught:
        create_websocket_route("/r").on("bad", Bad)
    error = str(caught.value)
    assert "route '/r' .on('bad')" in error
    assert "field 'value'" in error
    assert "complex" in error
    assert "trio_wsroutes.converter" in error


def test_a_server_message_the_converter_cannot_write_fails_at_definition() -> None:
    @message("bad")
    @attrs.frozen
    class Bad:
        value: object

    with pytest.raises(TypeError) as caught:
        create_websocket_route("/r").server_messages(Bad)
    error = str(caught.value)
    assert "route '/r' server message" in error
    assert "Bad" in error
    assert "field 'value'" in error
    assert "trio_wsroutes.converter" in error


def test_decimal_server_messages_are_supported() -> None:
    @message("price")
    @attrs.frozen
    class Price:
        amount: decimal.Decimal

    create_websocket_route("/r").server_messages(Price)


@pytest.mark.parametrize("reserved", ["error", "ack", "refresh"])
def test_reserved_wire_types_are_refused(reserved: str) -> None:
    with pytest.raises(ValueError, match="framework"):
        message(reserved)
    with pytest.raises(ValueError, match="framework"):
        create_websocket_route("/r").on(reserved, Ping)


def test_a_route_freezes_once_served() -> None:
    route = create_websocket_route("/r")
    server = WebSocketServer([route])

    async def ping(ws: Any, data: Ping, ctx: Any) -> None: ...

    route.on("ping", Ping, ping)  # still before serving: fine
    server._admitter()  # pyright: ignore[reportPrivateUsage]  # what serving does first
    with pytest.raises(RuntimeError, match="already built"):
        route.on("late", Ping, ping)


# -- what handlers say they send -----------------------------------------------------------


def test_a_reply_the_route_does_not_declare_fails_when_the_handler_is_registered() -> None:
    route = create_websocket_route("/r").server_messages(Pong)

    async def reply(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Other:
        return Other(data.n)

    with pytest.raises(TypeError) as caught:
        route.on("ping", Ping, reply)
    assert str(caught.value) == (
        "the handler for 'ping' of route '/r': its return annotation names Other, which "
        "the route does not declare (it declares Pong): add it to .server_messages()"
    )


def test_a_connection_claiming_undeclared_messages_fails_for_handlers_and_hooks() -> None:
    route = create_websocket_route("/r").server_messages(Pong)

    async def handler(ws: Connection[Pong | Other], data: Ping, ctx: Context[None]) -> None:
        pass

    async def joined(ws: Connection[Other], ctx: Context[None]) -> None:
        pass

    with pytest.raises(TypeError, match=r"its ws: Connection\[\.\.\.\] annotation names Other"):
        route.on("ping", Ping, handler)
    with pytest.raises(TypeError, match="the on_connect hook of route '/r'"):
        route.on_connect(joined)


def test_a_route_that_sends_messages_without_declaring_any_fails_when_built() -> None:
    # Before, it sent them happily and its generated types said it sent only error | ack.
    route = create_websocket_route("/r")

    @route.on("ping", Ping)
    async def ping(ws: Connection[Any], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    with pytest.raises(TypeError) as caught:
        WebSocketServer([route])._admitter()  # what serving (or route.build()) does first
    assert "declares no server messages: add .server_messages(Pong, ...)" in str(caught.value)


def test_a_reply_that_is_not_a_message_class_gets_the_right_advice() -> None:
    route = create_websocket_route("/r").server_messages(Pong)

    async def reply(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> dict[str, int]:
        return {"n": data.n}

    with pytest.raises(TypeError, match=r"handlers return \(and send\) instances of classes"):
        route.on("ping", Ping, reply)


def test_client_messages_must_list_every_handled_class() -> None:
    route = create_websocket_route("/r").server_messages(Pong).client_messages(Ping)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    @route.on("other", Other)
    async def other(ws: Connection[Pong], data: Other, ctx: Context[None]) -> None:
        pass

    with pytest.raises(TypeError, match=r"handles 'other' \(Other\) but .client_messages\(\)"):
        route.build()


def test_annotations_that_cannot_be_resolved_are_left_to_run_time() -> None:
    route = create_websocket_route("/r").server_messages(Pong)

    @route.on("ping", Ping)
    async def ping(  # type: ignore[name-defined]
        ws: Connection[Pong],
        data: Ping,
        ctx: Context[Unknown],  # noqa: F821
    ) -> Later:  # noqa: F821
        return Pong(data.n)  # type: ignore[return-value]

    route.build()  # no error: the run-time check still refuses an undeclared message


# -- at run time --------------------------------------------------------------------------


def _undeclared_route() -> Any:
    route = create_websocket_route("/r").server_messages(Pong)

    @route.on("send", Ping)
    async def send(ws: Connection[Any], data: Ping, ctx: Context[None]) -> None:
        await ws.send(Other(data.n))  # Other is not declared

    @route.on("reply", Ping)
    async def reply(ws: Connection[Any], data: Ping, ctx: Context[None]) -> Any:
        return Other(data.n)

    return route


async def test_a_handler_returning_a_dict_is_told_to_return_message_classes(
    memory_transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    route = create_websocket_route("/r").server_messages(Pong)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Any:
        return {"type": "pong", "data": {"n": data.n}}

    server = WebSocketServer([route])
    with caplog.at_level(logging.ERROR, logger="trio_wsroutes"):
        async with (
            TestClient(server, transport=memory_transport) as client,
            client.connect("/r") as ws,
        ):
            await ws.send("ping", {"n": 1}, id=1)
            assert (await ws.receive())["code"] == "INTERNAL_ERROR"
    assert "handlers return (and send) instances of classes decorated with @message" in (
        caplog.text
    )
    assert "add it to .server_messages()" not in caplog.text


@pytest.mark.parametrize("kind", ["send", "reply"])
async def test_an_undeclared_server_message_is_refused_and_logged(
    kind: str, memory_transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    server = WebSocketServer([_undeclared_route()])
    with caplog.at_level(logging.ERROR, logger="trio_wsroutes"):
        async with (
            TestClient(server, transport=memory_transport) as client,
            client.connect("/r") as ws,
        ):
            await ws.send(kind, {"n": 1}, id=1)
            answer = await ws.receive()
            assert answer["type"] == "error"
            assert answer["code"] == "INTERNAL_ERROR"
            assert "Other" not in str(answer)  # no exception text reaches the client
            assert await ws.wait_closed() == CloseCode.INTERNAL_ERROR
    assert "Other is not a server message of route '/r' (it declares Pong)" in caplog.text


# -- unknown keys ----------------------------------------------------------------------


def _route(path: str = "/r") -> Any:
    route = create_websocket_route(path).server_messages(Pong)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    return route


async def test_unknown_keys_are_ignored_by_default(memory_transport: TransportName) -> None:
    async with (
        TestClient(WebSocketServer([_route()]), transport=memory_transport) as client,
        client.connect("/r") as ws,
    ):
        reply = await ws.request("ping", {"n": 1, "extra": True})
        assert reply["data"] == {"n": 1}


async def test_unknown_keys_can_be_forbidden_server_wide_or_per_route(
    memory_transport: TransportName,
) -> None:
    strict = WebSocketServer([_route("/a")], forbid_unknown_keys=True)
    per_route = WebSocketServer([_route("/a").forbid_unknown_keys(), _route("/b")])
    for server, refusing, allowing in ((strict, "/a", None), (per_route, "/a", "/b")):
        async with TestClient(server, transport=memory_transport) as client:
            async with client.connect(refusing) as ws:
                reply = await ws.request("ping", {"n": 1, "extra": True})
                assert reply["code"] == "VALIDATION_ERROR"
                assert reply["details"] == [
                    {"path": "$.data.extra", "message": 'unknown field "extra"'}
                ]
            if allowing is not None:
                async with client.connect(allowing) as ws:
                    assert (await ws.request("ping", {"n": 2, "x": 0}))["data"] == {"n": 2}
    # A route's own setting wins over the server's.
    lenient = WebSocketServer([_route("/a").forbid_unknown_keys(False)], forbid_unknown_keys=True)
    async with TestClient(lenient, transport=memory_transport) as client:
        async with client.connect("/a") as ws:
            assert (await ws.request("ping", {"n": 3, "x": 0}))["data"] == {"n": 3}
