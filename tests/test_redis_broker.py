"""RedisBroker against a real redis-server: servers sharing topics, faults, bounded memory.

Each test starts its own ``redis-server`` on a free 127.0.0.1 port (``tests/_redis.py``);
without one the tests skip with the reason, except under ``CI=true`` where they fail.
Every wait is bounded with ``trio.fail_after``; nothing asserts on timing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import HandshakeError, WebSocketConnection, open_websocket_url

import trio_wsroutes._broker.redis as redis_module
from tests._redis import RedisServer, free_port, require_coredis, require_redis
from tests.conftest import live_server
from trio_wsroutes import (
    Connection,
    Context,
    Frame,
    RedisBroker,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes._broker.redis import WireMessage, decode_wire, encode_wire
from trio_wsroutes.testing import TestClient, TestConnection

ROOT = Path(__file__).resolve().parent.parent


def fast(url: str) -> RedisBroker:
    """A broker that retries quickly (tests restart Redis)."""
    return RedisBroker(url, reconnect_delay=0.05, max_reconnect_delay=0.5)


@attrs.frozen
class Say:
    n: int


@message("said")
@attrs.frozen
class Said:
    sender: str
    n: int


@message("joined")
@attrs.frozen
class Joined:
    you: str


def chat_route() -> WebSocketRoute[None, Said | Joined]:
    route = create_websocket_route("/chat/:room").server_messages(Said, Joined)

    @route.on_connect
    async def joined(ws: Connection[Said | Joined], ctx: Context[None]) -> None:
        await ws.subscribe(f"room:{ctx.params['room']}")
        await ws.send(Joined(you=ws.id))

    @route.on("say", Say)
    async def say(ws: Connection[Said | Joined], data: Say, ctx: Context[None]) -> None:
        await ws.publish(f"room:{ctx.params['room']}", Said(sender=ws.id, n=data.n))

    return route


class Recorder:
    """A subscriber that keeps what it is given (optionally slowly, or gone)."""

    def __init__(self, *, delay: float = 0.0, gone: bool = False) -> None:
        self.frames: list[Frame] = []
        self.delay = delay
        self.gone = gone

    def deliver(self, frame: Frame) -> bool:
        if self.gone:
            return False
        if self.delay:
            time.sleep(self.delay)  # a local slow-down: the fan-out blocks the Trio loop
        self.frames.append(frame)
        return True


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(require_redis(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def stopped_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that the test starts itself."""
    server = RedisServer(require_redis(), tmp_path)
    try:
        yield server
    finally:
        server.kill()


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state owned by other tasks
            await trio.sleep(0.01)


def channels(redis: RedisServer) -> set[bytes]:
    reply = redis.command("PUBSUB", "CHANNELS")
    assert reply.startswith(b"*"), reply
    return set(reply.split(b"\r\n")[2::2]) - {b""}


# -- the wire format --------------------------------------------------------------------------


def test_wire_format_round_trips_and_rejects_malformed_messages() -> None:
    text = Frame(b'{"type":"said","data":{"n":1}}')
    data = encode_wire(text, b"42-abc", 7)
    assert data == b'wsr1 t 42-abc 7\n{"type":"said","data":{"n":1}}'
    assert decode_wire(data) == WireMessage(False, b"42-abc", 7, text.payload)

    binary = encode_wire(Frame(b"\x00\xff\n", binary=True))
    assert binary == b"wsr1 b - 0\n\x00\xff\n"
    assert decode_wire(binary) == WireMessage(True, None, 0, b"\x00\xff\n")

    # Any Redis client can publish plain JSON: a text frame as it stands.
    assert decode_wire(b'{"type":"x"}') == WireMessage(False, None, 0, b'{"type":"x"}')

    for bad in (
        b"\xff\xfe not utf-8",  # a text frame must be UTF-8
        b"wsr1 t - 0\n\xff",
        b"wsr1 x - 0\n{}",  # unknown kind
        b"wsr1 t - 0 extra\n{}",
        b"wsr1 t - -1\n{}",
        b"wsr1 t  1\n{}",
        b"wsr1 t - 1",  # no end of header
        b"wsr1 " + b"t" * 300 + b"\n{}",  # header too long
    ):
        assert decode_wire(bad) is None, bad


