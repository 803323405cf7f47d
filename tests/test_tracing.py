"""OpenTelemetry tracing (the ``tracing`` option), over real sockets on both transports:
upgrade spans parented from ``traceparent``, a span per handled message linked to its
upgrade, the trace context carried between processes by ``RedisBroker`` (and checked
there), and the publish-to-delivery lag between processes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import attrs
import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once
from trio_websocket import HandshakeError, WebSocketConnection, open_websocket_url

from tests._http import http_request
from tests._messages import Ping, Pong
from tests._redis import RedisServer
from tests.conftest import ServeLive, wait_until
from tests.test_metrics import buckets, parse, value
from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    History,
    MessageError,
    Metrics,
    RedisBroker,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes._broker.redis import decode_wire, encode_wire
from trio_wsroutes._broker.redis._wire import authentic, wire_extensions
from trio_wsroutes._frames import Frame

TIMEOUT = 20
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECRET = "a shared secret, 32 bytes long!!"
WHISPER = "do not record me"  # in a payload: must not reach any span


@attrs.frozen
class Fail:
    code: str


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class Boom:
    text: str


@attrs.frozen
class Join:
    topic: str


@attrs.frozen
class Shout:
    topic: str
    n: int


@message("joined")
@attrs.frozen
class Joined:
    topic: str


Out = Pong | Joined


def app(**options: Any) -> WebSocketServer:
    """``/play/:room``: ping, fail (a MessageError), sleep (times out), boom (raises),
    join (subscribes), shout (publishes a pong on a topic); ``/secret`` refuses all."""
    route = create_websocket_route("/play/:room").server_messages(Pong, Joined)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Out], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    @route.on("fail", Fail)
    async def fail(ws: Connection[Out], data: Fail, ctx: Context[None]) -> None:
        raise MessageError("no", data.code)

    @route.on("sleep", Sleep)
    async def sleep(ws: Connection[Out], data: Sleep, ctx: Context[None]) -> None:
        await trio.sleep(data.seconds)

    @route.on("boom", Boom)
    async def boom(ws: Connection[Out], data: Boom, ctx: Context[None]) -> None:
        raise RuntimeError("boom")

    @route.on("join", Join)
    async def join(ws: Connection[Out], data: Join, ctx: Context[None]) -> Joined:
        await ws.subscribe(data.topic)
        return Joined(data.topic)

    @route.on("shout", Shout)
    async def shout(ws: Connection[Out], data: Shout, ctx: Context[None]) -> None:
        await ws.publish(data.topic, Pong(data.n))

    secret = create_websocket_route("/secret").authenticate(lambda request: None)
    return WebSocketServer([route, secret], handler_timeout=0.2, **options)


class Spans:
    """A ``TracerProvider`` that keeps every finished span in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if (s.name or "").startswith(prefix)]

    async def wait(self, prefix: str, count: int) -> list[ReadableSpan]:
        await wait_until(lambda: len(self.named(prefix)) >= count)
        return self.named(prefix)


@pytest.fixture
def spans() -> Iterator[Spans]:
    recorded = Spans()
    yield recorded
    recorded.provider.shutdown()


