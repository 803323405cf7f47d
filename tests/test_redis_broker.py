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
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import HandshakeError, WebSocketConnection, open_websocket_url

import trio_wsroutes._broker.redis._inbound as inbound_module
import trio_wsroutes._broker.redis._recovery as recovery_module
from tests._redis import RedisServer, free_port, require_coredis
from tests.conftest import live_server, wait_until
from tests.test_history import Recorder as Positions
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
from trio_wsroutes._history import NOT_RECOVERED, History, HistoryPolicy, Position, Recovery
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
        self.topics: set[str] = set()

    def deliver(self, frame: Frame) -> bool:
        if self.gone:
            return False
        if self.delay:
            time.sleep(self.delay)  # a local slow-down: the fan-out blocks the Trio loop
        self.frames.append(frame)
        return True


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


def test_the_usual_header_is_parsed_as_strictly_as_any_other() -> None:
    # Most messages have an origin, a sequence number and a publish time and nothing
    # else: the same fields, the same limits, as in any other header.
    def plain(header: bytes, payload: bytes = b"{}") -> WireMessage | None:
        return decode_wire(b"wsr1 " + header + b"\n" + payload)

    expected = WireMessage(False, b"42-abc", 7, b"{}", published=5, extensions=b"t=5")
    assert plain(b"t 42-abc 7 t=5") == expected
    assert plain(b"b 42-abc 7 t=5", b"\xff") == expected._replace(binary=True, payload=b"\xff")
    assert plain(b"t - 0 t=5") == expected._replace(origin=None, seq=0)
    longest = b"t 1234567890-" + b"f" * 32 + b" " + b"9" * 19 + b" t=" + b"9" * 16
    message = plain(longest)
    assert message is not None and message.published == int(b"9" * 16)
    # A publish time it refuses is left out; the message stays.
    for refused in (b"05", b"9" * 17, b""):
        assert plain(b"t 42-abc 7 t=" + refused) == expected._replace(
            published=0, extensions=b"t=" + refused, ignored=True
        )
    for bad in (
        (b"t 42-abc 7 t=5", b"\xff"),  # a text payload must be UTF-8
        (b"t 42-ABC 7 t=5", b"{}"),
        (b"t 12345678901-a 7 t=5", b"{}"),
        (b"t 42-" + b"a" * 33 + b" 7 t=5", b"{}"),
        (b"t 42-abc 07 t=5", b"{}"),
        (b"t 42-abc " + b"1" * 20 + b" t=5", b"{}"),
        (b"t - 1 t=5", b"{}"),
        (b"t 42-abc 7 t=5 t=6", b"{}"),
    ):
        assert plain(*bad) is None, bad


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
    second.topics.add("t")  # a subscriber lists its topics: unsubscribe_all reads them
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

    monkeypatch.setattr(inbound_module, "_nowait_receiver", no_bulk_access)
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
                    # Which worker accepts is up to the kernel (and to which one is idle):
                    # give the other one time to be the one that wakes up.
                    assert len(clients) < 200, "every connection went to one worker"
                    await trio.sleep(0.02)
                    while True:
                        try:
                            ws = await stack.enter_async_context(
                                open_websocket_url(f"ws://127.0.0.1:{port}/chat/lobby")
                            )
                            break
                        except (OSError, HandshakeError):  # not listening yet
                            await trio.sleep(0.1)
                    joined = json.loads(await ws.get_message())
                    assert joined["type"] == "joined"
                    # Who is in the room comes from Redis: every worker's connections.
                    assert joined["data"]["user_count"] == len(clients) + 1
                    assert len(joined["data"]["people"]) == len(clients) + 1
                    clients.append(ws)
                await clients[0].send_message(
                    json.dumps({"type": "chat", "data": {"text": "hello, both workers"}})
                )
                for i, ws in enumerate(clients):
                    # The arrivals of those who came after it, once each, from either
                    # worker, and the message.
                    frames = [json.loads(await ws.get_message()) for _ in clients[i:]]
                    types = sorted(frame["type"] for frame in frames)
                    assert types == ["message"] + ["presence_join"] * (len(clients) - 1 - i)
                    msg = next(frame for frame in frames if frame["type"] == "message")
                    assert msg["data"]["text"] == "hello, both workers"
    finally:
        process.terminate()
        with trio.move_on_after(10) as scope:
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            await process.wait()
        log.close()


