"""The wire protocol end to end, through the in-memory client.

Each bad input gets its one documented error envelope, and the connection stays usable;
handler results, ``MessageError``, crashes, hooks, frame limits and rate limits behave as
``docs/topics/replies-and-errors.rst`` says (the envelopes themselves:
``trio_wsroutes/_envelope.py``).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._messages import Ping, Pong
from trio_wsroutes import (
    Connection,
    Context,
    ErrorDetail,
    MessageError,
    ProtocolError,
    ValidationError,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import TestClient, TestConnection, WebSocketClosed

# -- messages ----------------------------------------------------------------------------


@attrs.frozen
class Item:
    name: str
    count: int
    tags: list[str] = attrs.Factory(list)


@attrs.frozen
class Inner:
    value: int


@attrs.frozen
class Nested:
    inner: Inner


@attrs.frozen
class Named:
    name: str


@attrs.frozen
class Slow:
    n: int
    delay: float


@attrs.frozen
class Empty:
    pass


@message("item")
@attrs.frozen
class ItemOut:
    name: str
    count: int
    tags: list[str]


@message("echo")
@attrs.frozen
class Echo:
    text: str


SECRET = "sk-live-4f9c1d secret in /srv/app/handlers.py"


@attrs.define
class Recorder:
    """What the route's hooks saw."""

    errors: list[Exception] = attrs.Factory(list)
    closes: list[tuple[int, str]] = attrs.Factory(list)
    texts: list[str] = attrs.Factory(list)
    binary: list[bytes] = attrs.Factory(list)
    handled: list[str] = attrs.Factory(list)


def make_route(
    *, on_text: bool = False, on_binary: bool = False
) -> tuple[WebSocketRoute[None, Any], Recorder]:
    """A fresh route at ``/t`` (hooks record into a fresh Recorder)."""
    seen = Recorder()
    route = create_websocket_route("/t").server_messages(Pong, ItemOut, Echo)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Any], data: Ping, ctx: Context[None]) -> Pong:
        seen.handled.append(f"ping {data.n}")
        return Pong(n=data.n)

    @route.on("item", Item)
    async def item(ws: Connection[Any], data: Item, ctx: Context[None]) -> ItemOut:
        return ItemOut(name=data.name, count=data.count, tags=data.tags)

    @route.on("nested", Nested)
    async def nested(ws: Connection[Any], data: Nested, ctx: Context[None]) -> Pong:
        return Pong(n=data.inner.value)

    @route.on("named", Named)
    async def named(ws: Connection[Any], data: Named, ctx: Context[None]) -> Echo:
        return Echo(text=data.name)

    @route.on("slow", Slow)
    async def slow(ws: Connection[Any], data: Slow, ctx: Context[None]) -> Pong:
        await trio.sleep(data.delay)
        return Pong(n=data.n)

    @route.on("full", Empty)
    async def full(ws: Connection[Any], data: Empty, ctx: Context[None]) -> None:
        raise MessageError("Room is full", code="ROOM_FULL")

    @route.on("crash", Empty)
    async def crash(ws: Connection[Any], data: Empty, ctx: Context[None]) -> None:
        raise RuntimeError(SECRET)

    @route.on("bye", Empty)
    async def bye(ws: Connection[Any], data: Empty, ctx: Context[None]) -> None:
        await ws.close(4000, "bye")

    @route.on("silent", Empty)
    async def silent(ws: Connection[Any], data: Empty, ctx: Context[None]) -> None:
        seen.handled.append("silent")

    @route.on_error
    async def record_error(ws: Connection[Any], error: Exception, ctx: Context[None]) -> None:
        seen.errors.append(error)

    @route.on_close
    async def record_close(
        ws: Connection[Any], code: int, reason: str, ctx: Context[None]
    ) -> None:
        seen.closes.append((code, reason))

    if on_text:

        @route.on_text
        async def text(ws: Connection[Any], raw: str, ctx: Context[None]) -> None:
            seen.texts.append(raw)
            await ws.send(Echo(text=raw))

    if on_binary:

        @route.on_binary
        async def binary(ws: Connection[Any], data: bytes, ctx: Context[None]) -> None:
            seen.binary.append(data)
            await ws.send_binary(data[::-1])

    return route, seen