@pytest.fixture
def global_spans(monkeypatch: pytest.MonkeyPatch, spans: Spans) -> Spans:
    """``spans`` as the global tracer provider, for this test only (OpenTelemetry lets
    it be set once per process: its own tests reset these two the same way)."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    trace.set_tracer_provider(spans.provider)
    return spans


async def connect(
    address: BoundAddress, path: str, stack: AsyncExitStack, headers: list[tuple[str, str]] = ()
) -> WebSocketConnection:
    extra = [(k.encode(), v.encode()) for k, v in headers]
    url = f"ws://127.0.0.1:{address.port}{path}"
    return await stack.enter_async_context(open_websocket_url(url, extra_headers=extra))


async def ask(conn: WebSocketConnection, kind: str, id: int | None = None, **data: Any) -> Any:
    envelope: dict[str, Any] = {"type": kind, "data": data}
    if id is not None:
        envelope["id"] = id
    await conn.send_message(json.dumps(envelope))
    return json.loads(await conn.get_message())


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- upgrades ----------------------------------------------------------------------------


async def test_an_upgrade_span_continues_the_trace_of_the_request(
    serve_live: ServeLive, spans: Spans
) -> None:
    headers = [
        ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]
    with trio.fail_after(TIMEOUT):
        async with serve_live(app(tracing=spans.provider)) as address, AsyncExitStack() as stack:
            conn = await connect(address, "/play/lobby", stack, headers)
            assert await ask(conn, "ping", n=1) == {"type": "pong", "data": {"n": 1}}
            [upgrade] = await spans.wait("WS upgrade", 1)
    assert upgrade.name == "WS upgrade /play/:room"
    assert upgrade.kind is SpanKind.SERVER
    assert upgrade.parent is not None and upgrade.parent.is_remote
    assert (upgrade.parent.trace_id, upgrade.parent.span_id) == (
        int(TRACE_ID, 16),
        int(PARENT_ID, 16),
    )
    assert upgrade.context is not None and upgrade.context.trace_id == int(TRACE_ID, 16)
    assert dict(upgrade.context.trace_state) == {"congo": "t61rcWkgMzE"}
    assert attributes(upgrade) == {
        "url.path": "/play/lobby",
        "url.scheme": "ws",
        "network.protocol.name": "websocket",
        "client.address": "127.0.0.1",
        "http.route": "/play/:room",
        "http.response.status_code": 101,
        "wsroutes.outcome": "accepted",
    }
    assert upgrade.status.status_code is StatusCode.UNSET


async def test_a_denied_upgrade_span_records_the_status_and_the_code(
    serve_live: ServeLive, spans: Spans
) -> None:
    server = app(tracing=spans.provider, max_connections=1)
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            with pytest.raises(HandshakeError):
                await connect(address, "/secret", stack)
            with pytest.raises(HandshakeError):
                await connect(address, "/nowhere", stack)
            await connect(address, "/play/a", stack)
            with pytest.raises(HandshakeError):
                await connect(address, "/play/b", stack)  # over max_connections
            found = await spans.wait("WS upgrade", 4)
    by_path = {attributes(s)["url.path"]: s for s in found}
    unauthorized, missing, busy = by_path["/secret"], by_path["/nowhere"], by_path["/play/b"]
    assert attributes(by_path["/play/a"])["wsroutes.outcome"] == "accepted"
    assert unauthorized.name == "WS upgrade /secret"
    assert attributes(unauthorized)["http.response.status_code"] == 401
    assert attributes(unauthorized)["error.type"] == "UNAUTHORIZED"
    assert attributes(unauthorized)["wsroutes.outcome"] == "denied"
    assert unauthorized.status.status_code is StatusCode.UNSET  # the client's doing
    assert missing.name == "WS upgrade"  # no route: no route in the name
    assert (
        attributes(missing)["http.response.status_code"],
        attributes(missing)["error.type"],
    ) == (
        404,
        "NOT_FOUND",
    )
    assert "http.route" not in attributes(missing)
    assert attributes(busy)["http.response.status_code"] == 503
    assert attributes(busy)["error.type"] == "SERVER_BUSY"
    assert busy.status.status_code is StatusCode.ERROR  # 5xx: the server's


# -- handled messages --------------------------------------------------------------------


async def test_each_handled_message_gets_its_own_trace_linked_to_the_upgrade(
    serve_live: ServeLive, spans: Spans
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_live(app(tracing=spans.provider)) as address, AsyncExitStack() as stack:
            conn = await connect(address, "/play/lobby", stack)
            assert (await ask(conn, "ping", id=7, n=1))["type"] == "pong"
            assert (await ask(conn, "ping", n="one"))["code"] == "VALIDATION_ERROR"
            assert (await ask(conn, "fail", code="SOLD_OUT"))["code"] == "SOLD_OUT"
            assert (await ask(conn, "sleep", seconds=5))["code"] == "HANDLER_TIMEOUT"
            assert (await ask(conn, "nope"))["code"] == "UNKNOWN_TYPE"  # not a handled type
            assert (await ask(conn, "boom", id="b", text=WHISPER))["code"] == "INTERNAL_ERROR"
            found = await spans.wait("WS message", 5)
            [upgrade] = spans.named("WS upgrade")
    assert [s.name for s in found] == [
        f"WS message /play/:room {kind}" for kind in ("ping", "ping", "fail", "sleep", "boom")
    ]
    upgrade_context = upgrade.context
    assert upgrade_context is not None
    for span in found:
        assert span.kind is SpanKind.SERVER
        assert span.parent is None  # a trace of its own...
        assert span.context is not None and span.context.trace_id != upgrade_context.trace_id
        assert [link.context for link in span.links] == [upgrade_context]  # ...linked
        assert attributes(span)["http.route"] == "/play/:room"
        assert WHISPER not in repr(span.to_json())  # never the payload
    ok, invalid, refused, slow, failed = found
    assert attributes(ok)["wsroutes.message.type"] == "ping"
    assert attributes(ok)["wsroutes.outcome"] == "ok"
    assert attributes(ok)["wsroutes.request.id"] == "7"
    assert "error.type" not in attributes(ok)
    assert attributes(invalid)["wsroutes.outcome"] == "VALIDATION_ERROR"
    assert "wsroutes.request.id" not in attributes(invalid)
    assert attributes(refused)["wsroutes.outcome"] == "SOLD_OUT"
    assert attributes(refused)["error.type"] == "SOLD_OUT"
    for span in (ok, invalid, refused):
        assert span.status.status_code is StatusCode.UNSET
    assert attributes(slow)["wsroutes.outcome"] == "timeout"
    assert slow.status.status_code is StatusCode.ERROR
    assert attributes(failed)["wsroutes.outcome"] == "exception"
    assert attributes(failed)["error.type"] == "builtins.RuntimeError"
    assert attributes(failed)["wsroutes.request.id"] == "b"
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    connection_ids = {attributes(span)["wsroutes.connection.id"] for span in found}
    assert len(connection_ids) == 1


async def test_tracing_true_uses_the_global_tracer_provider(
    serve_live: ServeLive, global_spans: Spans
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_live(app(tracing=True)) as address, AsyncExitStack() as stack:
            conn = await connect(address, "/play/a", stack)
            assert (await ask(conn, "ping", n=1))["type"] == "pong"
            await global_spans.wait("WS message /play/:room ping", 1)
    assert len(global_spans.named("WS upgrade /play/:room")) == 1


async def test_tracing_off_records_nothing_and_needs_no_opentelemetry(
    serve_live: ServeLive, global_spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A global provider that would record anything asked of it, and no opentelemetry to
    # import: a server without the option serves all the same.
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "trio_wsroutes._tracing", raising=False)
    with pytest.raises(ImportError, match=r"trio-wsroutes\[tracing\]"):
        app(tracing=True)
    headers = [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")]
    with trio.fail_after(TIMEOUT):
        async with serve_live(app()) as address, AsyncExitStack() as stack:
            conn = await connect(address, "/play/a", stack, headers)
            assert (await ask(conn, "ping", n=1))["type"] == "pong"
            assert (await ask(conn, "fail", code="NO"))["code"] == "NO"
            with pytest.raises(HandshakeError):
                await connect(address, "/secret", stack)
    assert global_spans.exporter.get_finished_spans() == ()
    assert "trio_wsroutes._tracing" not in sys.modules


def test_the_tracing_option_takes_true_false_or_a_tracer_provider(spans: Spans) -> None:
    assert app(tracing=False)._tracing is None  # pyright: ignore[reportPrivateUsage]
    assert app(tracing=spans.provider)._tracing is not None  # pyright: ignore[reportPrivateUsage]
    with pytest.raises(TypeError, match="TracerProvider"):
        app(tracing="yes")


# -- between processes, through Redis ------------------------------------------------------


async def two_servers(
    redis: RedisServer,
    serve_live: ServeLive,
    stack: AsyncExitStack,
    a: dict[str, Any],
    b: dict[str, Any],
    broker: dict[str, Any] | None = None,
) -> tuple[WebSocketServer, BoundAddress, WebSocketServer, BoundAddress]:
    """Two servers, each with its own RedisBroker on one Redis (as two processes)."""
    options = broker or {}
    first = app(broker=RedisBroker(redis.url, **options), **a)
    second = app(broker=RedisBroker(redis.url, **options), **b)
    first_address = await stack.enter_async_context(serve_live(first))
    second_address = await stack.enter_async_context(serve_live(second))
    return first, first_address, second, second_address


@pytest.mark.parametrize(
    ("topic", "options"),
    [
        ("news", {}),
        ("room:1", {"history": {"room:*": History(size=10)}}),
        ("room:2", {"secret": SECRET, "history": {"room:*": History(size=10)}}),
    ],
    ids=["plain", "history", "history-signed"],
)
async def test_a_publish_in_a_handler_is_traced_to_its_delivery_in_another_process(
    redis: RedisServer, serve_live: ServeLive, topic: str, options: dict[str, Any]
) -> None:
    here, there = Spans(), Spans()
    history = options.pop("history", None)
    extra = {} if history is None else {"history": history}
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            a, a_address, b, b_address = await two_servers(
                redis,
                serve_live,
                stack,
                {"tracing": here.provider, **extra},
                {"tracing": there.provider, **extra},
                options,
            )
            listener = await connect(b_address, "/play/x", stack)
            assert (await ask(listener, "join", topic=topic))["type"] == "joined"
            speaker = await connect(a_address, "/play/x", stack)
            await speaker.send_message(
                json.dumps({"type": "shout", "data": {"topic": topic, "n": 5}})
            )
            got = json.loads(await listener.get_message())
            assert got["data"] == {"n": 5}
            [publish] = await here.wait("WS publish", 1)
            [deliver] = await there.wait("WS deliver", 1)
    [handler] = here.named("WS message /play/:room shout")
    pattern = "topic" if history is None else "room:*"
    assert publish.name == f"WS publish {pattern}"
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None and handler.context is not None
    assert publish.parent.span_id == handler.context.span_id
    assert attributes(publish)["messaging.destination.name"] == topic
    assert deliver.name == f"WS deliver {pattern}"
    assert deliver.kind is SpanKind.CONSUMER
    assert deliver.parent is not None and publish.context is not None
    assert deliver.parent.is_remote
    assert (deliver.parent.trace_id, deliver.parent.span_id) == (
        publish.context.trace_id,
        publish.context.span_id,
    )
    assert attributes(deliver)["messaging.destination.name"] == topic
    assert attributes(deliver)["wsroutes.local_deliveries"] == 1
    assert b.broker.stats.unauthenticated == b.broker.stats.malformed == 0
    assert a.broker.stats.published >= 1


def _raw(extensions: str, n: int) -> str:
    return f"wsr1 t - 0 {extensions}\n" + json.dumps({"type": "pong", "data": {"n": n}})


async def test_a_forged_or_oversized_trace_context_is_ignored_and_counted(
    redis: RedisServer, serve_live: ServeLive
) -> None:
    there = Spans()
    bad = [
        "t=1 tp=00-zz000000000000000000000000000000-00f067aa0ba902b7-01",  # not hex
        f"t=1 tp=00-{'0' * 32}-{PARENT_ID}-01",  # the invalid trace id
        f"t=1 tp=ff-{TRACE_ID}-{PARENT_ID}-01",  # a version this one does not know
        f"t=1 tp=00-{TRACE_ID}-{PARENT_ID}-01 ts=k=" + "v" * 300,  # oversized state
        "t=01",  # a time with a leading zero
    ]
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            _, _, b, b_address = await two_servers(
                redis, serve_live, stack, {}, {"tracing": there.provider}
            )
            listener = await connect(b_address, "/play/x", stack)
            assert (await ask(listener, "join", topic="news"))["type"] == "joined"
            for n, extensions in enumerate(bad):
                redis.command("PUBLISH", "wsroutes:news", _raw(extensions, n))
            # Not a field at all, a name twice: the header is malformed, the message dropped.
            redis.command("PUBLISH", "wsroutes:news", _raw("T=1", 98))
            redis.command("PUBLISH", "wsroutes:news", _raw("t=1 t=2", 99))
            redis.command("PUBLISH", "wsroutes:news", _raw("later=1 t=1", 100))
            received = [json.loads(await listener.get_message())["data"]["n"] for _ in bad]
            assert json.loads(await listener.get_message())["data"]["n"] == 100
            assert (await ask(listener, "ping", n=1))["type"] == "pong"  # still serving
    stats = b.broker.stats
    assert received == list(range(len(bad)))  # every one delivered
    assert stats.extensions_ignored == len(bad)
    assert stats.malformed == 2
    # Only the message whose trace was valid (its oversized state left out) continues it.
    [deliver] = there.named("WS deliver")
    assert deliver.parent is not None and deliver.parent.span_id == int(PARENT_ID, 16)
    assert deliver.context is not None and len(deliver.context.trace_state) == 0


async def test_with_a_secret_the_trace_context_is_signed(
    redis: RedisServer, serve_live: ServeLive
) -> None:
    there = Spans()
    frame = Frame(b'{"type":"pong","data":{"n":1}}')
    extensions = wire_extensions(1, f"00-{TRACE_ID}-{PARENT_ID}-01".encode())
    signed = encode_wire(
        frame, b"1-abc", 1, secret=SECRET.encode(), channel=b"wsroutes:news", extensions=extensions
    )
    other = f"00-{TRACE_ID}-{'1' * 16}-01".encode()
    tampered = signed.replace(PARENT_ID.encode(), b"1" * 16)
    added = signed.replace(b" x=", b" later=1 x=")
    stripped = signed.split(b" t=")[0] + b"\n" + frame.payload  # no extension fields at all
    moved = encode_wire(
        Frame(b'{"type":"pong","data":{"n":2}}'),
        b"1-abc",
        2,
        secret=SECRET.encode(),
        channel=b"wsroutes:news",
        extensions=wire_extensions(1, other),
    )
    foreign_mac = moved.split(b" x=")[1].split(b"\n")[0]
    swapped = signed.split(b" x=")[0] + b" x=" + foreign_mac + b"\n" + frame.payload
    for data, ok in ((signed, True), (stripped, True), (tampered, False), (added, False)):
        message = decode_wire(data)
        assert message is not None
        assert authentic(SECRET.encode(), b"wsroutes:news", message) is ok, data
    swapped_message = decode_wire(swapped)
    assert swapped_message is not None
    assert not authentic(SECRET.encode(), b"wsroutes:news", swapped_message)
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            _, _, b, b_address = await two_servers(
                redis, serve_live, stack, {}, {"tracing": there.provider}, {"secret": SECRET}
            )
            listener = await connect(b_address, "/play/x", stack)
            assert (await ask(listener, "join", topic="news"))["type"] == "joined"
            for data in (tampered, added, swapped, signed):
                redis.command("PUBLISH", "wsroutes:news", data.decode())
            assert json.loads(await listener.get_message())["data"] == {"n": 1}
            [deliver] = await there.wait("WS deliver", 1)
    assert b.broker.stats.unauthenticated == 3
    assert deliver.parent is not None and deliver.parent.span_id == int(PARENT_ID, 16)


# -- the lag between processes ---------------------------------------------------------------


async def test_the_lag_of_messages_from_other_processes_is_in_the_metrics(
    redis: RedisServer, serve_live: ServeLive
) -> None:
    count = 6
    family = "trio_wsroutes_broker_lag_seconds"
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            _, a_address, b, b_address = await two_servers(
                redis, serve_live, stack, {}, {"metrics": Metrics(process_metrics=False)}
            )
            listener = await connect(b_address, "/play/x", stack)
            assert (await ask(listener, "join", topic="news"))["type"] == "joined"
            speaker = await connect(a_address, "/play/x", stack)
            for n in range(count):
                await speaker.send_message(
                    json.dumps({"type": "shout", "data": {"topic": "news", "n": n}})
                )
            for n in range(count):
                assert json.loads(await listener.get_message())["data"] == {"n": n}
            scraped = parse((await http_request(b_address, "GET", "/metrics")).body.decode())
            # One from a clock a minute ahead: counted, as 0 s.
            ahead = time.time_ns() // 1_000_000 + 60_000
            redis.command("PUBLISH", "wsroutes:news", _raw(f"t={ahead}", 99))
            assert json.loads(await listener.get_message())["data"] == {"n": 99}
            later = parse((await http_request(b_address, "GET", "/metrics")).body.decode())
    stats = b.broker.stats
    assert value(scraped, f"{family}_count") == count
    assert value(scraped, "trio_wsroutes_broker_received_total") == count
    assert 0 <= value(scraped, f"{family}_sum") < TIMEOUT
    lags = buckets(scraped, family)
    assert lags == sorted(lags) and lags[-1] == count
    assert value(later, f"{family}_count") == count + 1 == stats.lag.count
    assert value(later, f"{family}_sum") == value(scraped, f"{family}_sum")
    assert buckets(later, family)[0] == buckets(scraped, family)[0] + 1  # in the first: 0 s


# -- the wire format -------------------------------------------------------------------------


def test_extension_fields_are_parsed_strictly_and_optional() -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    data = f"wsr1 t 42-abc 7 t=1700000000123 tp={traceparent} ts=a=1,b=2\n{{}}".encode()
    message = decode_wire(data)
    assert message is not None
    assert (message.published, message.traceparent, message.tracestate) == (
        1700000000123,
        traceparent.encode(),
        b"a=1,b=2",
    )
    assert message.extensions == f"t=1700000000123 tp={traceparent} ts=a=1,b=2".encode()
    assert not message.ignored
    old = decode_wire(b"wsr1 t 42-abc 7\n{}")  # as 0.2 wrote it
    assert old is not None and (old.published, old.traceparent, old.extensions) == (0, None, b"")
    history = decode_wire(b"wsr1 h 42-abc 7 t=5 12 Ep\n{}")
    assert history is not None and (history.published, history.offset) == (5, 12)
    for bad in (
        b"wsr1 t 42-abc 7 t=1 x=" + b"0" * 64 + b" tp=1\n{}",  # a field after x
        b"wsr1 t 42-abc 7 x=00\n{}",  # x is a signature
        b"wsr1 t 42-abc 7 t=1 " + b"0" * 64 + b"\n{}",  # the signature comes first
        b"wsr1 t 42-abc 7 t=\xff\n{}",  # not printable ASCII
        b"wsr1 t 42-abc 7 t=1 t=1\n{}",
        b"wsr1 t 42-abc 7 " + b"a=1 " * 300 + b"\n{}",  # a header over MAX_HEADER
    ):
        assert decode_wire(bad) is None, bad
