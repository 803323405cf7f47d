"""Connection hygiene under both transports (issue 6), and the native transport's
RFC 6455 / RFC 7692 conformance.

Tests that take ``serve_live`` (or ``transport``) run under hypercorn and natively; what
hypercorn cannot do is a strict xfail there, naming the limit. Clients: the
``websockets`` Trio client (real handshakes, compression, automatic pongs) and the raw
client of ``tests/_rawws.py`` for exact bytes. 127.0.0.1 only, every wait bounded.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as websockets_connect

from tests._rawws import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    RawClient,
    deflate,
    encode_frame,
    inflate,
    raw_connect,
)
from tests.conftest import ServeLive, live_server, xfail_on
from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    RateLimit,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes._transports import _hypercorn

TIMEOUT = 10
MiB = 1024 * 1024


@attrs.frozen
class Echo:
    n: int


@message("echoed")
@attrs.frozen
class Echoed:
    n: int


@message("note")
@attrs.frozen
class Note:
    text: str


@attrs.frozen
class Closes:
    seen: list[tuple[int, str]] = attrs.field(factory=list)
    event: trio.Event = attrs.field(factory=trio.Event)

    async def wait(self) -> tuple[int, str]:
        with trio.fail_after(TIMEOUT):
            await self.event.wait()
        return self.seen[0]


def make_route(
    path: str = "/r", *, closes: Closes | None = None, raw: bool = False, feed: bool = False
) -> WebSocketRoute[None, Echoed | Note]:
    """``echo`` envelopes; with ``raw`` text and binary frames are echoed as they are;
    with ``feed`` the connection subscribes to topic ``feed``."""
    route = create_websocket_route(path).server_messages(Echoed, Note)

    @route.on("echo", Echo)
    async def echo(ws: Connection[Echoed | Note], data: Echo, ctx: Context[None]) -> Echoed:
        return Echoed(data.n)

    if feed:

        @route.on_connect
        async def join(ws: Connection[Echoed | Note], ctx: Context[None]) -> None:
            await ws.subscribe("feed")

    if raw:

        @route.on_text
        async def text(ws: Connection[Echoed | Note], data: str, ctx: Context[None]) -> None:
            await ws.send_text(data)

        @route.on_binary
        async def binary(ws: Connection[Echoed | Note], data: bytes, ctx: Context[None]) -> None:
            await ws.send_binary(data)

    if closes is not None:

        @route.on_close
        async def closed(
            ws: Connection[Echoed | Note], code: int, reason: str, ctx: Context[None]
        ) -> None:
            closes.seen.append((code, reason))
            closes.event.set()

    return route


def ws_connect(
    address: BoundAddress, path: str, **kwargs: Any
) -> AbstractAsyncContextManager[ClientConnection]:
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("max_size", None)
    return websockets_connect(
        address.ws_url + path, proxy=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT, **kwargs
    )


async def echo_request(ws: ClientConnection, n: int) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "echo", "data": {"n": n}, "id": n}))
    with trio.fail_after(TIMEOUT):
        reply = json.loads(await ws.recv())
    assert isinstance(reply, dict)
    return reply


async def subscribed(server: WebSocketServer, count: int) -> None:
    """Wait until ``count`` connections subscribed to ``feed`` (in their on_connect)."""
    with trio.fail_after(TIMEOUT):
        while True:
            if server.subscriber_count("feed") >= count:
                return
            await trio.sleep(0.01)


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Wait for the server to close; its code and reason (messages are skipped)."""
    with trio.fail_after(TIMEOUT):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            return (rcvd.code, rcvd.reason) if rcvd is not None else (None, None)


# -- compression ----------------------------------------------------------------------