@asynccontextmanager
async def connected(
    route: WebSocketRoute[None, Any], **options: Any
) -> AsyncIterator[TestConnection]:
    server = WebSocketServer([route], **options)
    async with TestClient(server) as client, client.connect("/t") as ws:
        yield ws


async def assert_usable(ws: TestConnection, request_id: str | int = "still-alive") -> None:
    """The very next frame answers a valid ping: nothing stray was queued, nothing closed."""
    await ws.send("ping", {"n": 7}, id=request_id)
    assert await ws.receive() == {"type": "pong", "data": {"n": 7}, "id": request_id}


def error(code: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "error": text, "code": code, **extra}


NOT_JSON = error("INVALID_JSON", "Message is not valid JSON")
NOT_AN_OBJECT = error("INVALID_MESSAGE", "Message must be a JSON object with a 'type'")
BAD_TYPE = error("INVALID_MESSAGE", "Message 'type' must be a string")
BAD_ID = error("INVALID_MESSAGE", "Message 'id' must be a string or an integer")

DEEP = "[" * 10_000 + "]" * 10_000


# -- bad input: one documented error each, and the connection stays open ---------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("{not json", NOT_JSON, id="invalid-json"),
        pytest.param("", NOT_JSON, id="empty-frame"),
        pytest.param('{"type": "ping"', NOT_JSON, id="truncated"),
        pytest.param('{"type": "ping"} trailing', NOT_JSON, id="trailing-garbage"),
        pytest.param(DEEP, NOT_JSON, id="10000-deep-array"),
        pytest.param('{"type": "ping", "data": ' + DEEP + "}", NOT_JSON, id="deep-data"),
        pytest.param('{"type": "ping", "data": {"n": 1e400}}', NOT_JSON, id="1e400"),
        pytest.param('{"type": "named", "data": {"name": "\\ud800"}}', NOT_JSON, id="surrogate"),
        pytest.param("[1, 2]", NOT_AN_OBJECT, id="array"),
        pytest.param('"ping"', NOT_AN_OBJECT, id="string"),
        pytest.param("42", NOT_AN_OBJECT, id="number"),
        pytest.param("null", NOT_AN_OBJECT, id="null"),
        pytest.param("true", NOT_AN_OBJECT, id="boolean"),
        pytest.param('{"data": {"n": 1}}', BAD_TYPE, id="missing-type"),
        pytest.param('{"type": 5}', BAD_TYPE, id="number-type"),
        pytest.param('{"type": null}', BAD_TYPE, id="null-type"),
        pytest.param('{"type": ["ping"]}', BAD_TYPE, id="array-type"),
        pytest.param('{"type": 5, "id": "t1"}', {**BAD_TYPE, "id": "t1"}, id="bad-type-id-echoed"),
        pytest.param('{"type": "ping", "id": 1.5}', BAD_ID, id="float-id"),
        pytest.param('{"type": "ping", "id": 2.0}', BAD_ID, id="integral-float-id"),
        pytest.param('{"type": "ping", "id": true}', BAD_ID, id="bool-id"),
        pytest.param('{"type": "ping", "id": {"a": 1}}', BAD_ID, id="object-id"),
        pytest.param('{"type": "ping", "id": [1]}', BAD_ID, id="list-id"),
    ],
)
async def test_bad_frame_gets_its_error_and_the_connection_stays_open(
    raw: str, expected: dict[str, Any]
) -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send_text(raw)
        assert await ws.receive() == expected
        await assert_usable(ws)
    [reported] = seen.errors
    assert isinstance(reported, ProtocolError)
    assert reported.code == expected["code"]
    assert seen.handled == ["ping 7"]  # the bad frame reached no handler
    assert seen.closes == [(1000, "")]