@pytest.fixture
def coredis() -> None:
    """Skip (fail in CI) without coredis; a sync fixture, so the reason shows."""
    require_coredis()


@pytest.mark.usefixtures("coredis")
async def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisBroker("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="positive"):
        RedisBroker(max_queued_messages=0)
    assert RedisBroker("redis://user:secret@127.0.0.1:6379/0").url == (
        "redis://user:***@127.0.0.1:6379/0"
    )


# -- several servers, one Redis ----------------------------------------------------------------


async def test_two_servers_under_real_hypercorn_deliver_every_publish_in_order(
    redis: RedisServer,
) -> None:
    brokers = [RedisBroker(redis.url), RedisBroker(redis.url)]
    servers = [WebSocketServer([chat_route()], broker=broker) for broker in brokers]
    per_sender = 25
    with trio.fail_after(60):
        async with live_server(servers[0]) as first, live_server(servers[1]) as second:
            async with AsyncExitStack() as stack:
                clients: list[WebSocketConnection] = []
                for address in (first, first, second, second):
                    clients.append(
                        await stack.enter_async_context(
                            open_websocket_url(address.ws_url + "/chat/lobby")
                        )
                    )
                ids = [json.loads(await ws.get_message())["data"]["you"] for ws in clients]
                received: list[list[dict[str, Any]]] = [[] for _ in clients]

                async def talk(ws: WebSocketConnection) -> None:
                    for n in range(per_sender):
                        await ws.send_message(json.dumps({"type": "say", "data": {"n": n}}))

                async def listen(index: int) -> None:
                    # Every other client's messages; never its own.
                    for _ in range(per_sender * (len(clients) - 1)):
                        received[index].append(json.loads(await clients[index].get_message()))

                async with trio.open_nursery() as nursery:
                    for index, ws in enumerate(clients):
                        nursery.start_soon(listen, index)
                        nursery.start_soon(talk, ws)

                for index, messages in enumerate(received):
                    by_sender: dict[str, list[int]] = {}
                    for msg in messages:
                        assert msg["type"] == "said"
                        by_sender.setdefault(msg["data"]["sender"], []).append(msg["data"]["n"])
                    assert set(by_sender) == set(ids) - {ids[index]}  # the sender is skipped
                    for numbers in by_sender.values():
                        assert numbers == list(range(per_sender))  # all, once, in order
                # Nothing more is on its way (no duplicates).
                for ws in clients:
                    with trio.move_on_after(0.2) as scope:
                        extra = await ws.get_message()
                        pytest.fail(f"unexpected message {extra!r}")
                    assert scope.cancelled_caught
    for broker in brokers:
        assert broker.stats.duplicates == broker.stats.missed == 0
        assert broker.stats.received == per_sender * 2  # the other server's two clients
        assert broker.state == "stopped"


async def test_publisher_only_handles_reach_every_server(redis: RedisServer) -> None:
    servers = [WebSocketServer([chat_route()], broker=RedisBroker(redis.url)) for _ in range(2)]
    with trio.fail_after(30):
        async with TestClient(servers[0]) as one, TestClient(servers[1]) as two:
            async with one.connect("/chat/lobby") as a, two.connect("/chat/lobby") as b:
                for ws in (a, b):
                    await ws.receive()
                # One-off: connect, publish, disconnect; returns the processes reached.
                reached = await RedisBroker(redis.url).publish("room:lobby", Said("cron", 1))
                assert reached == 2
                for ws in (a, b):
                    assert await ws.receive() == {
                        "type": "said",
                        "data": {"sender": "cron", "n": 1},
                    }
                # Kept open: publishes are queued and flushed at exit.
                async with RedisBroker(redis.url) as handle:
                    assert handle.connected
                    await handle.publish("room:lobby", Said("worker", 2))
                    await handle.publish_binary("room:lobby", b"\x00\x01")
                    await handle.publish("room:lobby", Frame(b'{"type":"said","data":{}}'))
                assert handle.stats.published == 3
                for ws in (a, b):
                    assert (await ws.receive())["data"] == {"sender": "worker", "n": 2}
                    assert await ws.receive_bytes() == b"\x00\x01"
                    assert await ws.receive() == {"type": "said", "data": {}}
                # Any Redis client: plain JSON, or the header for a binary frame.
                redis.command("PUBLISH", "wsroutes:room:lobby", '{"type":"said","data":{"n":3}}')
                redis.command("PUBLISH", "wsroutes:room:lobby", "wsr1 b - 0\nraw")
                for ws in (a, b):
                    assert (await ws.receive())["data"] == {"n": 3}
                    assert await ws.receive_bytes() == b"raw"


@pytest.mark.usefixtures("coredis")
async def test_publisher_only_handle_raises_when_redis_is_unreachable() -> None:
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", timeout=2)
    with trio.fail_after(10), pytest.raises(ConnectionError, match="could not publish"):
        await broker.publish("t", Said("x", 1))
    assert broker.stats.publish_lost == 1


async def test_subscriber_count_is_local_and_a_broker_runs_once(redis: RedisServer) -> None:
    one, two = RedisBroker(redis.url), RedisBroker(redis.url)
    with trio.fail_after(20):
        async with one, two:
            await one.subscribe("t", Recorder())
            await two.subscribe("t", Recorder())
            await two.subscribe("t", Recorder())
            assert one.subscriber_count("t") == 1
            assert two.subscriber_count("t") == 2
            with pytest.raises(RuntimeError, match="already running"):
                await one.run()


async def test_redis_channels_follow_local_subscribers(redis: RedisServer) -> None:
    broker, publisher = RedisBroker(redis.url), RedisBroker(redis.url)
    first, second = Recorder(), Recorder()
    with trio.fail_after(20):
        async with broker, publisher:
            await broker.subscribe("t", first)  # returns once Redis has acknowledged
            assert channels(redis) == {b"wsroutes:t"}
            await broker.subscribe("t", second)
            await broker.unsubscribe("t", first)
            assert channels(redis) == {b"wsroutes:t"}
            await broker.unsubscribe_all(second)
            await wait_until(lambda: channels(redis) == set())

            # A subscriber found gone during a fan-out leaves, and so does the channel.
            gone = Recorder(gone=True)
            await broker.subscribe("u", gone)
            assert channels(redis) == {b"wsroutes:u"}
            await publisher.publish("u", Frame(b"{}"))
            await wait_until(lambda: channels(redis) == set())
            assert broker.subscriber_count("u") == 0


async def test_server_runs_the_broker_around_its_startup_and_shutdown_hooks(
    redis: RedisServer,
) -> None:
    broker = RedisBroker(redis.url)
    server = WebSocketServer([chat_route()], broker=broker)
    seen: list[tuple[str, str]] = []

    @server.on_startup
    async def up(nursery: trio.Nursery) -> None:
        seen.append(("startup", broker.state))

    @server.on_shutdown
    async def down() -> None:
        seen.append(("shutdown", broker.state))

    with trio.fail_after(20):
        async with TestClient(server):
            assert broker.connected
    assert seen == [("startup", "connected"), ("shutdown", "connected")]
    assert broker.state == "stopped"


# -- faults ------------------------------------------------------------------------------------


async def collect(ws: TestConnection, into: list[int], until: int | None = None) -> None:
    while until is None or not into or into[-1] < until:
        msg = await ws.receive()
        into.append(msg["data"]["n"])


async def test_redis_restart_mid_stream_resumes_without_duplicates_and_counts_the_gap(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_wsroutes.redis")
    sending, receiving = fast(redis.url), fast(redis.url)
    server_a = WebSocketServer([chat_route()], broker=sending)
    server_b = WebSocketServer([chat_route()], broker=receiving)
    sent = 0
    stop = trio.Event()

    async def publish_stream() -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            await server_a.publish("room:r", Said("a", sent))
            await trio.sleep(0.002)

    remote: list[int] = []
    local: list[int] = []
    with trio.fail_after(60):
        async with TestClient(server_a) as one, TestClient(server_b) as two:
            async with two.connect("/chat/r") as far, one.connect("/chat/r") as near:
                await far.receive()
                await near.receive()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish_stream)
                    while len(remote) < 20:
                        remote.append((await far.receive())["data"]["n"])
                    redis.kill()
                    await wait_until(lambda: not sending.connected and not receiving.connected)
                    await wait_until(lambda: sending.stats.publish_lost >= 20)
                    await trio.to_thread.run_sync(redis.start)
                    restarted_at, mark = trio.current_time(), sent
                    await collect(far, remote, until=mark + 1)
                    resumed_after = trio.current_time() - restarted_at
                    await collect(far, remote, until=mark + 20)  # and it goes on
                    stop.set()
                await sending.flush()
                while True:  # what was still on its way
                    try:
                        remote.append((await far.receive(timeout=0.5))["data"]["n"])
                    except trio.TooSlowError:
                        break
                while len(local) < sent:
                    local.append((await near.receive())["data"]["n"])

    # Local traffic never stopped: the publisher's own server delivered everything.
    assert local == list(range(1, sent + 1))
    # Across Redis: in order, no duplicates, a gap, and the gap counted exactly.
    assert remote == sorted(set(remote))
    gap = remote[-1] - remote[0] + 1 - len(remote)
    assert gap > 0
    assert receiving.stats.missed == gap
    assert receiving.stats.duplicates == 0
    assert sending.stats.publish_lost >= 20
    assert sending.stats.disconnects == receiving.stats.disconnects == 1
    assert sending.stats.connects == receiving.stats.connects == 2
    # One log line per state change: connected, lost, reconnected (for each broker).
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_wsroutes.redis"]
    assert sum("lost connection" in line for line in lines) == 2, lines
    assert sum("reconnected" in line for line in lines) == 2, lines
    assert len(lines) == 6, lines
    print(f"\nredis restart: delivery resumed {resumed_after:.2f} s after redis-server restarted")
    print(f"gap: {gap} messages missed, {sending.stats.publish_lost} publishes lost")


async def test_redis_closing_a_slow_subscriber_is_handled_as_a_reconnect(
    redis: RedisServer,
) -> None:
    broker = fast(redis.url)
    server = WebSocketServer([chat_route()], broker=broker)
    with trio.fail_after(30):
        async with TestClient(server) as client, client.connect("/chat/r") as ws:
            await ws.receive()
            # Redis drops a pub/sub client whose output buffer passes 64 KiB.
            redis.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 65536 0 0")
            big = json.dumps({"type": "said", "data": {"text": "x" * 300_000}})
            redis.command("PUBLISH", "wsroutes:room:r", big)
            await wait_until(lambda: broker.stats.disconnects == 1 and broker.connected)
            redis.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")
            redis.command("PUBLISH", "wsroutes:room:r", '{"type":"said","data":{"n":1}}')
            msg = await ws.receive()
            if "text" in msg["data"]:  # it may have gone out before Redis closed us
                msg = await ws.receive()
            assert msg["data"] == {"n": 1}
            assert broker.stats.connects == 2


async def test_local_traffic_flows_while_redis_is_down(stopped_redis: RedisServer) -> None:
    redis = stopped_redis
    broker = fast(redis.url)
    server = WebSocketServer([chat_route()], broker=broker)
    with trio.fail_after(30):
        async with TestClient(server) as client:
            assert broker.state == "disconnected"  # startup does not wait for Redis
            async with client.connect("/chat/r") as a, client.connect("/chat/r") as b:
                await a.receive()
                await b.receive()
                await a.send("say", {"n": 1})
                assert (await b.receive())["data"]["n"] == 1
                assert broker.stats.publish_lost == 1
                await trio.to_thread.run_sync(redis.start)
                await wait_until(lambda: broker.connected)
                assert await RedisBroker(redis.url).publish("room:r", Said("x", 2)) == 1
                assert (await a.receive())["data"]["n"] == 2
                assert (await b.receive())["data"]["n"] == 2


async def test_a_local_slowdown_cannot_grow_memory_without_bound(redis: RedisServer) -> None:
    limit = 64 * 1024
    receiving = RedisBroker(redis.url, max_queued_bytes=limit)
    sending = RedisBroker(redis.url)
    slow = Recorder(delay=0.0005)  # 2 000 messages/s at most
    payload = Frame(b"x" * 1024)
    total = 10_000  # 10 MiB through Redis, 160 times the queue's limit
    with trio.fail_after(60):
        async with receiving, sending:
            await receiving.subscribe("flood", slow)
            for _ in range(total):
                await sending.publish("flood", payload)
            await sending.flush()
            assert sending.stats.published == total
            await wait_until(lambda: receiving.stats.received == total, timeout=30)
            await wait_until(lambda: receiving.inbound_queue_bytes == 0, timeout=30)
    stats = receiving.stats
    assert stats.receive_dropped > 0
    assert stats.inbound_queue_peak_bytes <= limit
    assert len(slow.frames) + stats.receive_dropped == total
    assert stats.missed == stats.duplicates == 0
    print(
        f"\nlocal slow-down: peak queue {stats.inbound_queue_peak_bytes} bytes (limit {limit}),"
        f" {stats.receive_dropped} of {total} dropped"
    )


async def test_without_coredis_internals_the_public_push_api_still_delivers_in_order(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_bulk_access(connection: object) -> None:
        return None

    monkeypatch.setattr(redis_module, "_nowait_receiver", no_bulk_access)
    receiving, sending = RedisBroker(redis.url), RedisBroker(redis.url)
    recorder = Recorder()
    with trio.fail_after(30):
        async with receiving, sending:
            await receiving.subscribe("t", recorder)
            for n in range(2000):
                await sending.publish("t", Frame(b"%d" % n))
            await sending.flush()
            await wait_until(lambda: len(recorder.frames) == 2000)
    assert [int(frame.payload) for frame in recorder.frames] == list(range(2000))


async def test_chat_example_on_two_hypercorn_workers_shares_rooms_through_redis(
    redis: RedisServer, tmp_path: Path
) -> None:
    """The README's command: ``WSROUTES_REDIS_URL=... hypercorn --workers 2 ...``."""
    port = free_port()
    log_path = tmp_path / "hypercorn.log"
    log = log_path.open("wb")
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "2"]
    command += ["--bind", f"127.0.0.1:{port}", "examples.chat.app:server"]
    process = await trio.lowlevel.open_process(
        command,
        cwd=ROOT,
        env={**os.environ, "WSROUTES_REDIS_URL": redis.url},
        stdout=log,
        stderr=log,
    )
    try:
        with trio.fail_after(60):
            async with AsyncExitStack() as stack:
                clients: list[WebSocketConnection] = []

                def subscribed_processes() -> int:
                    reply = redis.command("PUBSUB", "NUMSUB", "wsroutes:room:lobby")
                    return int(reply.split(b"\r\n")[-2].lstrip(b":"))

                # Both workers listening (each logs it), then connect until both have
                # someone in the room: the kernel picks the worker for each connection.
                await wait_until(
                    lambda: log_path.read_bytes().count(b"Running on") >= 2, timeout=30
                )
                while subscribed_processes() < 2:
                    assert len(clients) < 40, "every connection went to one worker"
                    while True:
                        try:
                            ws = await stack.enter_async_context(
                                open_websocket_url(f"ws://127.0.0.1:{port}/chat/lobby")
                            )
                            break
                        except (OSError, HandshakeError):  # not listening yet
                            await trio.sleep(0.1)
                    assert json.loads(await ws.get_message())["type"] == "joined"
                    clients.append(ws)
                await clients[0].send_message(
                    json.dumps({"type": "chat", "data": {"text": "hello, both workers"}})
                )
                for ws in clients:
                    msg = json.loads(await ws.get_message())
                    assert msg["type"] == "message"
                    assert msg["data"]["text"] == "hello, both workers"
    finally:
        process.terminate()
        with trio.move_on_after(10) as scope:
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            await process.wait()
        log.close()