# -- history and recovery ------------------------------------------------------------------------

HISTORY = {"room:*": History(size=1000), "small:*": History(size=3), "brief:*": History(10, 0.2)}


def history_broker(url: str, **options: Any) -> RedisBroker:
    """A broker with history on ``room:*``, ``small:*`` and ``brief:*``, quick to retry."""
    options.setdefault("history", HISTORY)
    return RedisBroker(url, reconnect_delay=0.05, max_reconnect_delay=0.5, **options)


def test_wire_format_of_publications_with_a_position() -> None:
    data = b'wsr1 h 42-abc 7 12 Ep-1_x\n{"type":"said","offset":12}'
    assert decode_wire(data) == WireMessage(
        False, b"42-abc", 7, b'{"type":"said","offset":12}', 12, "Ep-1_x"
    )
    for bad in (
        b"wsr1 h 42-abc 7 0 Ep\n{}",  # offsets start at 1
        b"wsr1 h 42-abc 7 012 Ep\n{}",
        b"wsr1 h 42-abc 7 -1 Ep\n{}",
        b"wsr1 h 42-abc 7 12 E:p\n{}",  # not an epoch
        b"wsr1 h 42-abc 7 12\n{}",
        b"wsr1 h 42-abc 7\n{}",
        b"wsr1 t 42-abc 7 12 Ep\n{}",  # only h carries a position
        b"wsr1 h 42-abc 7 12 Ep\n\xff",  # a text frame
    ):
        assert decode_wire(bad) is None, bad


async def received(recorder: Positions, count: int, timeout: float = 10.0) -> None:
    await wait_until(lambda: len(recorder.order) >= count, timeout)


async def last_offset(broker: RedisBroker, topic: str) -> int:
    await broker.flush()
    return (await broker.history(topic, limit=0)).position.offset


async def test_history_positions_come_from_redis_in_one_order_for_every_process(
    redis: RedisServer,
) -> None:
    one, two = history_broker(redis.url), history_broker(redis.url)
    near, far, self_ = Positions(), Positions(), Positions()
    with trio.fail_after(30):
        async with one, two:
            await one.subscribe("room:a", near)
            await one.subscribe("room:a", self_)
            await two.subscribe("room:a", far)
            await one.subscribe("lobby", Positions())
            for n in range(1, 11):  # both processes publish, interleaved
                await (one if n % 2 else two).publish("room:a", Said("x", n))
            await one.flush()
            await two.flush()
            # Local subscribers of a history topic get it from Redis too (one order); the
            # publishing connection is skipped as before.
            assert await one.publish("room:a", Said("self", 11), exclude=self_) == 1
            await one.publish_binary("room:a", b"\x00raw")
            await one.publish("room:a", Said("x", 12))
            await one.publish("lobby", Said("x", 0))  # no history: as before
            for recorder, count in ((near, 13), (far, 13), (self_, 12)):
                await received(recorder, count)

    assert near.order == far.order
    assert near.order == [*range(1, 12), b"\x00raw", 12]  # the binary frame unnumbered
    assert self_.order == [*range(1, 11), b"\x00raw", 12]
    numbers = [m["data"]["n"] for m in near.messages]
    assert numbers[10:] == [11, 12]
    # Redis orders the two publishers' publications; each one's stay in its order.
    assert [n for n in numbers if n % 2] == [1, 3, 5, 7, 9, 11]
    assert [n for n in numbers[:10] if not n % 2] == [2, 4, 6, 8, 10]
    assert {m["topic"] for m in near.messages} == {"room:a"}
    assert len({m["epoch"] for m in near.messages}) == 1
    assert one.stats.duplicates == two.stats.duplicates == 0