async def test_unknown_type_echoes_the_id() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send("nope", {"x": 1}, id="u1")
        assert await ws.receive() == error("UNKNOWN_TYPE", "Unknown message type: 'nope'", id="u1")
        await ws.send("nope", id=9)
        assert (await ws.receive())["id"] == 9
        await assert_usable(ws)
    assert [(type(e), e.code) for e in seen.errors] == [(ProtocolError, "UNKNOWN_TYPE")] * 2


async def test_a_huge_unknown_type_is_not_echoed_in_full() -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send("x" * 100_000, id="big")
        reply = await ws.receive()
        assert reply["code"] == "UNKNOWN_TYPE"
        assert reply["id"] == "big"
        assert len(reply["error"]) < 200
        await assert_usable(ws)


async def test_wrong_field_types_give_validation_error_with_details() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send("item", {"name": 5, "count": "3", "tags": ["a", 1]}, id="v1")
        assert await ws.receive() == error(
            "VALIDATION_ERROR",
            "Invalid message: expected string, got integer at $.data.name",
            id="v1",
            details=[
                {"path": "$.data.name", "message": "expected string, got integer"},
                {"path": "$.data.count", "message": "expected integer, got string"},
                {"path": "$.data.tags[1]", "message": "expected string, got integer"},
            ],
        )
        await assert_usable(ws)
    [reported] = seen.errors
    assert isinstance(reported, ValidationError)
    assert reported.code == "VALIDATION_ERROR"
    assert reported.details[0] == ErrorDetail("$.data.name", "expected string, got integer")
    assert len(reported.details) == 3


@pytest.mark.parametrize(
    ("msg_type", "data", "path", "text"),
    [
        pytest.param("ping", {"n": 1.5}, "$.data.n", "expected integer, got number", id="float"),
        pytest.param("ping", {"n": True}, "$.data.n", "expected integer, got boolean", id="bool"),
        pytest.param("ping", {"n": "1"}, "$.data.n", "expected integer, got string", id="string"),
        pytest.param(
            "nested",
            {"inner": {"value": {"value": 1}}},
            "$.data.inner.value",
            "expected integer, got object",
            id="extra-nesting",
        ),
        pytest.param(
            "nested", {"inner": [{"value": 1}]}, "$.data.inner", "expected object, got array",
            id="nested-array",
        ),
        pytest.param("ping", [{"n": 1}], "$.data", "expected object, got array", id="data-array"),
        pytest.param("ping", "n=1", "$.data", "expected object, got string", id="data-string"),
        pytest.param("named", {}, "$.data.name", "required field missing", id="missing-field"),
    ],
)  # fmt: skip
async def test_validation_error_names_path_and_expectation(
    msg_type: str, data: Any, path: str, text: str
) -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send(msg_type, data, id=3)
        assert await ws.receive() == error(
            "VALIDATION_ERROR",
            f"Invalid message: {text} at {path}",
            id=3,
            details=[{"path": path, "message": text}],
        )
        await assert_usable(ws)


async def test_integer_too_large_for_64_bits_is_a_validation_error() -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send_text(
            '{"type": "ping", "id": "big", "data": {"n": 123456789012345678901234567890}}'
        )
        reply = await ws.receive()
        assert reply["code"] == "VALIDATION_ERROR"
        assert reply["id"] == "big"
        [detail] = reply["details"]
        assert detail["path"] == "$.data.n"
        await assert_usable(ws)


async def test_missing_data_is_an_empty_object() -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send_text('{"type": "ping", "id": "d1"}')
        assert await ws.receive() == {"type": "pong", "data": {"n": 0}, "id": "d1"}
        await ws.send_text('{"type": "named", "id": "d2"}')
        assert await ws.receive() == error(
            "VALIDATION_ERROR",
            "Invalid message: required field missing at $.data.name",
            id="d2",
            details=[{"path": "$.data.name", "message": "required field missing"}],
        )
        await assert_usable(ws)


