"""Topics: delivery guarantees, slow consumers, publishing from tasks and threads."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trio_wsroutes import (
    CloseCode,
    Connection,
    Context,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import TestClient, TestConnection


@attrs.frozen
class Topic:
    name: str


@attrs.frozen
class Join:
    topic: str


@message("item")
@attrs.frozen
class Item:
    n: int
    payload: str = ""


def topic_route() -> WebSocketRoute[None, Item]:
    route = create_websocket_route("/t").server_messages(Item)

    @route.on("subscribe", Topic)
    async def subscribe(ws: Connection[Item], data: Topic, ctx: Context[None]) -> None:
        await ws.subscribe(data.name)

    @route.on("unsubscribe", Topic)
    async def unsubscribe(ws: Connection[Item], data: Topic, ctx: Context[None]) -> None:
        await ws.unsubscribe(data.name)

    return route


async def subscribed(ws: TestConnection, topic: str) -> None:
    await ws.send("subscribe", {"name": topic})
    await trio.testing.wait_all_tasks_blocked()


async def test_every_subscriber_gets_every_publish_once_in_order() -> None:
    server = WebSocketServer([topic_route()])
    async with TestClient(server) as client:
        async with (
            client.connect("/t") as a,
            client.connect("/t") as b,
            client.connect("/t") as other,
        ):
            await subscribed(a, "news")
            await subscribed(b, "news")
            await subscribed(other, "weather")
            for n in range(200):
                assert await server.publish("news", Item(n)) == 2
            for ws in (a, b):
                got = [(await ws.receive())["data"]["n"] for _ in range(200)]
                assert got == list(range(200))
            # Nothing more arrived: no duplicates, nothing from other topics.
            with pytest.raises(trio.TooSlowError):
                await a.receive(timeout=0.05)
            with pytest.raises(trio.TooSlowError):
                await other.receive(timeout=0.05)


async def test_unsubscribe_and_disconnect_stop_delivery() -> None:
    server = WebSocketServer([topic_route()])
    async with TestClient(server) as client:
        async with client.connect("/t") as stays, client.connect("/t") as leaves:
            await subscribed(stays, "news")
            await subscribed(leaves, "news")
            assert server.subscriber_count("news") == 2
            await stays.send("unsubscribe", {"name": "news"})
            await trio.testing.wait_all_tasks_blocked()
            assert server.subscriber_count("news") == 1
            assert await server.publish("news", Item(1)) == 1
            assert (await leaves.receive())["data"]["n"] == 1
            with pytest.raises(trio.TooSlowError):
                await stays.receive(timeout=0.05)
            await leaves.close()
            assert server.subscriber_count("news") == 0
            assert await server.publish("news", Item(2)) == 0


@pytest.mark.parametrize("policy", ["close", "drop"])
async def test_a_subscriber_that_never_reads_does_not_hold_up_100_others(policy: str) -> None:
    limit = 16_000
    server = WebSocketServer(
        [topic_route()],
        backpressure_limit=limit,
        slow_consumer_policy="close" if policy == "close" else "drop",
    )
    payload = "x" * 1000
    count = 100
    async with TestClient(server, timeout=30) as client:
        async with trio.open_nursery() as nursery:
            fast: list[TestConnection] = []
            slow_holder: list[TestConnection] = []
            done = trio.Event()

            async def hold(into: list[TestConnection], ready: trio.Event) -> None:
                async with client.connect("/t") as ws:
                    into.append(ws)
                    await subscribed(ws, "feed")
                    ready.set()
                    await done.wait()

            for _ in range(100):
                ready = trio.Event()
                nursery.start_soon(hold, fast, ready)
                await ready.wait()
            ready = trio.Event()
            nursery.start_soon(hold, slow_holder, ready)
            await ready.wait()
            slow = slow_holder[0]
            slow.pause_reading()
            assert server.subscriber_count("feed") == 101

            peak = 0
            for n in range(count):
                await server.publish("feed", Item(n, payload))
                for connection in server.registry:
                    peak = max(peak, connection.buffered_amount)
                # Every fast subscriber has this message before the next publish.
                for ws in fast:
                    assert (await ws.receive())["data"]["n"] == n
            # Memory stays bounded: no queue ever held much more than the limit.
            assert peak <= limit + 2_000

            if policy == "close":
                assert server.stats.slow_consumer_closes == 1
                assert server.subscriber_count("feed") == 100
                slow.resume_reading()
                assert await slow.wait_closed() == CloseCode.TRY_AGAIN_LATER
            else:
                assert server.stats.messages_dropped > 0
                assert server.subscriber_count("feed") == 101
                slow.resume_reading()
                received = [
                    (await slow.receive())["data"]["n"]
                    for _ in range(count - server.stats.messages_dropped)
                ]
                # What it got, it got in order, and it lost exactly what was counted.
                assert received == sorted(set(received))
                assert len(received) + server.stats.messages_dropped == count
            done.set()


async def test_publish_from_a_startup_task_and_from_a_thread() -> None:
    server = WebSocketServer([topic_route()])
    go = trio.Event()

    @server.on_startup
    async def start_publisher(nursery: trio.Nursery) -> None:
        async def publisher() -> None:
            await go.wait()
            await server.publish("news", Item(1, "from a task"))

        nursery.start_soon(publisher)

    async with TestClient(server) as client, client.connect("/t") as ws:
        await subscribed(ws, "news")
        go.set()
        assert (await ws.receive())["data"] == {"n": 1, "payload": "from a task"}

        def in_a_thread() -> int:
            return server.publish_from_thread("news", Item(2, "from a thread"))

        assert await trio.to_thread.run_sync(in_a_thread) == 1
        assert (await ws.receive())["data"] == {"n": 2, "payload": "from a thread"}
        assert await trio.to_thread.run_sync(server.publish_binary_from_thread, "news", b"b") == 1
        assert await ws.receive_bytes() == b"b"


async def test_shutdown_hooks_run_and_background_tasks_are_cancelled() -> None:
    server = WebSocketServer([])
    events: list[str] = []

    @server.on_startup
    async def start(nursery: trio.Nursery) -> None:
        async def forever() -> None:
            try:
                await trio.sleep_forever()
            finally:
                events.append("task cancelled")

        nursery.start_soon(forever)
        events.append("started")

    @server.on_shutdown
    async def stop() -> None:
        events.append("shutdown hook")

    async with TestClient(server):
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["started"]
    assert events == ["started", "shutdown hook", "task cancelled"]


def test_publish_from_thread_before_startup_is_a_clear_error() -> None:
    server = WebSocketServer([])
    with pytest.raises(RuntimeError, match="not running"):
        server.publish_from_thread("t", Item(1))


async def test_authorize_subscribe_decides_every_subscription() -> None:
    # A handler that subscribes to a topic the client names cannot be talked into one
    # the user may not read: the route's check runs on every ws.subscribe.
    route = create_websocket_route("/t").authenticate(lambda request: request.query["user"])

    @route.authorize_subscribe
    async def own_rooms_only(ws: Connection[Any], topic: str, ctx: Context[str]) -> bool:
        await trio.lowlevel.checkpoint()
        return topic == f"user:{ctx.user}"

    @route.on("join", Join)
    async def join(ws: Connection[Any], data: Join, ctx: Context[str]) -> None:
        await ws.subscribe(data.topic)

    server = WebSocketServer([route])
    async with TestClient(server) as client, client.connect("/t?user=ann") as ws:
        assert (await ws.request("join", {"topic": "user:ann"}))["type"] == "ack"
        refused = await ws.request("join", {"topic": "user:bob"})
        assert (refused["type"], refused["code"]) == ("error", "FORBIDDEN_TOPIC")
        assert server.subscriber_count("user:ann") == 1
        assert server.subscriber_count("user:bob") == 0


async def test_a_server_wide_authorize_subscribe_applies_to_routes_without_their_own() -> None:
    route = create_websocket_route("/t")

    @route.on("join", Join)
    async def join(ws: Connection[Any], data: Join, ctx: Context[None]) -> None:
        await ws.subscribe(data.topic)

    def public_only(ws: Connection[Any], topic: str, ctx: Context[Any]) -> bool:
        return topic.startswith("public:")

    server = WebSocketServer([route], authorize_subscribe=public_only)
    async with TestClient(server) as client, client.connect("/t") as ws:
        assert (await ws.request("join", {"topic": "public:news"}))["type"] == "ack"
        assert (await ws.request("join", {"topic": "admin"}))["code"] == "FORBIDDEN_TOPIC"


def test_authorize_subscribe_needs_a_function_of_ws_topic_and_ctx() -> None:
    def wrong(ws: Any) -> bool:
        return True

    with pytest.raises(TypeError, match=r"fn\(ws, topic, ctx\)"):
        create_websocket_route("/t").authorize_subscribe(wrong)  # type: ignore[arg-type]