@pytest.mark.parametrize("compression", [True, False])
async def test_compression_is_negotiated_unless_turned_off(
    serve_live: ServeLive, compression: bool
) -> None:
    server = WebSocketServer([make_route()], compression=compression)
    async with serve_live(server) as address, ws_connect(address, "/r") as ws:
        negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
        if compression:
            assert negotiated is not None
            assert negotiated.startswith("permessage-deflate")
        else:
            assert negotiated is None
        # Either way the connection works, long messages included.
        note = "x" * 5000
        count = await server.publish("none", Note(note))
        assert count == 0
        assert await echo_request(ws, 1) == {"type": "echoed", "data": {"n": 1}, "id": 1}


def test_hypercorn_patch_is_not_installed_on_an_unchecked_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_hypercorn, "_state", {})
    monkeypatch.setattr(_hypercorn.metadata, "version", lambda name: "0.99.0")
    with caplog.at_level(logging.WARNING, logger="trio_wsroutes"):
        assert _hypercorn.install() is False
    assert "compression=False is not supported on hypercorn 0.99.0" in caplog.text


@pytest.mark.transports("native")
async def test_shared_compression_sends_one_compressed_frame_to_every_recipient(
    serve_live: ServeLive,
) -> None:
    server = WebSocketServer([make_route(feed=True)])
    offer = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    text = "a compressible message " * 40
    async with (
        serve_live(server) as address,
        raw_connect(address, "/r", offer) as alice,
        raw_connect(address, "/r", offer) as bob,
    ):
        for client in (alice, bob):
            params = [p.strip() for p in client.headers["sec-websocket-extensions"].split(";")]
            assert params[0] == "permessage-deflate"
            assert "server_no_context_takeover" in params
            assert "client_max_window_bits=12" in params
        with trio.fail_after(TIMEOUT):
            await subscribed(server, 2)
        assert await server.publish("feed", Note(text)) == 2
        # Once the publisher yields, the fast path writes to both sockets: nothing waits
        # in either outbox for the writer.
        await trio.testing.wait_all_tasks_blocked()
        assert [c.buffered_amount for c in server.registry] == [0, 0]
        with trio.fail_after(TIMEOUT):
            frames = [await alice.receive_data(), await bob.receive_data()]
        assert frames[0] == frames[1]
        assert frames[0].rsv1 and frames[0].opcode == TEXT
        assert len(frames[0].payload) < len(text)
        assert json.loads(inflate(frames[0].payload)) == {"type": "note", "data": {"text": text}}


@pytest.mark.transports("native")
async def test_compression_parameters_are_honoured(serve_live: ServeLive) -> None:
    route = make_route(raw=True)
    offer = {
        "Sec-WebSocket-Extensions": (
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits"
        )
    }
    async with (
        serve_live(WebSocketServer([route])) as address,
        raw_connect(address, "/r", offer) as client,
    ):
        params = {p.strip() for p in client.headers["sec-websocket-extensions"].split(";")}
        assert params >= {"server_max_window_bits=10", "client_max_window_bits=12"}
        message = ("window " * 200).encode()
        # A compressed message from the client is inflated by the server...
        await client.send(TEXT, deflate(message, 12), rsv1=True)
        with trio.fail_after(TIMEOUT):
            reply = await client.receive_data()
        # ...and the echo is compressed within the 10-bit window the client asked for.
        assert reply.rsv1
        assert inflate(reply.payload, 10) == message
        # An uncompressed message is fine too (RSV1 says which).
        await client.send(TEXT, b"plain")
        with trio.fail_after(TIMEOUT):
            plain = await client.receive_data()
        assert (plain.rsv1, plain.payload) == (False, b"plain")


@pytest.mark.transports("native")
async def test_context_takeover_compression_option(serve_live: ServeLive) -> None:
    server = WebSocketServer([make_route(feed=True)], compression="context_takeover")
    async with serve_live(server) as address, ws_connect(address, "/r") as ws:
        negotiated = ws.response.headers["Sec-WebSocket-Extensions"]
        assert "server_no_context_takeover" not in negotiated
        with trio.fail_after(TIMEOUT):
            await subscribed(server, 1)
        for _ in range(3):
            await server.publish("feed", Note("same words again " * 20))
        with trio.fail_after(TIMEOUT):
            texts = [json.loads(await ws.recv())["data"]["text"] for _ in range(3)]
        assert texts == ["same words again " * 20] * 3


