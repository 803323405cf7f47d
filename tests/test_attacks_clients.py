"""Hostile and refusing servers against the Python client, and what the client keeps.

What a user relies on: a client that followed many topics (or long-named ones, or was
handed thousands of saved positions) still gets back in after a reconnection, resuming
the most recently seen topics; a server that refuses the resumed positions lets the client
in without them, and ``on_recovery`` says which topics were not recovered; the receive
queue's ``max_queue_bytes`` bounds the memory it holds, however large the messages are
once decoded; a server that accepts and closes at once sees the reconnection delays grow;
a handshake that the server breaks is a ``HandshakeFailed``, not an exception group.

The generated TypeScript client's counterparts are scenarios of
``tests/ts/client_scenarios.ts`` (``tests/test_client_ts.py``).

Every test is small and bounded (at most a few MiB, seconds), runs on 127.0.0.1 only and
stops what it starts; those with a server run on both transports (``serve_live``).
"""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import attrs
import orjson
import pytest
import trio

from tests.conftest import ServeLive, live_server, wait_until
from trio_wsroutes import (
    Connection,
    Context,
    History,
    Reject,
    Request,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import (
    MAX_RESUME_POSITIONS,
    MAX_RESUME_QUERY_BYTES,
    Backoff,
    Client,
    ConnectionDenied,
    HandshakeFailed,
    Position,
    RecoveryInfo,
    connect,
)

TIMEOUT = 20
FAST = Backoff(initial=0.02, maximum=0.2)
HISTORY = {"t:*": History(size=10)}


@message("note")
@attrs.frozen
class Note:
    n: int


@attrs.frozen
class Follow:
    """Subscribe to ``topics`` (and to them again on every later connection)."""

    topics: list[str]


@attrs.define
class Seen:
    """What the server saw: each admitted upgrade request."""

    requests: list[Request] = attrs.field(factory=list[Request])
    topics: list[str] = attrs.field(factory=list[str])

    def since(self, index: int = -1) -> list[str]:
        return self.requests[index].query.get_all("since")


def topics_route(seen: Seen, authenticate: Any = None) -> Any:
    route = create_websocket_route("/t").server_messages(Note)
    if authenticate is not None:
        route = route.authenticate(authenticate)

    @route.on_connect
    async def connected(ws: Connection[Note], ctx: Context[Any]) -> None:
        seen.requests.append(ctx.request)
        for topic in seen.topics:
            await ws.subscribe(topic)  # with the position the client named, if any

    @route.on("follow", Follow)
    async def follow(ws: Connection[Note], data: Follow, ctx: Context[Any]) -> None:
        seen.topics = data.topics
        for topic in data.topics:
            await ws.subscribe(topic)

    return route


def client_for(url: str, route: Any, **options: Any) -> Client[Any]:
    options.setdefault("proxy", False)
    options.setdefault("open_timeout", TIMEOUT)
    options.setdefault("request_timeout", TIMEOUT)
    return connect(url, route, **options)


async def follow_and_publish(
    client: Client[Note], server: WebSocketServer, topics: list[str]
) -> None:
    """Subscribe the client to ``topics``, publish one note on each in order, and
    receive them all: the last topic is the most recently seen."""
    await client.request(Follow(topics))
    for n, topic in enumerate(topics):
        await server.publish(topic, Note(n))
    assert [await client.receive() for _ in topics] == [Note(n) for n in range(len(topics))]


def since_bytes(values: list[str]) -> int:
    return len(urlencode([("since", v) for v in values])) + 1


# -- what is resumed stays within what servers accept -------------------------------------


async def test_a_client_that_saw_101_topics_reconnects_resuming_the_newest(
    serve_live: ServeLive,
) -> None:
    # Before: 101 since parameters, "400 Too many query parameters", the client ended.
    seen = Seen()
    route = topics_route(seen)
    server = WebSocketServer([route], history=HISTORY)
    topics = [f"t:{n}" for n in range(101)]
    verdicts: list[RecoveryInfo] = []

    async def on_recovery(info: RecoveryInfo) -> None:
        verdicts.append(info)

    async with serve_live(server) as address:
        url = f"{address.ws_url}/t"
        async with client_for(url, route, reconnect=FAST, on_recovery=on_recovery) as client:
            with trio.fail_after(TIMEOUT):
                await follow_and_publish(client, server, topics)
                await server.close_all(1012, "restart")
                await wait_until(lambda: client.reconnects == 1)
                await client.request(Follow(topics))  # back in: acknowledged
                assert list(client.positions) == topics[-MAX_RESUME_POSITIONS:]
                resumed = [value.partition("@")[0] for value in seen.since()]
                assert resumed == topics[-MAX_RESUME_POSITIONS:]
                await server.publish("t:100", Note(100))
                assert await client.receive() == Note(100)
                await wait_until(lambda: verdicts)
    (verdict,) = verdicts
    assert (verdict.topic, verdict.recovered, verdict.since.offset) == ("t:100", True, 1)


async def test_long_topic_names_stay_within_the_url_caps(serve_live: ServeLive) -> None:
    # Before: 60 topics of 256 characters made a 17 KB URL: 414 (native), 431 (hypercorn).
    seen = Seen()
    route = topics_route(seen)
    server = WebSocketServer([route], history=HISTORY)
    topics = [f"t:{n}:".ljust(256, "x") for n in range(60)]
    async with serve_live(server) as address:
        async with client_for(f"{address.ws_url}/t", route, reconnect=FAST) as client:
            with trio.fail_after(TIMEOUT):
                await follow_and_publish(client, server, topics)
                await server.close_all(1012, "restart")
                await wait_until(lambda: client.reconnects == 1)
                await client.request(Follow(topics))
    since = seen.since()
    assert 0 < len(since) < len(topics)
    assert since_bytes(since) <= MAX_RESUME_QUERY_BYTES
    assert [value.partition("@")[0] for value in since] == topics[-len(since) :]
    assert list(client.positions) == topics[-len(since) :]


async def test_thousands_of_saved_positions_connect_with_the_newest(
    serve_live: ServeLive,
) -> None:
    # Before: 5000 since parameters, a 99 KB URL: 414 or 431, connect() raised.
    seen = Seen()
    route = topics_route(seen)
    saved = {f"t:{n}": Position("e1", n + 1) for n in range(5000)}
    verdicts: list[RecoveryInfo] = []

    async def on_recovery(info: RecoveryInfo) -> None:
        verdicts.append(info)

    async with serve_live(WebSocketServer([route], history=HISTORY)) as address:
        url = f"{address.ws_url}/t"
        with trio.fail_after(TIMEOUT):
            async with client_for(url, route, since=saved, on_recovery=on_recovery) as client:
                await wait_until(lambda: len(verdicts) == 5000 - MAX_RESUME_POSITIONS)
                assert len(client.positions) == MAX_RESUME_POSITIONS
    newest = list(saved)[-MAX_RESUME_POSITIONS:]
    assert seen.since() == [
        f"{topic}@{saved[topic].epoch}:{saved[topic].offset}" for topic in newest
    ]
    assert since_bytes(seen.since()) <= MAX_RESUME_QUERY_BYTES
    assert {info.topic for info in verdicts} == set(list(saved)[:-MAX_RESUME_POSITIONS])
    assert all(not info.recovered and info.position is None for info in verdicts)
    assert verdicts[0].since == saved[verdicts[0].topic]


# -- a server that refuses the positions ---------------------------------------------------


def refusing_since(request: Request) -> str:
    if request.query.get_all("since"):
        raise Reject(400, "Resuming is not offered here", "NO_SINCE")
    return "ada"


async def test_a_refused_first_connection_with_since_connects_without_it(
    serve_live: ServeLive,
) -> None:
    seen = Seen()
    route = topics_route(seen, refusing_since)
    saved = {"t:a": Position("e1", 3), "t:b": Position("e1", 9)}
    verdicts: list[RecoveryInfo] = []

    async def on_recovery(info: RecoveryInfo) -> None:
        verdicts.append(info)

    async with serve_live(WebSocketServer([route], history=HISTORY)) as address:
        url = f"{address.ws_url}/t"
        with trio.fail_after(TIMEOUT):
            async with client_for(url, route, since=saved, on_recovery=on_recovery) as client:
                await wait_until(lambda: len(verdicts) == 2)
                assert client.positions == {}  # not resumable any more: dropped
    assert seen.since() == []
    assert sorted(verdicts, key=lambda info: info.topic) == [
        RecoveryInfo("t:a", False, saved["t:a"], None),
        RecoveryInfo("t:b", False, saved["t:b"], None),
    ]


async def test_a_reconnection_whose_positions_are_refused_gets_back_in_without_them(
    serve_live: ServeLive,
) -> None:
    seen = Seen()
    route = topics_route(seen, refusing_since)
    server = WebSocketServer([route], history=HISTORY)
    verdicts: list[RecoveryInfo] = []

    async def on_recovery(info: RecoveryInfo) -> None:
        verdicts.append(info)

    async with serve_live(server) as address:
        url = f"{address.ws_url}/t"
        async with client_for(url, route, reconnect=FAST, on_recovery=on_recovery) as client:
            with trio.fail_after(TIMEOUT):
                await follow_and_publish(client, server, ["t:a", "t:b"])
                before = dict(client.positions)
                await server.close_all(1012, "restart")
                await wait_until(lambda: client.reconnects == 1 and len(verdicts) == 2)
                await client.request(Follow(["t:a", "t:b"]))
                # Not resumed again on the next reconnection either: the gap stays a gap.
                await server.close_all(1012, "restart")
                await wait_until(lambda: client.reconnects == 2)
                await client.request(Follow(["t:a"]))
    assert [request.query.get_all("since") for request in seen.requests] == [[], [], []]
    assert sorted(verdicts, key=lambda info: info.topic) == [
        RecoveryInfo(topic, False, before[topic], None) for topic in ("t:a", "t:b")
    ]


async def test_a_denial_that_is_not_about_the_url_is_not_retried(
    serve_live: ServeLive,
) -> None:
    calls: list[bool] = []

    def forbidden(request: Request) -> str:
        calls.append(bool(request.query.get_all("since")))
        raise Reject(403, "Banned", "BANNED")

    route = topics_route(Seen(), forbidden)
    async with serve_live(WebSocketServer([route], history=HISTORY)) as address:
        url = f"{address.ws_url}/t"
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionDenied) as denied:
            async with client_for(url, route, since={"t:a": Position("e1", 1)}):
                pass
    assert (denied.value.status, denied.value.code) == (403, "BANNED")
    assert calls == [True]


