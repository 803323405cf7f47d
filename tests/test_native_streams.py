"""The native transport over any Trio stream: in-memory (``memory_stream_pair``, the
path TLS takes too: a plain ``trio.abc.Stream`` with no non-blocking access), TLS over
real sockets on both transports, and the one byte count behind ``buffered_amount``."""

from __future__ import annotations

import json
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trustme
from websockets.trio.client import connect as websockets_connect

from tests._rawws import CLOSE, PING, PONG, TEXT, RawClient, handshake_on
from trio_wsroutes import (
    BoundAddress,
    CloseCode,
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes._server import native_endpoints
from trio_wsroutes._transports.native import serve_stream
from trio_wsroutes.testing import TestClient, TransportName

TIMEOUT = 10


@attrs.frozen
class Echo:
    n: int


@message("echoed")
@attrs.frozen
class Echoed:
    n: int


def echo_server(**options: Any) -> WebSocketServer:
    route = create_websocket_route("/r").server_messages(Echoed)

    @route.on("echo", Echo)
    async def echo(ws: Connection[Echoed], data: Echo, ctx: Context[None]) -> Echoed:
        return Echoed(data.n)

    @route.on_connect
    async def join(ws: Connection[Echoed], ctx: Context[None]) -> None:
        await ws.subscribe("feed")

    return WebSocketServer([route], **options)


@asynccontextmanager
async def memory_connection(server: WebSocketServer) -> AsyncIterator[RawClient]:
    """The native transport on one end of ``trio.testing.memory_stream_pair``, a raw
    client on the other."""
    server_end, client_end = trio.testing.memory_stream_pair()
    options, serve_websocket, plain_http = native_endpoints(server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_stream, server_end, options, serve_websocket, plain_http)
        with trio.fail_after(TIMEOUT):
            status, headers, leftover = await handshake_on(client_end, "memory", "/r")
        assert status == 101
        yield RawClient(client_end, headers, leftover)


async def test_memory_stream_pair_carries_a_whole_connection() -> None:
    closes: list[int] = []
    server = echo_server(compression=False)
    async with memory_connection(server) as client:
        with trio.fail_after(TIMEOUT):
            await client.send(TEXT, json.dumps({"type": "echo", "data": {"n": 7}}).encode())
            reply = await client.receive_data()
            assert json.loads(reply.payload) == {"type": "echoed", "data": {"n": 7}}
            # A publish reaches it too (no fast path on this stream: the writer sends).
            assert await server.publish("feed", Echoed(8)) == 1
            assert json.loads((await client.receive_data()).payload)["data"] == {"n": 8}
            await client.send(PING, b"hb")
            pong = await client.receive()
            assert pong is not None and (pong.opcode, pong.payload) == (PONG, b"hb")
            await client.send(CLOSE, struct.pack("!H", 4000))
            echo = await client.receive()
            assert echo is not None and echo.close_code == 4000
            assert await client.eof()
        for connection in server.registry.all():
            closes.append(connection.close_code or 0)
    assert closes == []  # gone from the registry


async def test_heartbeat_closes_a_silent_peer_over_memory_stream_pair(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = echo_server(heartbeat_interval=20, heartbeat_timeout=10, idle_timeout=None)
    async with memory_connection(server) as client:
        with trio.fail_after(1000):
            ping = await client.receive()
            assert ping is not None and ping.opcode == PING
            started = trio.current_time()
            # No pong: closed with 1011 once the timeout has passed.
            close = await client.receive()
            assert close is not None and close.opcode == CLOSE
            assert close.close_code == CloseCode.INTERNAL_ERROR
            assert close.payload[2:] == b"heartbeat timeout"
            assert trio.current_time() - started >= 10


async def test_heartbeat_keeps_a_peer_that_answers_over_memory_stream_pair(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = echo_server(heartbeat_interval=20, heartbeat_timeout=10, idle_timeout=60)
    async with memory_connection(server) as client:
        with trio.fail_after(1000):
            # It only answers pings (never sends a message) and outlives the idle
            # timeout several times over: pongs count as activity.
            for _ in range(10):
                ping = await client.receive()
                assert ping is not None and ping.opcode == PING
                await client.send(PONG, ping.payload)
            assert len(server.registry) == 1
            assert trio.current_time() > 3 * 60


# -- TLS, on both transports ---------------------------------------------------------


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def serve_tls(
    server: WebSocketServer, transport: str, context: ssl.SSLContext
) -> AsyncIterator[BoundAddress]:
    stop = trio.Event()
    serve = server.serve if transport == "hypercorn" else server.serve_native
    async with trio.open_nursery() as nursery:

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await serve(
                "127.0.0.1",
                0,
                ssl_context=context,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )

        addresses: list[BoundAddress] = await nursery.start(run)
        try:
            yield addresses[0]
        finally:
            stop.set()


async def test_tls_round_trip(transport: str, certificate_authority: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    certificate_authority.configure_trust(client_context)
    server = echo_server()
    async with serve_tls(server, transport, server_context) as address:
        assert address.ws_url.startswith("wss://")
        async with websockets_connect(
            address.ws_url + "/r", ssl=client_context, open_timeout=TIMEOUT, ping_interval=None
        ) as ws:
            with trio.fail_after(TIMEOUT):
                await ws.send(json.dumps({"type": "echo", "data": {"n": 1}, "id": 1}))
                assert json.loads(await ws.recv()) == {
                    "type": "echoed",
                    "data": {"n": 1},
                    "id": 1,
                }
                # Large enough to need several TLS records, and the writer to wait.
                assert server.subscriber_count("feed") == 1
                big = "x" * 300_000
                await server.publish_binary("feed", big.encode())
                assert await ws.recv() == big.encode()
                for connection in server.registry.all():
                    assert connection.context.request.scheme == "wss"
                    await connection.close(4001, "done")
                with pytest.raises(Exception) as closed:
                    await ws.recv()
                assert getattr(closed.value, "rcvd", None) is not None
                assert closed.value.rcvd.code == 4001  # type: ignore[attr-defined]


async def test_plain_client_is_not_served_on_a_tls_port(
    transport: str, certificate_authority: trustme.CA
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(server_context)
    server = echo_server()
    async with serve_tls(server, transport, server_context) as address:
        with pytest.raises(Exception):  # noqa: B017 - the client's own error for garbage
            async with websockets_connect(
                f"ws://127.0.0.1:{address.port}/r", open_timeout=TIMEOUT
            ):
                pass
        assert len(server.registry) == 0


# -- one byte count ---------------------------------------------------------------------


async def test_buffered_amount_counts_what_the_transport_holds_and_the_limit_applies_to_it(
    memory_transport: TransportName,
) -> None:
    limit = 100_000
    server = echo_server(backpressure_limit=limit)
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/r") as ws,
    ):
        await trio.testing.wait_all_tasks_blocked()
        (connection,) = server.registry.all()
        ws.pause_reading()
        # Bigger than the in-memory socket buffer: part of it stays with the transport
        # (native), or the whole frame is in the server's send (ASGI).
        assert await server.publish_binary("feed", b"a" * 80_000) == 1
        await trio.testing.wait_all_tasks_blocked()
        held = connection.buffered_amount
        assert held > 0
        # Exactly up to the limit is accepted...
        assert await server.publish_binary("feed", b"b" * (limit - held)) == 1
        assert connection.buffered_amount == limit
        assert not connection.closed
        # ...and one byte more applies the slow-consumer policy.
        assert await server.publish_binary("feed", b"c") == 0
        assert connection.close_code == CloseCode.TRY_AGAIN_LATER
        ws.resume_reading()
        assert await ws.wait_closed() == CloseCode.TRY_AGAIN_LATER


async def test_error_replies_and_pings_count_in_buffered_amount(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = 10_000
    route = create_websocket_route("/r").heartbeat(5, timeout=1000)
    server = WebSocketServer([route], backpressure_limit=limit, idle_timeout=None)
    async with (
        TestClient(server, transport="native", timeout=1000) as client,
        client.connect("/r") as ws,
    ):
        await trio.testing.wait_all_tasks_blocked()
        (connection,) = server.registry.all()
        ws.pause_reading()
        # Bad input until the client's socket buffer is full and replies back up.
        for _ in range(2000):
            await ws.send_text("not json")
        await trio.testing.wait_all_tasks_blocked()
        backed_up = connection.buffered_amount
        assert limit - 200 < backed_up <= limit  # error replies wait at the limit
        await trio.sleep(6)  # the heartbeat's ping is queued past the limit, counted
        assert connection.buffered_amount == backed_up + len(b'{"type":"ping"}')
        ws.resume_reading()
        seen = [await ws.receive() for _ in range(2000)]
        assert {"INVALID_JSON"} == {m.get("code") for m in seen if m["type"] == "error"}