async def test_a_client_recovers_on_another_worker(redis: RedisServer) -> None:
    worker_a, worker_b = history_broker(redis.url), history_broker(redis.url)
    with trio.fail_after(30):
        async with worker_a, worker_b:
            first = Positions()
            first.topics.add("room:a")  # as a connection lists it
            await worker_a.subscribe("room:a", first)
            for n in range(1, 4):
                await worker_a.publish("room:a", Said("x", n))
            await received(first, 3)
            seen = first.last()
            await worker_a.unsubscribe_all(first)  # the client's connection drops...
            for n in range(4, 11):
                await worker_a.publish("room:a", Said("x", n))  # ...it misses 4 to 10
            await worker_a.flush()

            # It reconnects to the other worker with its last position.
            again = Positions()
            assert await worker_b.subscribe("room:a", again, since=seen) == Recovery(True, 7)
            assert again.offsets == list(range(4, 11))
            await worker_a.publish("room:a", Said("x", 11))
            await received(again, 8)
            assert again.offsets == list(range(4, 12))
            assert worker_b.stats.recoveries == 1
            assert worker_b.stats.recovered_messages == 7

            # Up to date: recovered, nothing missed; already subscribed: nothing twice.
            assert await worker_b.subscribe("room:a", Positions(), since=again.last()) == (
                Recovery(True, 0)
            )
            assert await worker_b.subscribe("room:a", again, since=seen) == NOT_RECOVERED
            # Gone during its recovery: not subscribed.
            gone = Positions(capacity=2)
            assert await worker_b.subscribe("room:a", gone, since=seen) == NOT_RECOVERED
            assert gone.offsets == [4, 5]
            assert worker_b.subscriber_count("room:a") == 2

            # A handle that does not run (a cron job) publishes with a position, and reads.
            handle = RedisBroker(redis.url, history=HISTORY)
            assert await handle.publish("room:a", Said("cron", 12)) == 1  # worker_b
            await received(again, 9)
            assert again.offsets[-1] == 12
            page = await handle.history("room:a", since=Position(seen.epoch, 10))
            assert [p.position.offset for p in page.publications] == [11, 12]
            assert page.position == Position(seen.epoch, 12)


async def test_wrong_epoch_too_old_offset_and_ttl_give_recovered_false_and_nothing_old(
    redis: RedisServer,
) -> None:
    broker = history_broker(redis.url)
    with trio.fail_after(30):
        async with broker:
            for n in range(1, 9):
                await broker.publish("small:a", Said("x", n))  # keeps 6, 7, 8
            await broker.flush()
            page = await broker.history("small:a")
            epoch = page.position.epoch
            assert page.position.offset == 8
            assert [p.position.offset for p in page.publications] == [6, 7, 8]
            for since in (Position("another", 8), Position(epoch, 4), Position(epoch, 99)):
                late = Positions()
                assert await broker.subscribe("small:a", late, since=since) == NOT_RECOVERED
                assert late.messages == []
                lost = await broker.history("small:a", since=since)
                assert (lost.recovered, lost.publications) == (False, ())
            # The oldest kept one is still reachable.
            edge = Positions()
            assert await broker.subscribe("small:a", edge, since=Position(epoch, 5)) == (
                Recovery(True, 3)
            )
            assert edge.offsets == [6, 7, 8]
            assert broker.stats.recoveries_failed == 3

            # ttl: older publications are not returned, the position stays.
            await broker.publish("brief:a", Said("x", 1))
            await broker.flush()
            brief = (await broker.history("brief:a")).position
            await trio.sleep(0.5)
            expired = await broker.history("brief:a")
            assert expired.publications == ()
            assert expired.position == brief
            assert (
                await broker.subscribe("brief:a", Positions(), since=Position(brief.epoch, 0))
                == NOT_RECOVERED
            )
            assert await broker.subscribe("brief:a", Positions(), since=brief) == (
                Recovery(True, 0)
            )