async def test_null_data_is_a_validation_error() -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send_text('{"type": "ping", "data": null, "id": "n1"}')
        assert await ws.receive() == error(
            "VALIDATION_ERROR",
            "Invalid message: expected object, got null at $.data",
            id="n1",
            details=[{"path": "$.data", "message": "expected object, got null"}],
        )
        await assert_usable(ws)


async def test_unknown_keys_in_data_and_envelope_are_ignored() -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send_json({"type": "ping", "data": {"n": 2, "extra": [1]}, "id": "k", "v": 2})
        assert await ws.receive() == {"type": "pong", "data": {"n": 2}, "id": "k"}


# -- replies, MessageError, on_error -----------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc", "", 0, 42, -1, 2**63 - 1])
async def test_a_returned_message_is_the_reply_and_echoes_the_id(request_id: str | int) -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send("item", {"name": "pen", "count": 2}, id=request_id)
        assert await ws.receive() == {
            "type": "item",
            "data": {"name": "pen", "count": 2, "tags": []},
            "id": request_id,
        }


async def test_reply_without_request_id_has_no_id() -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        await ws.send("ping", {"n": 1})
        assert await ws.receive() == {"type": "pong", "data": {"n": 1}}


async def test_request_helper_gets_the_reply() -> None:
    route, _ = make_route()
    async with connected(route) as ws:
        reply = await ws.request("named", {"name": "ann"})
        assert reply["type"] == "echo"
        assert reply["data"] == {"text": "ann"}


async def test_handler_returning_none_acknowledges_an_id_and_sends_nothing_without() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send("silent", id="s")
        assert await ws.receive() == {"type": "ack", "id": "s"}
        await ws.send("silent")  # no id: nothing to answer
        await assert_usable(ws)
    assert seen.handled == ["silent", "silent", "ping 7"]


async def test_message_error_is_sent_as_is_and_skips_on_error() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send("full", {}, id="m1")
        assert await ws.receive() == error("ROOM_FULL", "Room is full", id="m1")
        await assert_usable(ws)
    assert seen.errors == []
    assert seen.closes == [(1000, "")]


async def test_on_error_sees_each_bad_input_in_order() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send_text("{oops")
        await ws.send("ping", {"n": "x"})
        await ws.send("nope")
        await ws.send("full")
        for _ in range(4):
            assert (await ws.receive())["type"] == "error"
        await assert_usable(ws)
    assert [(type(e), e.code) for e in seen.errors if isinstance(e, MessageError)] == [
        (ProtocolError, "INVALID_JSON"),
        (ValidationError, "VALIDATION_ERROR"),
        (ProtocolError, "UNKNOWN_TYPE"),
    ]
    assert len(seen.errors) == 3


# -- handler crashes ---------------------------------------------------------------------


async def drain(ws: TestConnection) -> tuple[list[str | bytes], int]:
    """Every frame the server sends until it closes, and the close code."""
    frames: list[str | bytes] = []
    while True:
        try:
            frames.append(await ws.receive_any())
        except WebSocketClosed as closed:
            return frames, closed.code


async def test_handler_crash_sends_internal_error_and_closes_with_1011() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send("crash", {}, id="c1")
        frames, code = await drain(ws)
        reason = ws.close_reason or ""
    assert code == 1011
    assert [orjson.loads(f) for f in frames] == [
        {"type": "error", "code": "INTERNAL_ERROR", "error": "Internal server error", "id": "c1"}
    ]
    everything = [*(f if isinstance(f, str) else f.decode() for f in frames), reason]
    assert not any("sk-live" in text or "RuntimeError" in text for text in everything)
    [crash] = seen.errors
    assert isinstance(crash, RuntimeError)
    assert str(crash) == SECRET
    assert [code for code, _ in seen.closes] == [1011]