# -- limits and close codes -------------------------------------------------------------


async def test_binary_frame_without_on_binary_closes_with_1003(serve_live: ServeLive) -> None:
    closes = Closes()
    async with (
        serve_live(WebSocketServer([make_route(closes=closes)])) as address,
        ws_connect(address, "/r") as ws,
    ):
        await ws.send(b"\x00\x01")
        assert (await closed_with(ws))[0] == 1003
    assert await closes.wait() == (1003, "binary not accepted")


async def test_idle_connection_is_closed(serve_live: ServeLive) -> None:
    server = WebSocketServer([make_route()], idle_timeout=0.2)
    async with serve_live(server) as address, ws_connect(address, "/r") as ws:
        assert await closed_with(ws) == (1000, "idle timeout")


async def test_a_client_that_only_reads_outlives_the_idle_timeout(serve_live: ServeLive) -> None:
    # Pings off: only the messages the server sends keep the connection (and the
    # client never sends one).
    closes = Closes()
    server = WebSocketServer(
        [make_route(closes=closes, feed=True)], idle_timeout=0.3, heartbeat_interval=None
    )
    async with serve_live(server) as address, ws_connect(address, "/r") as ws:
        await subscribed(server, 1)
        received = 0
        with trio.fail_after(TIMEOUT):
            for n in range(15):  # 1.5 s: five idle timeouts
                await server.publish("feed", Note(str(n)))
                await trio.sleep(0.1)
            while received < 15:
                json.loads(await ws.recv())
                received += 1
        assert len(server.registry) == 1
        assert closes.seen == []
        # Once nothing flows either way, it is idle.
        assert await closed_with(ws) == (1000, "idle timeout")


@pytest.mark.transports("native")
async def test_pongs_count_as_activity_for_the_idle_timeout(serve_live: ServeLive) -> None:
    server = WebSocketServer([make_route()], idle_timeout=0.3, heartbeat_interval=0.1)
    async with serve_live(server) as address, ws_connect(address, "/r") as ws:
        # Several idle timeouts long; the client's automatic pongs keep it open.
        await trio.sleep(1.5)
        assert await echo_request(ws, 7) == {"type": "echoed", "data": {"n": 7}, "id": 7}


@pytest.mark.transports("native")
async def test_ping_timeout_closes_a_dead_peer_and_spares_a_live_one(
    serve_live: ServeLive,
) -> None:
    closes = Closes()
    server = WebSocketServer(
        [make_route(closes=closes)], heartbeat_interval=0.1, heartbeat_timeout=0.2
    )
    async with (
        serve_live(server) as address,
        ws_connect(address, "/r") as live,
        raw_connect(address, "/r") as dead,
    ):
        # The raw client never answers pings: it is closed (and told why, if it reads).
        assert await closes.wait() == (1011, "heartbeat timeout")
        with trio.fail_after(TIMEOUT):
            frame = await dead.close_frame()
        assert frame is not None and frame.close_code == 1011
        # The websockets client answers them and lives on.
        assert await echo_request(live, 1) == {"type": "echoed", "data": {"n": 1}, "id": 1}
        assert len(server.registry) == 1