async def test_forget_stops_resuming_a_topic(serve_live: ServeLive) -> None:
    seen = Seen()
    route = topics_route(seen)
    server = WebSocketServer([route], history=HISTORY)
    async with serve_live(server) as address:
        async with client_for(f"{address.ws_url}/t", route, reconnect=FAST) as client:
            with trio.fail_after(TIMEOUT):
                await follow_and_publish(client, server, ["t:a", "t:b"])
                client.forget("t:a")
                assert list(client.positions) == ["t:b"]
                await server.close_all(1012, "restart")
                await wait_until(lambda: client.reconnects == 1)
                await client.request(Follow([]))
    assert [value.partition("@")[0] for value in seen.since()] == ["t:b"]


# -- the handshake --------------------------------------------------------------------------


@asynccontextmanager
async def handshake_breaker() -> AsyncGenerator[int]:
    """A TCP server that reads the first bytes of each request, then resets the
    connection while the client is still writing it; yields its port."""

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        stream.socket.close()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_a_handshake_the_server_breaks_is_handshake_failed() -> None:
    # Before: websockets' ConnectionClosedError escaped connect() (and, on a
    # reconnection, the client's nursery as an exception group).
    route = topics_route(Seen())
    query = urlencode([("pad", "x" * 1000)] * 1000)  # 1 MB: more than the socket buffers
    with trio.fail_after(TIMEOUT):
        async with handshake_breaker() as port:
            with pytest.raises(HandshakeFailed) as failed:
                async with client_for(f"ws://127.0.0.1:{port}/t?{query}", route):
                    pass
    assert failed.value.retryable