async def test_a_crash_on_one_connection_leaves_another_alone() -> None:
    route, seen = make_route()
    server = WebSocketServer([route])
    async with (
        TestClient(server) as client,
        client.connect("/t") as first,
        client.connect("/t") as second,
    ):
        await assert_usable(second, "before")
        await first.send("crash", {}, id="c")
        assert await first.wait_closed() == 1011
        await assert_usable(second, "after")
    assert sorted(code for code, _ in seen.closes) == [1000, 1011]


# -- ordering ----------------------------------------------------------------------------


async def test_messages_of_a_connection_are_handled_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    route, _ = make_route()
    count = 8
    async with connected(route) as ws:
        # Earlier messages sleep longer: concurrent handling would reverse the replies.
        for n in range(count):
            await ws.send("slow", {"n": n, "delay": (count - n) * 0.1}, id=n)
        replies = [await ws.receive() for _ in range(count)]
    assert [(r["id"], r["data"]["n"]) for r in replies] == [(n, n) for n in range(count)]


# -- text, binary, closing ---------------------------------------------------------------


async def test_binary_frame_without_on_binary_closes_with_1003() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send_bytes(b"\x00\x01")
        assert await ws.wait_closed() == 1003
    assert [code for code, _ in seen.closes] == [1003]


async def test_on_binary_gets_the_bytes() -> None:
    route, seen = make_route(on_binary=True)
    async with connected(route) as ws:
        await ws.send_bytes(b"\x00\xff\x10abc")
        assert await ws.receive_bytes() == b"cba\x10\xff\x00"
        await ws.send_bytes(b"")
        assert await ws.receive_bytes() == b""
        await assert_usable(ws)
    assert seen.binary == [b"\x00\xff\x10abc", b""]


async def test_on_text_gets_raw_text_that_is_not_an_envelope() -> None:
    route, seen = make_route(on_text=True)
    raws = ["hello", "[1, 2]", "{broken", '{"data": 1}']
    async with connected(route) as ws:
        for raw in raws:
            await ws.send_text(raw)
            assert await ws.receive() == {"type": "echo", "data": {"text": raw}}
        # An envelope is still an envelope: an unknown type is an error, not raw text.
        await ws.send("nope", id="x")
        assert (await ws.receive())["code"] == "UNKNOWN_TYPE"
        await assert_usable(ws)
    assert seen.texts == raws


async def test_on_close_runs_once_with_the_client_code() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await assert_usable(ws)
        await ws.close(4001, "client bye")
    assert seen.closes == [(4001, "client bye")]


async def test_on_close_runs_once_when_the_client_leaves() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await assert_usable(ws)
    assert seen.closes == [(1000, "")]


async def test_close_from_a_handler_reaches_the_client() -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send("bye")
        assert await ws.wait_closed() == 4000
        assert ws.close_reason == "bye"
    assert seen.closes == [(4000, "bye")]


# -- limits ------------------------------------------------------------------------------


def ping_of_size(size: int) -> str:
    """A valid ping envelope of exactly ``size`` UTF-8 bytes."""
    frame = '{"type":"ping","id":"p","data":{"n":1},"pad":""}'
    return frame[:-2] + "x" * (size - len(frame)) + '"}'


async def test_frame_at_max_payload_length_is_handled() -> None:
    route, _ = make_route()
    async with connected(route, max_payload_length=1024) as ws:
        frame = ping_of_size(1024)
        assert len(frame.encode()) == 1024
        await ws.send_text(frame)
        assert await ws.receive() == {"type": "pong", "data": {"n": 1}, "id": "p"}