async def test_envelope_heartbeat_closes_a_silent_client_and_keeps_an_answering_one(
    serve_live: ServeLive,
) -> None:
    closes = Closes()
    route = make_route(closes=closes).heartbeat(0.1, timeout=0.2)
    async with (
        serve_live(WebSocketServer([route])) as address,
        ws_connect(address, "/r") as answering,
        ws_connect(address, "/r") as silent,
    ):

        async def answer_pings(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            pings = 0
            while pings < 4:
                envelope = json.loads(await answering.recv())
                assert envelope == {"type": "ping"}
                pings += 1
                await answering.send(json.dumps({"type": "pong"}))

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(answer_pings)
                assert await closed_with(silent) == (1011, "heartbeat timeout")
        assert closes.seen == [(1011, "heartbeat timeout")]
        # Still open after several pings; a client's own ping gets a pong.
        await answering.send(json.dumps({"type": "ping", "id": "p"}))
        with trio.fail_after(TIMEOUT):
            while (reply := json.loads(await answering.recv())) == {"type": "ping"}:
                pass
        assert reply == {"type": "pong", "id": "p"}


async def test_rate_limit_answers_or_closes(serve_live: ServeLive) -> None:
    erroring = make_route("/error").rate_limit(1 / 60, burst=2)
    closing = make_route("/close").rate_limit(1 / 60, burst=2, action="close")
    by_bytes = make_route("/bytes").rate_limit(1000, bytes_per_second=100)
    default = make_route("/default")  # the server's rate_limit applies
    server = WebSocketServer(
        [erroring, closing, by_bytes, default], rate_limit=RateLimit(1 / 60, burst=1)
    )
    async with serve_live(server) as address:
        async with ws_connect(address, "/error") as ws:
            for n in range(4):
                await ws.send(json.dumps({"type": "echo", "data": {"n": n}, "id": n}))
            with trio.fail_after(TIMEOUT):
                replies = [json.loads(await ws.recv()) for _ in range(4)]
            assert [(r["type"], r["id"]) for r in replies] == [
                ("echoed", 0),
                ("echoed", 1),
                ("error", 2),
                ("error", 3),
            ]
            assert {r.get("code") for r in replies[2:]} == {"RATE_LIMITED"}
        async with ws_connect(address, "/close") as ws:
            for n in range(3):
                await ws.send(json.dumps({"type": "echo", "data": {"n": n}, "id": n}))
            with trio.fail_after(TIMEOUT):
                assert [json.loads(await ws.recv())["id"] for _ in range(2)] == [0, 1]
            assert (await closed_with(ws))[0] == 1008
        async with ws_connect(address, "/bytes") as ws:
            padding = "p" * 150  # one message spends the allowance of 100 bytes a second
            await ws.send(json.dumps({"type": "echo", "data": {"n": 1}, "pad": padding}))
            await ws.send(json.dumps({"type": "echo", "data": {"n": 2}, "pad": padding}))
            with trio.fail_after(TIMEOUT):
                first, second = json.loads(await ws.recv()), json.loads(await ws.recv())
            assert first["type"] == "echoed"
            assert second["code"] == "RATE_LIMITED"
        async with ws_connect(address, "/default") as ws:
            assert (await echo_request(ws, 1))["type"] == "echoed"
            assert (await echo_request(ws, 2))["code"] == "RATE_LIMITED"


async def test_slow_consumer_is_evicted_with_1013(serve_live: ServeLive) -> None:
    closes = Closes()
    server = WebSocketServer([make_route(closes=closes, feed=True)], backpressure_limit=256 * 1024)
    chunk = bytes(64 * 1024)
    async with serve_live(server) as address, raw_connect(address, "/r") as slow:
        with trio.fail_after(TIMEOUT):
            await subscribed(server, 1)
            # The client reads nothing: the socket buffers fill, then its queue.
            for _ in range(4000):
                await server.publish_binary("feed", chunk)
                if server.stats.slow_consumer_closes:
                    break
            assert server.stats.slow_consumer_closes == 1
            assert len(server.registry) == 0
            assert server.subscriber_count("feed") == 0
            # When the client reads again, the 1013 comes after what was in flight.
            frame = await slow.close_frame()
        assert frame is not None and frame.close_code == 1013
        assert await closes.wait() == (1013, "slow consumer")


async def test_shutdown_sends_1001_and_returns_with_a_client_that_never_reads(
    transport: str, request: pytest.FixtureRequest
) -> None:
    xfail_on(
        request,
        transport,
        "hypercorn",
        "hypercorn shields its sends: a client that never reads holds the server open",
    )
    server = WebSocketServer(
        [make_route(feed=True)], backpressure_limit=64 * MiB, close_timeout=1.0
    )
    serve = server.serve if transport == "hypercorn" else server.serve_native
    stop = trio.Event()
    returned = trio.Event()
    chunk = bytes(256 * 1024)

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await serve("127.0.0.1", 0, shutdown_trigger=stop.wait, task_status=task_status)
        returned.set()

    # Native needs about close_timeout; hypercorn would need the client to read.
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            address: BoundAddress = (await nursery.start(run))[0]
            async with raw_connect(address, "/r"):  # never reads
                await subscribed(server, 1)
                for _ in range(64):  # 16 MiB: more than the socket buffers hold
                    await server.publish_binary("feed", chunk)
                async with ws_connect(address, "/r") as reader:
                    assert await echo_request(reader, 1) == {
                        "type": "echoed",
                        "data": {"n": 1},
                        "id": 1,
                    }
                    stop.set()
                    assert (await closed_with(reader))[0] == 1001
                await returned.wait()
    assert len(server.registry) == 0


def _rss() -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    assert found is not None
    return int(found.group(1)) * 1024


async def test_oversized_frame_is_refused_with_1009_before_its_payload_is_buffered(
    serve_live: ServeLive,
) -> None:
    size = 100 * MiB
    server = WebSocketServer([make_route()], max_payload_length=1 * MiB)
    chunk = bytes(MiB)
    peak = 0

    async def sample(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal peak
        task_status.started()
        while True:
            peak = max(peak, _rss())
            await trio.sleep(0.002)

    async with serve_live(server) as address, raw_connect(address, "/r") as client:
        assert await request_raw(client, 1) == {"type": "echoed", "data": {"n": 1}, "id": 1}
        baseline = _rss()
        code: int | None = None
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(sample)

                async def send_payload() -> None:
                    await client.send_raw(encode_frame(BINARY, b"", length=size))
                    for _ in range(size // MiB):
                        try:
                            await client.send_raw(chunk)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return  # the server stopped listening: fine too

                nursery.start_soon(send_payload)
                frame = await client.close_frame()
                code = frame.close_code if frame is not None else None
                nursery.cancel_scope.cancel()
        assert code == 1009
        grown = (peak - baseline) / MiB
        print(f"RSS grew by {grown:.1f} MiB while a 100 MiB frame was refused")
        assert grown < 32, f"RSS grew by {grown:.0f} MiB"


async def request_raw(client: RawClient, n: int) -> dict[str, Any]:
    await client.send(TEXT, json.dumps({"type": "echo", "data": {"n": n}, "id": n}).encode())
    with trio.fail_after(TIMEOUT):
        frame = await client.receive_data()
    value = json.loads(frame.payload)
    assert isinstance(value, dict)
    return value


@pytest.mark.transports("native")
async def test_messages_before_an_oversized_frame_are_answered_before_1009(
    serve_live: ServeLive,
) -> None:
    server = WebSocketServer([make_route()], max_payload_length=1024)
    async with serve_live(server) as address, raw_connect(address, "/r") as client:
        batch = b"".join(
            encode_frame(TEXT, json.dumps({"type": "echo", "data": {"n": n}, "id": n}).encode())
            for n in range(3)
        )
        # Three requests and the header of a 10 MiB frame, in one write.
        await client.send_raw(batch + encode_frame(TEXT, b"", length=10 * MiB)[: 2 + 8])
        with trio.fail_after(TIMEOUT):
            frames = [await client.receive() for _ in range(4)]
        assert [json.loads(f.payload)["id"] for f in frames[:3] if f is not None] == [0, 1, 2]
        assert frames[3] is not None and frames[3].close_code == 1009


# -- RFC 6455 conformance of the native transport ------------------------------------------


@asynccontextmanager
async def native_echo(**options: Any) -> AsyncIterator[tuple[BoundAddress, Closes]]:
    async with native_echo_server(**options) as (address, closes, _):
        yield address, closes


@asynccontextmanager
async def native_echo_server(
    **options: Any,
) -> AsyncIterator[tuple[BoundAddress, Closes, WebSocketServer]]:
    closes = Closes()
    server = WebSocketServer([make_route(closes=closes, raw=True)], **options)
    async with live_server(server, transport="native") as address:
        yield address, closes, server


async def test_native_fragments_with_control_frames_between_are_reassembled() -> None:
    async with native_echo() as (address, _), raw_connect(address, "/r") as client:
        with trio.fail_after(TIMEOUT):
            # "héllo wörld", split inside both two-byte characters, a ping in between.
            data = "héllo wörld".encode()
            await client.send(TEXT, data[:2], fin=False)
            await client.send(PING, b"are you there")
            await client.send(CONT, data[2:9], fin=False)
            await client.send(CONT, data[9:])
            pong = await client.receive()
            assert pong is not None and (pong.opcode, pong.payload) == (PONG, b"are you there")
            echo = await client.receive_data()
            assert (echo.opcode, echo.payload.decode()) == (TEXT, "héllo wörld")
            # Binary fragments, an empty one among them.
            await client.send(BINARY, b"\x00\x01", fin=False)
            await client.send(CONT, b"", fin=False)
            await client.send(PONG, b"unsolicited")
            await client.send(CONT, b"\x02")
            echo = await client.receive_data()
            assert (echo.opcode, echo.payload) == (BINARY, b"\x00\x01\x02")
            # A big message in many fragments.
            await client.send(TEXT, b"a" * 70000, fin=False)
            for _ in range(3):
                await client.send(CONT, b"b" * 70000, fin=False)
            await client.send(CONT, b"c")
            echo = await client.receive_data()
            assert echo.payload == b"a" * 70000 + b"b" * 210000 + b"c"


@pytest.mark.parametrize(
    "frames",
    [
        [encode_frame(TEXT, b"\xff")],
        [encode_frame(TEXT, b"ok \xc3", fin=False), encode_frame(CONT, b"(")],
        # The first fragment is already invalid: refused before the message ends.
        [encode_frame(TEXT, b"\xed\xa0\x80", fin=False)],
    ],
    ids=["single", "across-fragments", "first-fragment"],
)
async def test_native_invalid_utf8_fails_with_1007(frames: list[bytes]) -> None:
    async with native_echo() as (address, closes), raw_connect(address, "/r") as client:
        with trio.fail_after(TIMEOUT):
            for frame in frames:
                await client.send_raw(frame)
            close = await client.receive()
            assert close is not None and close.opcode == CLOSE
            assert close.close_code == 1007
            assert await client.eof()
        assert (await closes.wait())[0] == 1007


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(TEXT, b"unmasked", mask=False),
        encode_frame(0x3, b"reserved opcode"),
        encode_frame(CONT, b"continuation of nothing"),
        encode_frame(PING, b"x" * 126),
        encode_frame(PING, b"fragmented ping", fin=False),
        bytes([0x80 | 0x20 | TEXT]) + encode_frame(TEXT, b"rsv2")[1:],
        encode_frame(TEXT, b"rsv1 without deflate", rsv1=True),
        encode_frame(CLOSE, struct.pack("!H", 999)),
        encode_frame(CLOSE, b"\x03"),
    ],
    ids=[
        "unmasked",
        "reserved-opcode",
        "bare-continuation",
        "long-ping",
        "fragmented-ping",
        "rsv2",
        "rsv1-uncompressed-connection",
        "bad-close-code",
        "one-byte-close",
    ],
)
async def test_native_protocol_errors_fail_with_1002(frame: bytes) -> None:
    async with (
        native_echo(compression=False) as (address, closes),
        raw_connect(address, "/r") as client,
    ):
        with trio.fail_after(TIMEOUT):
            await client.send_raw(frame)
            close = await client.receive()
            assert close is not None and close.opcode == CLOSE
            assert close.close_code == 1002
            assert await client.eof()
        assert (await closes.wait())[0] == 1002


async def test_native_new_message_inside_a_fragmented_one_fails_with_1002() -> None:
    async with native_echo() as (address, _), raw_connect(address, "/r") as client:
        with trio.fail_after(TIMEOUT):
            await client.send(TEXT, b"first", fin=False)
            await client.send(TEXT, b"second")
            close = await client.close_frame()
        assert close is not None and close.close_code == 1002


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (struct.pack("!H", 4000) + "bye ✓".encode(), (4000, "bye ✓")),
        (b"", (1005, "")),
    ],
)
async def test_native_close_handshake_echoes_the_code_and_closes_tcp(
    payload: bytes, expected: tuple[int, str]
) -> None:
    async with native_echo() as (address, closes), raw_connect(address, "/r") as client:
        with trio.fail_after(TIMEOUT):
            await client.send(CLOSE, payload)
            echo = await client.receive()
            assert echo is not None and echo.opcode == CLOSE
            assert echo.payload == payload
            assert await client.eof()  # the server closes TCP first
        assert await closes.wait() == expected