async def test_a_publisher_hammering_during_recovery_gives_contiguous_offsets(
    redis: RedisServer,
) -> None:
    # Correctness of a large recovery: max_recovery (300 by default) is tested elsewhere.
    policy = HistoryPolicy(HISTORY, max_recovery=100_000)
    publisher = history_broker(redis.url, history=policy)
    other = history_broker(redis.url, history=policy)
    witness = Positions()
    local, remote = Positions(), Positions()
    results: list[Recovery] = []
    stop = trio.Event()
    published = 0

    async def hammer() -> None:
        nonlocal published
        while not stop.is_set():
            published += 1
            await publisher.publish("room:h", Said("x", published))  # a checkpoint each

    async def recover(broker: RedisBroker, recorder: Positions, since: Position) -> None:
        results.append(await broker.subscribe("room:h", recorder, since=since))

    with trio.fail_after(60):
        async with publisher, other:
            await other.subscribe("room:h", witness)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hammer)
                await received(witness, 200)
                since = witness.last()
                # The client misses 200 or more while publishes go on.
                await wait_until(lambda: witness.offsets[-1] >= since.offset + 200)
                async with trio.open_nursery() as recoveries:
                    recoveries.start_soon(recover, other, remote, since)  # another process
                    recoveries.start_soon(recover, publisher, local, since)  # the same one
                await received(remote, 2000)
                await received(local, 2000)
                stop.set()
            final = await last_offset(publisher, "room:h")
            await wait_until(lambda: remote.offsets[-1] == local.offsets[-1] == final)

    assert all(result.recovered for result in results)
    assert all(result.missed >= 200 for result in results)
    assert all(since.offset + result.missed < final for result in results)  # then live
    for recorder in (remote, local):
        # Exactly since + 1 to the last one: no gap, no duplicate.
        assert recorder.offsets == list(range(since.offset + 1, final + 1))
    assert witness.offsets == list(range(1, final + 1))
    assert publisher.stats.publish_lost == 0
    assert other.stats.recoveries == publisher.stats.recoveries == 1
    print(f"\nhammering: {final} publications, recovered {[r.missed for r in results]} then live")


