"""The access log: one record per connection when it ends and one per refused upgrade,
on the ``trio_wsroutes.access`` logger, checked field by field on both transports."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import HandshakeError, open_websocket_url

from tests._messages import Ping, Pong
from tests.conftest import ServeLive, wait_until
from trio_wsroutes import (
    Connection,
    Context,
    JSONFormatter,
    Request,
    WebSocketServer,
    create_websocket_route,
)

TIMEOUT = 20


@attrs.frozen
class User:
    id: str
    name: str


@attrs.frozen
class Bye:
    code: int


def app(**options: Any) -> WebSocketServer:
    route = create_websocket_route("/rooms/:room").server_messages(Pong)

    def authenticate(request: Request) -> User | None:
        token = request.query.get("token")
        return User(token, "Ada") if token else None

    route.authenticate(authenticate)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong], data: Ping, ctx: Context[User]) -> Pong:
        return Pong(data.n)

    @route.on("bye", Bye)
    async def bye(ws: Connection[Pong], data: Bye, ctx: Context[User]) -> None:
        await ws.close(data.code, "see you")

    return WebSocketServer([route], **options)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access() -> Iterator[Records]:
    logger = logging.getLogger("trio_wsroutes.access")
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.access_fields}  # type: ignore[attr-defined]


async def test_a_closed_connection_is_logged_with_what_went_through_it(
    serve_live: ServeLive, access: Records
) -> None:
    server = app(user_id=lambda user: f"user-{user.id}")
    sent = [json.dumps({"type": "ping", "data": {"n": n}}) for n in range(3)]
    bye = json.dumps({"type": "bye", "data": {"code": 4100}})
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address:
            url = f"ws://127.0.0.1:{address.port}/rooms/blue?token=7"
            async with open_websocket_url(url) as ws:
                local = ws.local
                answers: list[str] = []
                for frame in sent:
                    await ws.send_message(frame)
                    answer = await ws.get_message()
                    assert isinstance(answer, str)
                    answers.append(answer)
                await ws.send_message(bye)
                await wait_until(lambda: ws.closed is not None)
            await wait_until(lambda: len(access.records) == 1)
    [record] = access.records
    assert record.name == "trio_wsroutes.access"
    assert record.levelno == logging.INFO
    got = fields(record)
    connection_id = got.pop("connection_id")
    assert isinstance(connection_id, str) and len(connection_id) == 32
    duration = got.pop("duration")
    assert isinstance(duration, float) and duration > 0
    assert got == {
        "event": "close",
        "route": "/rooms/:room",
        "path": "/rooms/blue",
        "user_id": "user-7",
        "client": f"127.0.0.1:{local.port}",  # type: ignore[union-attr]
        "messages_in": 4,
        "bytes_in": sum(len(f) for f in sent) + len(bye),
        "messages_out": 3,
        "bytes_out": sum(len(a.encode()) for a in answers),
        "close_code": 4100,
        "close_reason": "see you",
        "closed_by": "server",
    }
    text = record.getMessage()
    assert "/rooms/blue" in text and "4100" in text and connection_id in text


async def test_a_client_that_leaves_without_a_close_frame_is_logged_as_the_network(
    serve_live: ServeLive, access: Records
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_live(app()) as address:
            stream = await trio.open_tcp_stream("127.0.0.1", address.port)
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            await stream.send_all(
                (
                    f"GET /rooms/red?token=abc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            response = b""
            while b"\r\n\r\n" not in response:
                response += await stream.receive_some()
            assert response.startswith(b"HTTP/1.1 101")
            await stream.aclose()
            await wait_until(lambda: len(access.records) == 1)
    got = fields(access.records[0])
    assert (got["close_code"], got["closed_by"]) == (1006, "network")
    assert got["user_id"] == "abc"  # the default: the user's ``id``
    assert got["messages_in"] == got["messages_out"] == 0


async def test_refused_upgrades_are_logged_with_status_and_code(
    serve_live: ServeLive, access: Records
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_live(app()) as address, AsyncExitStack() as stack:
            for path in ("/rooms/green", "/nowhere"):
                with pytest.raises(HandshakeError):
                    await stack.enter_async_context(
                        open_websocket_url(f"ws://127.0.0.1:{address.port}{path}")
                    )
            await wait_until(lambda: len(access.records) == 2)
    unauthorized, not_found = (fields(r) for r in access.records)
    assert unauthorized == {
        "event": "deny",
        "route": "/rooms/:room",
        "path": "/rooms/green",
        "client": unauthorized["client"],
        "status": 401,
        "code": "UNAUTHORIZED",
    }
    assert unauthorized["client"].startswith("127.0.0.1:")
    assert (not_found["route"], not_found["status"], not_found["code"]) == (
        None,
        404,
        "NOT_FOUND",
    )


async def test_the_client_address_is_the_one_trusted_proxies_vouch_for(
    serve_live: ServeLive, access: Records
) -> None:
    server = app(trusted_proxies=["127.0.0.1"])
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address:
            with pytest.raises(HandshakeError):
                async with open_websocket_url(
                    f"ws://127.0.0.1:{address.port}/rooms/x",
                    extra_headers=[("X-Forwarded-For", "203.0.113.9")],
                ):
                    pass
            await wait_until(lambda: len(access.records) == 1)
    assert fields(access.records[0])["client"].startswith("203.0.113.9")


async def test_nothing_is_logged_or_formatted_while_the_logger_is_off(
    serve_live: ServeLive,
) -> None:
    logger = logging.getLogger("trio_wsroutes.access")
    handler = Records()
    logger.addHandler(handler)
    try:
        assert not logger.isEnabledFor(logging.INFO)  # Python's default: WARNING
        with trio.fail_after(TIMEOUT):
            async with serve_live(app()) as address:
                async with open_websocket_url(f"ws://127.0.0.1:{address.port}/rooms/a?token=1"):
                    pass
                with pytest.raises(HandshakeError):
                    async with open_websocket_url(f"ws://127.0.0.1:{address.port}/x"):
                        pass
    finally:
        logger.removeHandler(handler)
    assert handler.records == []


def test_the_json_formatter_writes_one_object_per_record_with_the_access_fields() -> None:
    record = logging.LogRecord(
        "trio_wsroutes.access", logging.INFO, __file__, 1, "hi %s", ("x",), None
    )
    for name, value in {"event": "deny", "status": 403, "client": None}.items():
        setattr(record, name, value)
    record.access_fields = ("event", "status", "client")
    line = JSONFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data.pop("time").endswith("+00:00")
    assert data == {
        "level": "INFO",
        "logger": "trio_wsroutes.access",
        "message": "hi x",
        "event": "deny",
        "status": 403,
        "client": None,
    }
