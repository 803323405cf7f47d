"""Publishes held until the publisher yields, then written together (the native
transport over TCP coalesces them; see ``Coalescer``): what a client sees must not
change, only how many writes it takes. Over real sockets, on both transports."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket

from tests.conftest import ServeLive, wait_until
from trio_wsroutes import (
    Connection,
    Context,
    MemoryBroker,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes._frames import Frame

TIMEOUT = 10


@message("note")
@attrs.frozen
class Note:
    n: int
    text: str = ""


@attrs.frozen
class Burst:
    count: int
    size: int = 0


@attrs.frozen
class Empty:
    pass


def make_route(server_box: list[WebSocketServer]) -> WebSocketRoute[None, Note]:
    route = create_websocket_route("/r").server_messages(Note)

    @route.on_connect
    async def joined(ws: Connection[Note], ctx: Context[None]) -> None:
        await ws.subscribe("feed")

    @route.on("mixed", Empty)
    async def mixed(ws: Connection[Note], data: Empty, ctx: Context[None]) -> None:
        # Published, sent directly, published, then every other connection closed:
        # no yield in between on the native transport's fast path.
        await ws.publish("feed", Note(1), include_self=True)
        await ws.send(Note(2))
        await ws.publish("feed", Note(3), include_self=True)
        for other in list(server_box[0].registry):
            if other is not ws:
                await other.close(4000, "bye")

    @route.on("burst", Burst)
    async def burst(ws: Connection[Note], data: Burst, ctx: Context[None]) -> None:
        text = "x" * data.size
        for n in range(data.count):
            await ws.publish("feed", Note(n, text))

    return route


@asynccontextmanager
async def app(serve_live: ServeLive, **options: Any) -> AsyncIterator[tuple[WebSocketServer, str]]:
    box: list[WebSocketServer] = []
    server = WebSocketServer([make_route(box)], **options)
    box.append(server)
    async with serve_live(server) as address:
        yield server, address.ws_url + "/r"


async def receive_notes(ws: trio_websocket.WebSocketConnection, count: int) -> list[int]:
    got = []
    with trio.fail_after(TIMEOUT):
        for _ in range(count):
            got.append(json.loads(await ws.get_message())["data"]["n"])
    return got


async def test_publishes_sends_and_a_close_reach_clients_in_the_order_made(
    serve_live: ServeLive,
) -> None:
    async with (
        app(serve_live) as (server, url),
        trio_websocket.open_websocket_url(url) as sender,
        trio_websocket.open_websocket_url(url) as other,
    ):
        await wait_until(lambda: server.subscriber_count("feed") == 2)
        await sender.send_message(json.dumps({"type": "mixed", "data": {}}))
        assert await receive_notes(sender, 3) == [1, 2, 3]
        assert await receive_notes(other, 2) == [1, 3]
        # The close came after the publishes, and arrived after them.
        with trio.fail_after(TIMEOUT), pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await other.get_message()
        assert closed.value.reason.code == 4000


async def test_a_burst_reaches_every_subscriber_whole_and_in_order(
    serve_live: ServeLive,
) -> None:
    async with app(serve_live) as (server, url):
        async with (
            trio_websocket.open_websocket_url(url) as publisher,
            trio_websocket.open_websocket_url(url) as one,
            trio_websocket.open_websocket_url(url) as two,
        ):
            await wait_until(lambda: server.subscriber_count("feed") == 3)
            await publisher.send_message(json.dumps({"type": "burst", "data": {"count": 500}}))
            for ws in (one, two):
                assert await receive_notes(ws, 500) == list(range(500))


@pytest.mark.transports("native")
async def test_held_publishes_do_not_count_as_a_backlog(serve_live: ServeLive) -> None:
    # 60 KiB published without a yield to a client that reads, against a 16 KiB limit:
    # the socket takes it all at once (as it took frame after frame before publishes
    # were held), so holding them must not make the client a slow consumer.
    async with app(serve_live, backpressure_limit=16 * 1024) as (server, url):
        async with (
            trio_websocket.open_websocket_url(url) as publisher,
            trio_websocket.open_websocket_url(url) as reader,
        ):
            await wait_until(lambda: server.subscriber_count("feed") == 2)
            burst = {"type": "burst", "data": {"count": 60, "size": 1000}}
            await publisher.send_message(json.dumps(burst))
            assert await receive_notes(reader, 60) == list(range(60))
            assert server.stats.slow_consumer_closes == 0
            assert server.stats.messages_dropped == 0


async def test_a_subscriber_that_does_not_read_is_still_evicted(serve_live: ServeLive) -> None:
    async with app(serve_live, backpressure_limit=64 * 1024) as (server, url):
        async with (
            trio_websocket.open_websocket_url(url) as publisher,
            trio_websocket.open_websocket_url(url),  # never reads
        ):
            await wait_until(lambda: server.subscriber_count("feed") == 2)
            burst = {"type": "burst", "data": {"count": 20, "size": 64 * 1024}}
            for _ in range(20):  # 25 MiB: more than any socket buffer takes
                await publisher.send_message(json.dumps(burst))
            await wait_until(lambda: server.stats.slow_consumer_closes >= 1)


@pytest.mark.transports("native")
async def test_holding_publishes_allocates_nothing_the_garbage_collector_tracks(
    serve_live: ServeLive,
) -> None:
    # Objects made per delivery that live until the publisher yields survive the young
    # generations and, with thousands of subscribers, trigger full collections often
    # (each tens of milliseconds then: the fan-out's tail latency). Holding a frame must
    # only append to lists that already exist.
    subscribers = 20
    async with app(serve_live) as (server, url), AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(trio_websocket.open_websocket_url(url))
            for _ in range(subscribers)
        ]
        await wait_until(lambda: server.subscriber_count("feed") == subscribers)
        connections = list(server.registry)
        frames = [
            Frame(json.dumps({"type": "note", "data": {"n": n}}).encode()) for n in (1, 2, 3)
        ]
        for connection in connections:  # each connection's first hold makes its list
            assert connection.deliver(frames[0])
        await trio.testing.wait_all_tasks_blocked()
        gc.disable()
        try:
            before = gc.get_count()[0]
            for connection in connections:
                assert connection.deliver(frames[1])
                assert connection.deliver(frames[2])
            allocated = gc.get_count()[0] - before
        finally:
            gc.enable()
        # A few objects to wake the coalescer, none per connection.
        assert allocated < subscribers // 2, allocated
        for client in clients:
            assert await receive_notes(client, 3) == [1, 2, 3]


class Recorder:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.topics: set[str] = set()

    def deliver(self, frame: Frame) -> bool:
        self.frames.append(frame)
        return True


async def test_a_loop_of_publishes_lets_other_tasks_run() -> None:
    # A publish yields to the scheduler only now and then (so that publishes made
    # together are written together), never so rarely that a loop starves the server.
    broker = MemoryBroker()
    recorder = Recorder()
    await broker.subscribe("t", recorder)
    turns = 0
    done = False

    async def other_task() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        for n in range(1600):
            await broker.publish("t", Frame(b"%d" % n))
        done = True
    assert len(recorder.frames) == 1600
    assert turns >= 50  # 1600 publishes, a yield at least every 16 (and a slack of 2)


async def test_a_publish_is_a_cancellation_point() -> None:
    broker = MemoryBroker()
    with trio.CancelScope() as scope:
        scope.cancel()
        await broker.publish("t", Frame(b"x"))
        raise AssertionError("publish did not raise Cancelled")  # pragma: no cover
    assert scope.cancelled_caught
