"""The connection engine: backpressure, eviction, lifecycle, ordering, timeouts."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from trio_wsroutes import (
    CloseCode,
    Connection,
    ConnectionClosed,
    Context,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import TestClient, TransportName, WebSocketClosed


@attrs.frozen
class Burst:
    count: int
    size: int


@message("blob")
@attrs.frozen
class Blob:
    index: int
    payload: str


@message("note")
@attrs.frozen
class Note:
    text: str


async def test_send_waits_over_backpressure_limit_and_reports_buffered_amount(
    memory_transport: TransportName,
) -> None:
    route = create_websocket_route("/burst").server_messages(Blob)
    observed: list[int] = []
    done = trio.Event()

    @route.on("burst", Burst)
    async def burst(ws: Connection[Blob], data: Burst, ctx: Context[None]) -> None:
        for index in range(data.count):
            await ws.send(Blob(index, "x" * data.size))
            observed.append(ws.buffered_amount)
        done.set()

    server = WebSocketServer([route], backpressure_limit=2_000)
    # More than the in-memory socket buffer (64 KiB) of the native transport holds.
    count = 200
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/burst") as ws,
    ):
        ws.pause_reading()
        await ws.send("burst", {"count": count, "size": 500})
        await trio.testing.wait_all_tasks_blocked()
        # What the client does not take stays queued up to the limit, then send waits
        # for a message that would pass it (the rule publishes follow too);
        # buffered_amount counts the frame the transport is writing too.
        assert not done.is_set()
        assert observed, "some sends went through before the limit"
        assert 2_000 - 600 < max(observed) <= 2_000
        ws.resume_reading()
        received = [(await ws.receive())["data"]["index"] for _ in range(count)]
        assert received == list(range(count))
        assert done.is_set()


async def test_slow_subscriber_is_evicted_with_1013_and_others_get_everything(
    memory_transport: TransportName,
) -> None:
    route = create_websocket_route("/feed").server_messages(Blob)

    @route.on_connect
    async def join(ws: Connection[Blob], ctx: Context[None]) -> None:
        await ws.subscribe("feed")

    server = WebSocketServer([route], backpressure_limit=4_000)
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/feed") as fast,
        client.connect("/feed") as slow,
    ):
        await trio.testing.wait_all_tasks_blocked()
        assert server.subscriber_count("feed") == 2
        slow.pause_reading()
        for index in range(200):  # more than a socket buffer (64 KiB) holds
            await server.publish("feed", Blob(index, "y" * 500))
            assert (await fast.receive())["data"]["index"] == index
        # Evicted at once: out of the topic and the registry, before it reads anything.
        assert server.subscriber_count("feed") == 1
        assert len(server.registry) == 1
        slow.resume_reading()
        assert await slow.wait_closed() == CloseCode.TRY_AGAIN_LATER


async def test_an_evicted_connection_leaves_every_topic_at_once_and_frees_them_at_the_end(
    memory_transport: TransportName,
) -> None:
    # The connection is the one owner of its topics: the broker reads them to drop an
    # evicted one from every topic during the publish that evicted it, and the
    # connection forgets them (and gives their memory back) only when it ends.
    route = create_websocket_route("/feed").server_messages(Blob)

    @route.on_connect
    async def join(ws: Connection[Blob], ctx: Context[None]) -> None:
        for topic in ("feed", "side:1", "side:2"):
            await ws.subscribe(topic)

    server = WebSocketServer([route], backpressure_limit=4_000)
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/feed") as fast,
    ):
        await trio.testing.wait_all_tasks_blocked()
        baseline = server.memory.used
        async with client.connect("/feed") as slow:
            await trio.testing.wait_all_tasks_blocked()
            assert server.memory.used > baseline
            slow.pause_reading()
            index = 0
            while server.subscriber_count("feed") == 2:
                assert index < 200, "never evicted"
                await server.publish("feed", Blob(index, "y" * 500))
                assert (await fast.receive())["data"]["index"] == index
                index += 1
                # Out of one topic is out of all of them, at once.
                counts = [server.subscriber_count(t) for t in ("feed", "side:1", "side:2")]
                assert counts in ([2, 2, 2], [1, 1, 1])
            slow.resume_reading()
            assert await slow.wait_closed() == CloseCode.TRY_AGAIN_LATER
        await trio.testing.wait_all_tasks_blocked()
        assert server.memory.used == baseline
        assert await server.publish("side:1", Blob(-1, "")) == 1
        assert (await fast.receive())["data"]["index"] == -1


async def test_publish_encodes_once_for_every_subscriber() -> None:
    server = WebSocketServer([])
    frames: list[object] = []

    class Recorder:
        topics = ("t",)  # a subscriber lists its topics (the one owner of them)

        def deliver(self, frame: object) -> bool:
            frames.append(frame)
            return True

    first, second = Recorder(), Recorder()
    await server.broker.subscribe("t", first)
    await server.broker.subscribe("t", second)
    assert await server.publish("t", Note("hi")) == 2
    assert len(frames) == 2
    assert frames[0] is frames[1]


async def test_on_close_runs_once_when_client_vanishes_and_subscriptions_go(
    memory_transport: TransportName,
) -> None:
    route = create_websocket_route("/c").server_messages(Note)
    closes: list[int] = []

    @route.on_connect
    async def join(ws: Connection[Note], ctx: Context[None]) -> None:
        await ws.subscribe("room")

    @route.on_close
    async def left(ws: Connection[Note], code: int, reason: str, ctx: Context[None]) -> None:
        closes.append(code)

    server = WebSocketServer([route])
    async with TestClient(server, transport=memory_transport) as client:
        async with client.connect("/c") as ws:
            await trio.testing.wait_all_tasks_blocked()
            assert server.subscriber_count("room") == 1
            await ws.close(4001)
        assert closes == [4001]
        assert server.subscriber_count("room") == 0
        assert len(server.registry) == 0


async def test_server_close_from_handler_reaches_client_and_later_sends_raise(
    memory_transport: TransportName,
) -> None:
    route = create_websocket_route("/c").server_messages(Note)
    after_close: list[BaseException] = []
    closes: list[tuple[int, str]] = []

    @route.on("bye", Burst)
    async def bye(ws: Connection[Note], data: Burst, ctx: Context[None]) -> None:
        await ws.send(Note("last words"))
        await ws.close(4000, "bye")
        try:
            await ws.send(Note("too late"))
        except ConnectionClosed as exc:
            after_close.append(exc)

    @route.on_close
    async def left(ws: Connection[Note], code: int, reason: str, ctx: Context[None]) -> None:
        closes.append((code, reason))

    async with (
        TestClient(WebSocketServer([route]), transport=memory_transport) as client,
        client.connect("/c") as ws,
    ):
        await ws.send("bye", {"count": 0, "size": 0})
        assert (await ws.receive())["data"] == {"text": "last words"}
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive()
        assert (closed.value.code, closed.value.reason) == (4000, "bye")
    assert len(after_close) == 1
    assert closes == [(4000, "bye")]


async def test_messages_are_handled_one_at_a_time_in_arrival_order(
    memory_transport: TransportName,
) -> None:
    route = create_websocket_route("/order").server_messages(Note)
    active = 0
    overlap = False

    @route.on("n", Burst)
    async def handle(ws: Connection[Note], data: Burst, ctx: Context[None]) -> Note:
        nonlocal active, overlap
        active += 1
        overlap = overlap or active > 1
        await trio.sleep(0.001 * (data.count % 3))
        active -= 1
        return Note(str(data.count))

    async with (
        TestClient(WebSocketServer([route]), transport=memory_transport) as client,
        client.connect("/order") as ws,
    ):
        for n in range(25):
            await ws.send("n", {"count": n, "size": 0})
        replies = [(await ws.receive())["data"]["text"] for _ in range(25)]
    assert replies == [str(n) for n in range(25)]
    assert not overlap


async def test_idle_connection_is_closed(
    autojump_clock: trio.testing.MockClock, memory_transport: TransportName
) -> None:
    route = create_websocket_route("/idle")
    # Without pings: with them, a client that answers is never idle.
    server = WebSocketServer([route], idle_timeout=30, heartbeat_interval=None)
    async with (
        TestClient(server, timeout=1000, transport=memory_transport) as client,
        client.connect("/idle") as ws,
    ):
        assert await ws.wait_closed() == CloseCode.NORMAL
        assert ws.close_reason == "idle timeout"


async def test_crash_in_on_connect_closes_with_1011(memory_transport: TransportName) -> None:
    route = create_websocket_route("/boom")
    errors: list[Exception] = []

    @route.on_connect
    async def boom(ws: Connection[object], ctx: Context[None]) -> None:
        raise RuntimeError("secret detail")

    @route.on_error
    async def seen(ws: Connection[object], error: Exception, ctx: Context[None]) -> None:
        errors.append(error)

    async with (
        TestClient(WebSocketServer([route]), transport=memory_transport) as client,
        client.connect("/boom") as ws,
    ):
        frame = await ws.receive_text()
        assert "secret" not in frame
        assert await ws.wait_closed() == CloseCode.INTERNAL_ERROR
    assert [str(e) for e in errors] == ["secret detail"]


async def test_send_after_client_left_raises_connection_closed(
    memory_transport: TransportName,
) -> None:
    route = create_websocket_route("/bg").server_messages(Note)
    connections: list[Connection[Note]] = []
    gone = trio.Event()

    @route.on_connect
    async def keep(ws: Connection[Note], ctx: Context[None]) -> None:
        connections.append(ws)

    @route.on_close
    async def left(ws: Connection[Note], code: int, reason: str, ctx: Context[None]) -> None:
        gone.set()

    async with TestClient(WebSocketServer([route]), transport=memory_transport) as client:
        async with client.connect("/bg"):
            await trio.testing.wait_all_tasks_blocked()
        await gone.wait()
        assert connections[0].closed
        with pytest.raises(ConnectionClosed):
            await connections[0].send(Note("anyone?"))


@attrs.frozen
class Echo:
    n: int


@message("echoed")
@attrs.frozen
class Echoed:
    n: int


def _echo_route(path: str) -> WebSocketRoute[None, Echoed]:
    route = create_websocket_route(path).server_messages(Echoed)

    @route.on("echo", Echo)
    async def echo(ws: Connection[Echoed], data: Echo, ctx: Context[None]) -> Echoed:
        await trio.lowlevel.checkpoint()  # give the reader every chance to run ahead
        return Echoed(data.n)

    return route


async def test_messages_before_an_oversized_frame_are_answered_before_1009(
    memory_transport: TransportName,
) -> None:
    server = WebSocketServer([_echo_route("/e")], max_payload_length=200)
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/e") as ws,
    ):
        for n in range(3):
            await ws.send("echo", {"n": n}, id=n)
        await ws.send_text("x" * 500)
        assert [(await ws.receive())["id"] for _ in range(3)] == [0, 1, 2]
        assert await ws.wait_closed() == CloseCode.MESSAGE_TOO_BIG


async def test_rate_limited_answer_carries_the_id_and_keeps_order(
    memory_transport: TransportName,
) -> None:
    server = WebSocketServer([_echo_route("/e").rate_limit(1 / 1800, burst=2)])
    async with (
        TestClient(server, transport=memory_transport) as client,
        client.connect("/e") as ws,
    ):
        for n in range(4):
            await ws.send("echo", {"n": n}, id=f"r{n}")
        replies = [await ws.receive() for _ in range(4)]
    assert [(r["type"], r["id"]) for r in replies] == [
        ("echoed", "r0"),
        ("echoed", "r1"),
        ("error", "r2"),
        ("error", "r3"),
    ]
    assert replies[2]["code"] == "RATE_LIMITED"
