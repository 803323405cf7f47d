"""Attacks on what the server keeps: history, recovery, the memory budget, pongs owed.

Each test is an attack on the in-memory defaults, with the bound that stops it: history
bounded in bytes (per topic and in all), freed when it expires even if nobody publishes
or reads, counted once in ``memory_budget``; reads that create nothing; a frame queued
for many connections counted once; subscriptions counted; recoveries capped
(``max_recovery``) and limited per client address (``recovery_rate``); and a pong for
every ping while few are owed. Sizes are small (a few MiB) and each test stops within
seconds. The Redis broker's side is in ``tests/test_attacks_redis.py``.
"""

from __future__ import annotations

import gc
import socket
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import attrs
import orjson
import pytest
import trio
import trio.testing

from tests._rawws import PING, PONG, TEXT, RawClient, encode_frame, handshake, handshake_on
from tests.conftest import ServeLive, wait_until
from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    History,
    HistoryPolicy,
    MemoryBroker,
    Position,
    RateLimit,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes._flow import RecoveryLimiter
from trio_wsroutes._messages import encode_message

MiB = 1024 * 1024
TIMEOUT = 20


@message("said")
@attrs.frozen
class Said:
    n: int
    text: str = ""


@message("joined")
@attrs.frozen
class Joined:
    recovered: bool
    missed: int


@attrs.frozen
class Topics:
    names: list[str]


Out = Said | Joined


def topic_server(*, read_history: bool = False, **options: Any) -> WebSocketServer:
    """``/topic/{name}`` subscribes to ``name`` on connect (recovering from the client's
    ``since``) and answers ``joined``; with ``read_history`` it first reads the topic's
    history, as an app that sends recent messages on join does."""
    route = create_websocket_route("/topic/:name").server_messages(Said, Joined)
    server: WebSocketServer

    @route.on_connect
    async def join(ws: Connection[Out], ctx: Context[None]) -> None:
        topic = ctx.params["name"]
        if read_history:
            await server.history(topic, limit=10)
        recovery = await ws.subscribe(topic)
        await ws.send(Joined(recovery.recovered, recovery.missed))

    @route.on("subscribe", Topics)
    async def subscribe(ws: Connection[Out], data: Topics, ctx: Context[None]) -> None:
        for name in data.names:
            await ws.subscribe(name)

    options.setdefault("history", {"room:*": History(size=100)})
    server = WebSocketServer([route], **options)
    return server


def since(topic: str, position: Position) -> str:
    return "?since=" + quote(f"{topic}@{position.epoch}:{position.offset}", safe="")


@asynccontextmanager
async def joined(
    address: BoundAddress, topic: str, query: str = "", *, rcvbuf: int | None = None
) -> AsyncIterator[tuple[RawClient, dict[str, Any]]]:
    """A raw client of ``/topic/{topic}``, with what ``joined`` said. ``rcvbuf`` shrinks
    its socket's receive buffer (a client that reads slowly, or not at all)."""
    if rcvbuf is None:
        stream, status, headers, leftover = await handshake(address, f"/topic/{topic}{query}")
    else:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((address.host, address.port))
        stream = trio.SocketStream(sock)
        status, headers, leftover = await handshake_on(
            stream, f"{address.host}:{address.port}", f"/topic/{topic}{query}"
        )
    assert status == 101
    client = RawClient(stream, headers, leftover)
    try:
        while True:
            body = orjson.loads((await client.receive_data()).payload)
            if body["type"] == "joined":
                break
        yield client, body["data"]
    finally:
        await trio.aclose_forcefully(stream)


async def said(client: RawClient) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads((await client.receive_data()).payload)
    assert body["type"] == "said", body
    return body


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.fixture
def tracing() -> AsyncIterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


# -- history in bytes, counted once, freed when it expires ----------------------------------


async def test_history_is_bounded_in_bytes_by_default(
    serve_live: ServeLive, tracing: None
) -> None:
    # 30 publications of 1 MiB on a topic that keeps 100: the default per topic (4 MiB)
    # holds; before, all 30 MiB were kept (and each kept frame cached its wire bytes too).
    server = topic_server()
    payload = "x" * MiB
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with joined(address, "room:big") as (client, _):
                before = traced()
                for n in range(30):
                    await server.publish("room:big", Said(n, payload))
                    assert (await said(client))["data"]["n"] == n
                held = traced() - before
    assert held < 6 * MiB
    page = await server.history("room:big")
    assert 3 <= len(page.publications) <= 4
    assert sum(len(p.payload) for p in page.publications) <= History(size=1).max_bytes