async def test_an_overflowing_recovery_buffer_reads_the_history_again_or_gives_up(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = history_broker(redis.url)
    other = history_broker(redis.url, max_recovery_buffer=5)
    witness = Positions()
    reads = 0
    overflow_reads = 1

    real_evalsha = recovery_module.evalsha

    async def slow_read(*args: Any) -> Any:
        # Hold the read until live publications overflow the buffer, ``overflow_reads``
        # times; then read at once.
        nonlocal reads
        reads += 1
        if reads <= overflow_reads:
            target = len(witness.order) + 20
            for n in range(20):
                await publisher.publish("room:o", Said("live", n))
            await received(witness, target)
        return await real_evalsha(*args)

    monkeypatch.setattr(recovery_module, "evalsha", slow_read)  # reads of recoveries
    with trio.fail_after(30):
        async with publisher, other:
            await other.subscribe("room:o", witness)
            for n in range(10):
                await publisher.publish("room:o", Said("old", n))
            await received(witness, 10)
            since = Position(witness.last().epoch, 5)

            recovering = Positions()
            recovery = await other.subscribe("room:o", recovering, since=since)
            assert recovery == Recovery(True, 25)  # 6..30, read again after the overflow
            assert reads == 2
            await publisher.publish("room:o", Said("after", 0))
            await received(recovering, 26)
            assert recovering.offsets == list(range(6, 32))

            # Overflowing on every read: give up, nothing old, live from then on.
            reads, overflow_reads = 0, 3
            failing = Positions()
            assert await other.subscribe("room:o", failing, since=since) == NOT_RECOVERED
            assert reads == 3
            assert failing.messages == []
            await publisher.publish("room:o", Said("after", 1))
            await received(failing, 1)
            assert failing.offsets == [92]
            assert other.stats.recoveries_failed == 1

            # Unsubscribed while recovering: nothing delivered, the channel left.
            reads, overflow_reads = 0, 1
            leaving = Positions()
            leaving.topics.add("room:o")  # as a connection lists it
            async with trio.open_nursery() as nursery:

                async def leave() -> None:
                    await wait_until(lambda: reads == 1)
                    await other.unsubscribe_all(leaving)

                nursery.start_soon(leave)
                assert await other.subscribe("room:o", leaving, since=since) == NOT_RECOVERED
            assert leaving.order == []
            assert other.subscriber_count("room:o") == 3  # witness, recovering, failing


async def test_a_redis_restart_changes_the_epoch(redis: RedisServer) -> None:
    one, two = history_broker(redis.url), history_broker(redis.url)
    before, after = Positions(), Positions()
    with trio.fail_after(60):
        async with one, two:
            await two.subscribe("room:r", before)
            for n in range(1, 4):
                await one.publish("room:r", Said("x", n))
            await received(before, 3)
            old = before.last()
            redis.kill()  # without persistence: the history is gone
            await wait_until(lambda: not one.connected and not two.connected)
            await trio.to_thread.run_sync(redis.start)  # the same port
            await wait_until(lambda: one.connected and two.connected)

            await one.publish("room:r", Said("x", 4))
            await received(before, 4)
            new = before.last()
            assert new.epoch != old.epoch
            assert new.offset == 1  # a new run of offsets
            assert before.messages[-1]["data"]["n"] == 4

            assert await two.subscribe("room:r", after, since=old) == NOT_RECOVERED
            assert after.messages == []
            fresh = Positions()
            assert await two.subscribe("room:r", fresh, since=Position(new.epoch, 0)) == (
                Recovery(True, 1)
            )
            assert fresh.offsets == [1]


async def test_history_in_redis_is_bounded_and_expires(redis: RedisServer) -> None:
    broker = history_broker(redis.url, history_meta_ttl=3600.0)
    with trio.fail_after(30):
        async with broker:
            for n in range(50):
                await broker.publish("small:b", Said("x" * 100, n))
                await broker.publish("brief:b", Said("x", n))
            await broker.flush()
    assert redis.command("XLEN", "wsroutes:h:{small:b}:l") == b":3\r\n"
    assert redis.command("XLEN", "wsroutes:h:{brief:b}:l") == b":10\r\n"
    # The publications expire after ttl (brief) or the meta ttl; the epoch after the meta ttl.
    for key, most in (
        ("wsroutes:h:{small:b}:l", 3_600_000),
        ("wsroutes:h:{small:b}:m", 3_600_000),
        ("wsroutes:h:{brief:b}:l", 200),
    ):
        reply = redis.command("PTTL", key)
        assert reply.startswith(b":"), (key, reply)
        assert 0 < int(reply[1:]) <= most, (key, reply)


async def test_subscribing_with_a_position_while_redis_is_down_goes_live(
    stopped_redis: RedisServer,
) -> None:
    broker = history_broker(stopped_redis.url)
    with trio.fail_after(30):
        async with broker:
            assert broker.state == "disconnected"
            recorder = Positions()
            since = Position("whatever", 3)
            assert await broker.subscribe("room:d", recorder, since=since) == NOT_RECOVERED
            # Local delivery goes on, without a position (Redis holds the offsets).
            assert await broker.publish("room:d", Said("x", 1)) == 1
            assert recorder.messages == [{"type": "said", "data": {"sender": "x", "n": 1}}]
            with pytest.raises(ConnectionError, match="not connected"):
                await broker.history("room:d")
            assert broker.stats.recoveries_failed == 1


# -- what comes from Redis is checked: strict fields, sizes, signatures --------------------------

SECRET = b"0123456789abcdef0123456789abcdef"


def test_wire_fields_are_parsed_strictly() -> None:
    assert decode_wire(b"wsr1 t 42-abc 7\n{}") is not None
    for bad in (
        b"wsr1 t 42-abc 07\n{}",  # a leading zero
        b"wsr1 t 42-abc 12345678901234567890\n{}",  # 20 digits
        b"wsr1 t 42-abc \xd9\xa3\n{}",  # not ASCII digits
        b"wsr1 t - 7\n{}",  # no origin, yet a sequence number
        b"wsr1 t 42-ABC 7\n{}",  # origins are <pid>-<lowercase hex>
        b"wsr1 t origin 7\n{}",
        b"wsr1 t 42-" + b"a" * 33 + b" 7\n{}",
        b"wsr1 t 42-abc 7 " + b"0" * 63 + b"\n{}",  # a signature is 64 hex digits
        b"wsr1 t 42-abc 7 " + b"G" * 64 + b"\n{}",
        b"wsr1 h 42-abc 7 " + b"0" * 64 + b" 12345678901234567890 Ep\n{}",
    ):
        assert decode_wire(bad) is None, bad


def test_signed_messages_verify_and_any_change_breaks_them() -> None:
    from trio_wsroutes._broker.redis import _authentic, sign
    from trio_wsroutes._broker.redis._wire import sign_position

    frame = Frame(b'{"type":"said","data":{"n":1}}')
    channel = b"wsroutes:room:a"
    data = encode_wire(frame, b"42-abc", 7, secret=SECRET, channel=channel)
    message = decode_wire(data)
    assert message is not None
    assert message.signature == sign(SECRET, b"t", channel, b"42-abc", 7, frame.payload)
    assert _authentic(SECRET, channel, message)
    assert not _authentic(SECRET, b"wsroutes:room:b", message)  # moved to another topic
    assert not _authentic(b"another secret, quite long", channel, message)
    for tampered in (
        data.replace(b" 7 ", b" 8 "),  # another sequence number
        data.replace(b"42-abc", b"42-abd"),  # another origin
        data.replace(b'"n":1', b'"n":2'),  # another payload
        data.replace(b"wsr1 t", b"wsr1 b"),  # another kind
    ):
        altered = decode_wire(tampered)
        assert altered is not None
        assert not _authentic(SECRET, channel, altered), tampered
    unsigned = decode_wire(encode_wire(frame, b"42-abc", 7))
    assert unsigned is not None
    assert not _authentic(SECRET, channel, unsigned)
    plain = decode_wire(frame.payload)
    assert plain is not None
    assert not _authentic(SECRET, channel, plain)
    # h: signed with its position (epoch and offset), which its payload carries too.
    payload = b'{"type":"said","topic":"room:a","offset":12,"epoch":"Ep"}'
    signature = sign_position(SECRET, channel, b"42-abc", 7, b"Ep", 12, payload)
    positioned = b"wsr1 h 42-abc 7 %s 12 Ep\n%s" % (signature, payload)
    message = decode_wire(positioned)
    assert message is not None
    assert _authentic(SECRET, channel, message)
    for moved in (
        positioned.replace(b'12,"epoch"', b'13,"epoch"'),  # payload and header disagree
        positioned.replace(b'12,"epoch"', b'13,"epoch"').replace(b" 12 Ep", b" 13 Ep"),
        positioned.replace(b'"Ep"}', b'"Eq"}').replace(b" 12 Ep", b" 12 Eq"),
    ):
        altered = decode_wire(moved)
        assert altered is not None
        assert not _authentic(SECRET, channel, altered), moved
    assert not _authentic(SECRET, b"wsroutes:room:b", message)


@pytest.mark.usefixtures("coredis")
async def test_secret_and_size_options_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        RedisBroker(secret="short")
    with pytest.raises(ValueError, match="max_message_size"):
        RedisBroker(max_message_size=0)
    broker = RedisBroker(secret="a str secret of some length")
    assert broker.max_message_size == 16 * 1024 * 1024
    broker.configure_payload_limit(4096)  # what the server does with max_payload_length
    assert broker.max_message_size == 4096
    given = RedisBroker(max_message_size=100)
    given.configure_payload_limit(4096)
    assert given.max_message_size == 100  # an explicit option wins


async def test_a_process_without_the_secret_is_not_believed(redis: RedisServer) -> None:
    signed, unsigned = RedisBroker(redis.url, secret=SECRET), RedisBroker(redis.url)
    received_frames: list[bytes] = []

    class Inbox:
        topics = ("t",)

        def deliver(self, frame: Frame) -> bool:
            received_frames.append(frame.payload)
            return True

    with trio.fail_after(20):
        async with signed, unsigned:
            await signed.subscribe("t", Inbox())
            await unsigned.publish("t", Frame(b'{"from":"unsigned"}'))
            await signed.publish("t", Frame(b'{"from":"signed"}'))  # local: delivered at once
            another = RedisBroker(redis.url, secret=SECRET)
            assert await another.publish("t", Frame(b'{"from":"another signed"}')) == 1
            await unsigned.flush()
            await wait_until(lambda: len(received_frames) == 2)
            await wait_until(lambda: signed.stats.unauthenticated == 1)
    assert received_frames == [b'{"from":"signed"}', b'{"from":"another signed"}']


async def test_history_entries_are_checked_like_messages(redis: RedisServer) -> None:
    broker = history_broker(redis.url, secret=SECRET)
    with trio.fail_after(30):
        async with broker:
            for n in range(1, 4):
                await broker.publish("room:a", Said("x", n))
            await broker.flush()
            page = await broker.history("room:a")
            epoch = page.position.epoch
            assert [p.position.offset for p in page.publications] == [1, 2, 3]
            assert (await broker.history("room:a", since=Position(epoch, 1))).recovered

            # An entry written into the stream by someone without the secret.
            forged = b'{"type":"said","offset":4,"epoch":"%s"}' % epoch.encode()
            redis.command("HINCRBY", "wsroutes:h:{room:a}:m", "o", "1")
            redis.command("XADD", "wsroutes:h:{room:a}:l", "4-0", "t", "0", "p", forged.decode())
            bad = await broker.history("room:a", since=Position(epoch, 1))
            assert (bad.recovered, bad.publications) == (False, ())
            assert broker.stats.unauthenticated == 1
            late = Positions()
            assert await broker.subscribe("room:a", late, since=Position(epoch, 2)) == (
                NOT_RECOVERED
            )
            assert late.messages == []

    # Without a secret the entry is believed, but not one over max_message_size.
    small = history_broker(redis.url, max_message_size=200)
    with trio.fail_after(30):
        async with small:
            page = await small.history("room:a", since=Position(epoch, 2))
            assert [p.position.offset for p in page.publications] == [3, 4]
            await small.publish("room:a", Said("x" * 200, 5))
            await small.flush()
            big = await small.history("room:a", since=Position(epoch, 2))
            assert (big.recovered, big.publications) == (False, ())
            assert small.stats.oversized == 1


async def test_publications_redis_lost_the_script_for_are_counted_and_the_next_go_through(
    redis: RedisServer,
) -> None:
    # Redis restarted without its scripts (here: flushed): the publications sent
    # together meanwhile are each counted lost, the broker loads the scripts again, and
    # the next publications are numbered and delivered.
    broker = history_broker(redis.url)
    room = Positions()
    with trio.fail_after(30):
        async with broker:
            room.topics.add("room:a")
            await broker.subscribe("room:a", room)
            await broker.publish("room:a", Said("x", 1))
            await broker.flush()
            assert redis.command("SCRIPT", "FLUSH") == b"+OK\r\n"
            for n in (2, 3, 4):  # queued together: one batch
                await broker.publish("room:a", Said("x", n))
            await broker.flush()
            assert broker.stats.publish_lost == 3
            await broker.publish("room:a", Said("x", 5))
            await broker.flush()
            await wait_until(lambda: len(room.offsets) == 2, 10)
    assert room.offsets == [1, 2]
    assert [m["data"]["n"] for m in room.messages] == [1, 5]