async def test_native_close_between_fragments_is_a_clean_close() -> None:
    # Autobahn|Testsuite case 7.1.5: a message fragment, a close frame, then the next
    # fragment. Control frames may come between fragments (RFC 6455 5.4): the close is
    # answered cleanly, the unfinished message dropped, and what follows discarded.
    async with native_echo() as (address, closes), raw_connect(address, "/r") as client:
        with trio.fail_after(TIMEOUT):
            await client.send(TEXT, b"fragment1", fin=False)
            await client.send(CLOSE, struct.pack("!H", 1000))
            await client.send(CONT, b"fragment2")
            echo = await client.close_frame()
            assert echo is not None and echo.close_code == 1000
            assert await client.eof()
        assert await closes.wait() == (1000, "")


async def test_native_server_close_waits_for_the_peer_then_closes_tcp() -> None:
    async with (
        native_echo_server() as (address, closes, server),
        raw_connect(address, "/r") as client,
    ):
        with trio.fail_after(TIMEOUT):
            await client.send(BINARY, b"")  # echoed
            assert (await client.receive_data()).payload == b""
            for connection in server.registry.all():
                await connection.close(4100, "done")
            close = await client.receive()
            assert close is not None and close.close_code == 4100
            await client.send(CLOSE, close.payload)
            assert await client.eof()
        assert await closes.wait() == (4100, "done")