# -- memory ---------------------------------------------------------------------------------


@message("numbers")
@attrs.frozen
class Numbers:
    values: list[int]


@attrs.frozen
class Pour:
    count: int


NUMBERS = orjson.dumps({"type": "numbers", "data": {"values": [1000] * 4000}}).decode()
"""20 KB of JSON that decodes into 4000 int objects: about 150 KB."""


async def test_the_receive_queue_is_bounded_in_memory(serve_live: ServeLive) -> None:
    # Before: the queue counted characters of JSON but held decoded messages, 7 times
    # larger here (16 MiB of queued JSON took 122 MiB).
    route = create_websocket_route("/numbers").server_messages(Numbers)

    @route.on("pour", Pour)
    async def pour(ws: Connection[Numbers], data: Pour, ctx: Context[None]) -> None:
        for _ in range(data.count):
            await ws.send_text(NUMBERS)  # the same string each time: nothing new to trace

    limit = 1024 * 1024
    count = 60  # 1.2 MB of JSON: more than the queue takes
    async with serve_live(WebSocketServer([route])) as address:
        url = f"{address.ws_url}/numbers"
        # Uncompressed: a read of compressed frames is inflated whole by the WebSocket
        # layer, whatever the queue holds (see the Python client guide).
        async with client_for(url, route, max_queue_bytes=limit, compression=False) as client:
            with trio.fail_after(TIMEOUT):
                tracemalloc.start()
                try:
                    await client.send(Pour(count))
                    await wait_until(lambda: client.queued >= 40)
                    queued = client.queued
                    while True:  # until the client stops reading
                        await trio.sleep(0.3)
                        if client.queued == queued:
                            break
                        queued = client.queued
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert queued < count
                assert [await client.receive() for _ in range(count)] == [
                    Numbers([1000] * 4000)
                ] * count
    assert peak < 2.5 * limit, f"{peak / limit:.1f} times max_queue_bytes"


