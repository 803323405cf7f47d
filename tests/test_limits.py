"""Limits that protect the process: each one refuses cleanly and loses nothing else."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from tests.conftest import ServeLive
from trio_wsroutes import (
    Connection,
    Context,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.testing import ConnectionDenied, TestClient


@attrs.frozen
class Topic:
    name: str


@attrs.frozen
class Work:
    seconds: float


@message("done")
@attrs.frozen
class Done:
    seconds: float


def make_server(**options: object) -> WebSocketServer:
    route = create_websocket_route("/l").server_messages(Done)

    @route.on("sub", Topic)
    async def sub(ws: Connection[Done], data: Topic, ctx: Context[None]) -> None:
        await ws.subscribe(data.name)

    @route.on("work", Work)
    async def work(ws: Connection[Done], data: Work, ctx: Context[None]) -> Done:
        await trio.sleep(data.seconds)
        return Done(data.seconds)

    return WebSocketServer([route], **options)  # type: ignore[arg-type]


async def test_max_connections_denies_with_503_and_frees_up() -> None:
    server = make_server(max_connections=2)
    async with TestClient(server) as client:
        async with client.connect("/l"), client.connect("/l"):
            with pytest.raises(ConnectionDenied) as denied:
                async with client.connect("/l"):
                    pass
            assert denied.value.status == 503
            assert denied.value.json() == {
                "message": "Server is at capacity",
                "code": "SERVER_BUSY",
            }
            assert denied.value.header("retry-after") == "1"
        async with client.connect("/l"):  # room again once the others left
            pass


async def test_max_connections_per_ip() -> None:
    server = make_server(max_connections_per_ip=1)
    one = TestClient(server, client=("198.51.100.1", 1000))
    other = TestClient(server, client=("198.51.100.2", 1000))
    async with one, other, one.connect("/l"), other.connect("/l"):
        with pytest.raises(ConnectionDenied) as denied:
            async with one.connect("/l"):
                pass
        assert denied.value.status == 429
        assert denied.value.json()["code"] == "TOO_MANY_CONNECTIONS"


async def test_hanging_handler_times_out_and_the_connection_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = make_server(handler_timeout=5)
    async with TestClient(server, timeout=100) as client, client.connect("/l") as ws:
        timed_out = await ws.request("work", {"seconds": 3600})
        assert timed_out["code"] == "HANDLER_TIMEOUT"
        assert (await ws.request("work", {"seconds": 1}))["data"] == {"seconds": 1}


async def test_route_handler_timeout_overrides_the_server() -> None:
    route = create_websocket_route("/t").server_messages(Done).handler_timeout(0.01)

    @route.on("work", Work)
    async def work(ws: Connection[Done], data: Work, ctx: Context[None]) -> Done:
        await trio.sleep(data.seconds)
        return Done(data.seconds)

    async with TestClient(WebSocketServer([route])) as client, client.connect("/t") as ws:
        assert (await ws.request("work", {"seconds": 10}))["code"] == "HANDLER_TIMEOUT"


async def test_topic_limits() -> None:
    server = make_server(max_topics_per_connection=3, max_topic_length=10)
    async with TestClient(server) as client, client.connect("/l") as ws:
        for name in ("a", "b", "c", "a"):  # a repeat does not count twice
            await ws.send("sub", {"name": name})
        too_many = await ws.request("sub", {"name": "d"})
        assert too_many["code"] == "TOO_MANY_TOPICS"
        too_long = await ws.request("sub", {"name": "x" * 11})
        assert too_long["code"] == "INVALID_TOPIC"
        empty = await ws.request("sub", {"name": ""})
        assert empty["code"] == "INVALID_TOPIC"
        assert server.subscriber_count("a") == 1


async def test_inbound_queue_is_bounded_while_a_handler_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = make_server(max_queued_messages=4)
    async with TestClient(server, timeout=100) as client, client.connect("/l") as ws:
        await ws.send("work", {"seconds": 60})
        for _ in range(50):
            await ws.send("work", {"seconds": 0})
        await trio.testing.wait_all_tasks_blocked()
        # One message in the handler, four queued, one in the reader's hands: the rest
        # waits on the client's side (a real client's TCP window).
        assert ws.unread_by_server >= 50 - 6
        replies = [await ws.receive() for _ in range(51)]
        assert [r["data"]["seconds"] for r in replies] == [60] + [0] * 50


async def test_incomplete_upgrade_request_is_dropped(serve_live: ServeLive) -> None:
    server = make_server(handshake_timeout=1)
    async with serve_live(server) as address:
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(b"GET /l HTTP/1.1\r\nHost: x\r\n")  # and never finish
            with trio.fail_after(15):
                while await stream.receive_some():
                    pass  # a 4xx answer may come first; then the close
        async with open_websocket_url(f"{address.ws_url}/l"):
            pass  # still serving


async def test_a_handler_flooding_send_only_slows_itself() -> None:
    route = create_websocket_route("/f").server_messages(Done)
    sent = 0

    @route.on("flood", Work)
    async def flood(ws: Connection[Done], data: Work, ctx: Context[None]) -> None:
        nonlocal sent
        while True:
            await ws.send(Done(data.seconds))
            sent += 1

    @route.on("work", Work)
    async def work(ws: Connection[Done], data: Work, ctx: Context[None]) -> Done:
        return Done(data.seconds)

    server = WebSocketServer([route], backpressure_limit=10_000)
    async with (
        TestClient(server) as client,
        client.connect("/f") as flooder,
        client.connect("/f") as bystander,
    ):
        flooder.pause_reading()
        await flooder.send("flood", {"seconds": 0})
        await trio.testing.wait_all_tasks_blocked()
        blocked_at = sent
        for n in range(20):
            reply = await bystander.request("work", {"seconds": n})
            assert reply["data"] == {"seconds": n}
        # The flooding handler waits on its own client: it made no progress meanwhile,
        # and its queue stayed within the limit (plus one message).
        assert sent == blocked_at
        flooding = next(c for c in server.registry if c.buffered_amount)
        assert flooding.buffered_amount < 10_000 + 100