async def test_native_on_text_and_on_binary_echo_raw_frames(serve_live: ServeLive) -> None:
    route = make_route(raw=True)
    async with serve_live(WebSocketServer([route])) as address, ws_connect(address, "/r") as ws:
        for sent in ["not an envelope", "{}", "x" * 200_000, b"\x00" * 100_000, b""]:
            await ws.send(sent)
            with trio.fail_after(TIMEOUT):
                assert await ws.recv() == sent
        # Envelopes still reach their handlers.
        assert await echo_request(ws, 3) == {"type": "echoed", "data": {"n": 3}, "id": 3}


async def test_publish_reaches_many_subscribers_in_order(serve_live: ServeLive) -> None:
    server = WebSocketServer([make_route(feed=True)])
    async with serve_live(server) as address, trio.open_nursery() as nursery:
        received: dict[int, list[str]] = {}

        async def subscriber(index: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async with raw_connect(address, "/r") as client:
                task_status.started()
                texts = received.setdefault(index, [])
                while len(texts) < 20:
                    frame = await client.receive_data()
                    texts.append(json.loads(frame.payload)["data"]["text"])

        with trio.fail_after(TIMEOUT):
            for index in range(40):
                await nursery.start(subscriber, index)
            await subscribed(server, 40)
            for n in range(20):
                assert await server.publish("feed", Note(f"note {n}" * (1 + n * 10))) == 40
    assert len(received) == 40
    assert all(
        texts == [f"note {n}" * (1 + n * 10) for n in range(20)] for texts in received.values()
    )