# -- reconnection storms --------------------------------------------------------------------


async def test_a_server_that_accepts_and_closes_at_once_sees_the_delays_grow(
    serve_live: ServeLive,
) -> None:
    # Before: the backoff started again after every upgrade: about 60 reconnections in
    # 3 s with these settings, forever.
    opened: list[float] = []
    route = create_websocket_route("/flap").server_messages(Note)

    @route.on_connect
    async def connected(ws: Connection[Note], ctx: Context[None]) -> None:
        opened.append(trio.current_time())
        await ws.close(1012, "restarting")

    async with serve_live(WebSocketServer([route])) as address:
        backoff = Backoff(initial=0.05, maximum=0.4)
        async with client_for(f"{address.ws_url}/flap", route, reconnect=backoff):
            await trio.sleep(3)
    # The waits grow to 0.4 s ceilings (0.2 s on average): about 17 connections.
    assert 3 <= len(opened) <= 30, len(opened)


# -- the recovery verdict across a restart ---------------------------------------------------


async def hold(client: Client[Note], done: trio.Event, task_status: Any) -> None:
    async with client:
        task_status.started()
        await done.wait()


@pytest.mark.parametrize("same_broker", [True, False])
async def test_the_recovery_verdict_across_a_server_restart(
    transport: str, same_broker: bool
) -> None:
    # The same server object keeps its MemoryBroker (and its history) across a restart of
    # its transport; a new one starts a new epoch.
    seen = Seen(topics=["t:a"])
    route = topics_route(seen)
    first = WebSocketServer([route], history=HISTORY)
    second = first if same_broker else WebSocketServer([route], history=HISTORY)
    verdicts: list[RecoveryInfo] = []

    async def on_recovery(info: RecoveryInfo) -> None:
        verdicts.append(info)

    done = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with live_server(first, transport) as address:
                url = f"{address.ws_url}/t"
                client = client_for(url, route, reconnect=FAST, on_recovery=on_recovery)
                await nursery.start(hold, client, done)
                await wait_until(lambda: first.subscriber_count("t:a") == 1)
                await first.publish("t:a", Note(1))
                assert await client.receive() == Note(1)
                before = client.positions["t:a"]
            if same_broker:
                await first.publish("t:a", Note(2))  # while the client is away: in history
            async with live_server(second, transport, address.port):
                await wait_until(lambda: second.subscriber_count("t:a") == 1)
                await second.publish("t:a", Note(3))
                expected = [Note(2), Note(3)] if same_broker else [Note(3)]
                assert [await client.receive() for _ in expected] == expected
                await wait_until(lambda: verdicts)
                done.set()
    (verdict,) = verdicts
    assert (verdict.topic, verdict.since) == ("t:a", before)
    assert verdict.recovered is same_broker
    assert verdict.position is not None
    assert (verdict.position.epoch == before.epoch) is same_broker
    assert verdict.position.offset == (2 if same_broker else 1)  # a new epoch starts at 1