async def test_frame_over_max_payload_length_closes_with_1009() -> None:
    route, seen = make_route()
    async with connected(route, max_payload_length=1024) as ws:
        await ws.send_text(ping_of_size(1025))
        assert await ws.wait_closed() == 1009
    assert seen.handled == []
    assert [code for code, _ in seen.closes] == [1009]


async def test_max_payload_length_counts_utf8_bytes_not_characters() -> None:
    route, _ = make_route()
    async with connected(route, max_payload_length=1024) as ws:
        text = "€" * 400  # 400 characters, 1200 bytes
        await ws.send("named", {"name": text})
        assert await ws.wait_closed() == 1009


async def test_binary_frame_over_max_payload_length_closes_with_1009() -> None:
    route, seen = make_route(on_binary=True)
    async with connected(route, max_payload_length=1024) as ws:
        await ws.send_bytes(b"x" * 1024)
        assert await ws.receive_bytes() == b"x" * 1024
        await ws.send_bytes(b"x" * 1025)
        assert await ws.wait_closed() == 1009
    assert len(seen.binary) == 1


async def test_rate_limit_answers_rate_limited_and_skips_the_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    route, seen = make_route()
    route.rate_limit(1 / 30, burst=2)
    async with connected(route) as ws:
        for n in (1, 2):
            await ws.send("ping", {"n": n}, id=n)
            assert await ws.receive() == {"type": "pong", "data": {"n": n}, "id": n}
        await ws.send("ping", {"n": 3}, id=3)
        limited = await ws.receive()
        assert limited["type"] == "error"
        assert limited["code"] == "RATE_LIMITED"
        assert isinstance(limited["error"], str)
        assert limited.get("id") in (None, 3)
        # Tokens come back with time: one every 30 s.
        await trio.sleep(30)
        await assert_usable(ws)
        await ws.send("ping", {"n": 5}, id=5)
        assert (await ws.receive())["code"] == "RATE_LIMITED"
    assert seen.handled == ["ping 1", "ping 2", "ping 7"]
    assert seen.closes == [(1000, "")]


async def test_rate_limit_with_close_closes_with_1008(
    autojump_clock: trio.testing.MockClock,
) -> None:
    route, seen = make_route()
    route.rate_limit(1 / 30, burst=2, action="close")
    async with connected(route) as ws:
        for n in (1, 2):
            await ws.send("ping", {"n": n}, id=n)
            assert (await ws.receive())["id"] == n
        await ws.send("ping", {"n": 3}, id=3)
        assert await ws.wait_closed() == 1008
    assert seen.handled == ["ping 1", "ping 2"]
    assert [code for code, _ in seen.closes] == [1008]


# -- any envelope-shaped frame -----------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["ping", "item", "nested", "named", "nope"]) | json_values,
        "data": json_values
        | st.fixed_dictionaries(
            {}, optional={k: json_values for k in ("n", "name", "count", "tags", "inner")}
        ),
        "id": st.text(max_size=3) | st.integers(-5, 5) | json_values,
    },
)
DOCUMENTED = {"INVALID_JSON", "INVALID_MESSAGE", "UNKNOWN_TYPE", "VALIDATION_ERROR"}


@settings(max_examples=60, deadline=None)
@given(frame=envelopes | json_values)
async def test_any_json_frame_gets_one_answer_and_the_connection_survives(frame: Any) -> None:
    route, seen = make_route()
    async with connected(route) as ws:
        await ws.send_json(frame)
        reply = await ws.receive()
        if reply["type"] == "error":
            assert reply["code"] in DOCUMENTED
            assert set(reply) <= {"type", "error", "code", "id", "details"}
            for detail in reply.get("details", []):
                assert set(detail) == {"path", "message"}
                assert detail["path"].startswith("$.data")
        else:
            assert reply["type"] in ("pong", "item", "echo")
        if "id" in reply:
            assert reply["id"] == frame["id"]
        await assert_usable(ws, "after-fuzz")
    assert not any(isinstance(e, RuntimeError) for e in seen.errors)