async def test_a_kept_publication_costs_its_bytes_once_and_counts_in_the_budget(
    serve_live: ServeLive, tracing: None
) -> None:
    server = topic_server(history={"room:*": History(size=100, max_bytes=16 * MiB)})
    payload = "y" * MiB
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with (
                joined(address, "room:a") as (client, _),
                joined(address, "room:a") as (
                    other,
                    _,
                ),
            ):
                before = traced()
                budget_before = server.memory.used
                for n in range(8):
                    await server.publish("room:a", Said(n, payload))
                    await said(client)
                    await said(other)
                await trio.sleep(0.1)  # the writers are done with the live frames
                held = traced() - before
                counted = server.memory.used - budget_before
    # Eight payloads of 1 MiB, each held once (not with a wire copy beside it), and the
    # memory budget counts them.
    assert 8 * MiB <= held < 8 * MiB * 1.25
    assert 8 * MiB <= counted < 8 * MiB * 1.01


async def test_the_history_of_all_topics_together_is_bounded() -> None:
    policy = HistoryPolicy({"room:*": History(size=100)}, max_bytes=3 * MiB)
    broker = MemoryBroker(history=policy)
    for n in range(20):
        await broker.publish(f"room:{n}", encode_message(Said(n, "z" * (MiB // 2))))
    assert broker.history_bytes <= 3 * MiB
    # The topics published to last keep theirs; the oldest lost theirs first.
    assert (await broker.history("room:19")).publications
    assert not (await broker.history("room:0")).publications


async def test_expired_history_is_freed_without_a_publish_or_a_read(
    serve_live: ServeLive,
) -> None:
    # Before, expired history was dropped only when its topic was published to or read
    # again: 10 s after a 2 s ttl, hundreds of MiB were still held.
    server = topic_server(history={"room:*": History(size=100, ttl=0.3)})
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with joined(address, "room:t") as (client, _):
                before = server.memory.used
                for n in range(4):
                    await server.publish("room:t", Said(n, "t" * MiB))
                    await said(client)
                # Kept, and counted in the memory budget...
                assert server.memory.used - before > 3 * MiB
                # ...until the sweep frees it: nobody publishes to room:t or reads it.
                await wait_until(lambda: server.memory.used - before < MiB, timeout=10)


# -- reads create nothing -------------------------------------------------------------------


async def test_reading_history_of_unknown_topics_creates_nothing(serve_live: ServeLive) -> None:
    # An app that reads a room's history on join, and clients that join random rooms
    # with a position: before, each read created the room's history, so 200 of them
    # evicted a real room (max_topics 50) and its client could not recover.
    policy = HistoryPolicy({"room:*": History(size=100)}, max_topics=50)
    server = topic_server(read_history=True, history=policy)
    broker = server.broker
    assert isinstance(broker, MemoryBroker)
    async with serve_live(server) as address:
        with trio.fail_after(60):
            async with joined(address, "room:real") as (client, _):
                await server.publish("room:real", Said(1))
                last = await said(client)
            for n in range(3):
                await server.publish("room:real", Said(n + 2))
            stale = Position(last["epoch"], 1)
            for _ in range(200):
                name = f"room:{uuid.uuid4().hex}"
                async with joined(address, name, since(name, stale)) as (_, info):
                    assert info == {"recovered": False, "missed": 0}
            assert broker.history_topics() == 1
            page = await server.history(f"room:{uuid.uuid4().hex}")
            assert (page.publications, page.recovered) == ((), False)
            assert broker.history_topics() == 1
            async with joined(address, "room:real", since("room:real", stale)) as (_, info):
                assert info == {"recovered": True, "missed": 3}


# -- a frame queued for many connections counts once -----------------------------------------


async def test_a_frame_queued_for_many_connections_counts_once(serve_live: ServeLive) -> None:
    # 16 clients that never read, each with the same 4 MiB queued, and a bystander that
    # reads a burst. Before, the budget counted the shared frames 16 times (64 MiB over a
    # 24 MiB budget) and closed the bystander with 1013 after a few messages.
    server = topic_server(
        memory_budget=24 * MiB, backpressure_limit=8 * MiB, history={}, recovery_rate=None
    )
    chunk = "s" * (256 * 1024)
    async with serve_live(server) as address, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            stuck: list[RawClient] = []
            for _ in range(16):
                opened = joined(address, "feed", rcvbuf=4096)
                client, _ = await opened.__aenter__()
                stuck.append(client)
                nursery.start_soon(_close_later, opened)
            for n in range(16):
                await server.publish("feed", Said(n, chunk))
            queued = [ws.buffered_amount for ws in server.registry.all()]
            assert sum(queued) > 32 * MiB  # what each connection waits to send...
            assert server.memory.used < 8 * MiB  # ...held, and counted, once
            async with joined(address, "news") as (bystander, _):
                for n in range(200):
                    await server.publish("news", Said(n, "b" * 1024))
                for n in range(200):
                    assert (await said(bystander))["data"]["n"] == n
            assert server.stats.slow_consumer_closes == 0
            nursery.cancel_scope.cancel()


async def _close_later(opened: Any) -> None:
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await opened.__aexit__(None, None, None)


# -- subscriptions count ---------------------------------------------------------------------


async def test_subscriptions_count_in_the_memory_budget(serve_live: ServeLive) -> None:
    # 999 subscriptions of 256-character topics hold about 650 KB; the budget sees them,
    # gives them back when the connection goes, and refuses more once it is spent.
    server = topic_server(memory_budget=MiB, history={})
    names = [f"{n:04d}".ljust(256, "t") for n in range(999)]
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            before = server.memory.used
            async with joined(address, "first") as (client, _):
                request = {"type": "subscribe", "id": 1, "data": {"names": names}}
                await client.send(TEXT, orjson.dumps(request))
                reply = orjson.loads((await client.receive_data()).payload)
                assert reply == {"type": "ack", "id": 1}
                used = server.memory.used - before
                assert 999 * 256 < used < 999 * 1024
                async with joined(address, "second") as (other, _):
                    other_names = [f"b{n}".ljust(256, "t") for n in range(999)]
                    request["data"] = {"names": other_names}
                    await other.send(TEXT, orjson.dumps(request))
                    reply = orjson.loads((await other.receive_data()).payload)
                    assert reply["code"] == "TOO_MANY_TOPICS"  # the budget is spent
            await wait_until(lambda: server.memory.used == before)


# -- recovery is capped and limited per address -----------------------------------------------


async def test_one_recovery_sends_at_most_max_recovery_publications(
    serve_live: ServeLive,
) -> None:
    server = topic_server(max_recovery=50, recovery_rate=None)
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with joined(address, "room:r") as (client, _):
                await server.publish("room:r", Said(0))
                first = await said(client)
            for n in range(1, 81):
                await server.publish("room:r", Said(n))
            epoch = first["epoch"]
            # 80 missed, over the cap: nothing old, and the client is told.
            async with joined(address, "room:r", since("room:r", Position(epoch, 1))) as (
                _,
                info,
            ):
                assert info == {"recovered": False, "missed": 0}
            async with joined(address, "room:r", since("room:r", Position(epoch, 41))) as (
                client,
                info,
            ):
                assert info == {"recovered": True, "missed": 40}


async def test_recoveries_from_one_address_are_limited(serve_live: ServeLive) -> None:
    # A client that reconnects and recovers the whole history in a loop: what the
    # server sends it is bounded by recovery_rate (here 200 publications a second, 200
    # at once) instead of growing with the loop (before: a full recovery each time).
    server = topic_server(
        history={"room:*": History(size=200)},
        recovery_rate=RateLimit(200, burst=200, bytes_per_second=MiB),
    )
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with joined(address, "room:loop") as (client, _):
                await server.publish("room:loop", Said(0))
                first = await said(client)
            for n in range(1, 201):
                await server.publish("room:loop", Said(n, "l" * 100))
            query = since("room:loop", Position(first["epoch"], 1))
            recovered = 0
            started = trio.current_time()
            while trio.current_time() - started < 2.0:
                async with joined(address, "room:loop", query) as (_, info):
                    recovered += info["missed"]
            elapsed = trio.current_time() - started
            # The burst, plus the rate for the time it ran, plus one recovery in debt.
            assert recovered <= 200 + 200 * elapsed + 200
            assert recovered >= 200  # the first one recovered


async def test_the_recovery_limit_is_per_address() -> None:
    limiter = RecoveryLimiter(RateLimit(10, burst=10))
    assert limiter.allows("10.0.0.1")
    limiter.charge("10.0.0.1", 30, 3000)  # one recovery may go into debt
    assert not limiter.allows("10.0.0.1")
    assert limiter.allows("10.0.0.2")
    assert RecoveryLimiter(None).allows("10.0.0.1")


def test_a_server_used_by_a_later_trio_run_keeps_its_recovery_allowance() -> None:
    # Trio's clock starts anywhere in each run; a server object reused by the next run
    # (as tests do) saw time go backwards and refused every recovery until it caught up.
    limiter = RecoveryLimiter(RateLimit(10, burst=10))

    async def charged() -> None:
        limiter.charge("10.0.0.1", 1, 100)

    async def allowed() -> bool:
        return limiter.allows("10.0.0.1")

    late = trio.testing.MockClock()
    late.jump(10_000)
    trio.run(charged, clock=late)
    assert trio.run(allowed, clock=trio.testing.MockClock())


# -- pongs ------------------------------------------------------------------------------------


async def test_every_ping_gets_its_pong(serve_live: ServeLive) -> None:
    # RFC 6455 lets a server answer only the latest ping, but clients (and the
    # Autobahn|Testsuite, cases 2.10 and 2.11) expect one pong per ping.
    server = topic_server(history={})
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with joined(address, "pings") as (client, _):
                payloads = [b"ping %d" % n for n in range(10)]
                await client.send_raw(
                    b"".join(encode_frame(PING, payload) for payload in payloads)
                )
                pongs = []
                while len(pongs) < 10:
                    frame = await client.receive()
                    assert frame is not None
                    if frame.opcode == PONG:
                        pongs.append(frame.payload)
                assert pongs == payloads
