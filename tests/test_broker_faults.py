"""RedisBroker faults with real clients on two real servers: Redis killed while publishing
(with and without persistence) and restarted on the same port, and the network between
one server and Redis stalled (``tests/_tcp_proxy.py``: no reset, no end of stream).

The verdict checked is the one users rely on: every subscriber of a topic with history
ends with every publication Redis numbered, in order, once, or hears ``recovered=False``
for the topic where it lost some (the Python client's ``on_recovery``), never a silent
gap and never a duplicate; and both servers keep serving (a new connection is accepted
and answered) during and after the fault.

Each test starts its own ``redis-server`` (``tests/_redis.py``). Every wait is bounded;
nothing asserts on timing.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests._redis import RedisServer, require_redis
from tests._tcp_proxy import TcpProxy, tcp_proxy
from tests.conftest import ServeLive, wait_until
from trio_wsroutes import (
    Connection,
    Context,
    History,
    Position,
    RedisBroker,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import Backoff, Client, RecoveryInfo, connect

TOPIC = "room:f"
FAST = Backoff(initial=0.02, maximum=0.2)


@attrs.frozen
class Echo:
    text: str


@message("said")
@attrs.frozen
class Said:
    n: int


@message("echoed")
@attrs.frozen
class Echoed:
    text: str


@message("joined")
@attrs.frozen
class Joined:
    recovered: bool
    missed: int


Out = Said | Echoed | Joined


def room_route() -> WebSocketRoute[None, Out]:
    route = create_websocket_route("/room/:name").server_messages(Said, Echoed, Joined)

    @route.on_connect
    async def join(ws: Connection[Out], ctx: Context[None]) -> None:
        # Resumes from the position the client names in its upgrade request, if any.
        recovery = await ws.subscribe(f"room:{ctx.params['name']}")
        await ws.send(Joined(recovery.recovered, recovery.missed))

    @route.on("echo", Echo)
    async def echo(ws: Connection[Out], data: Echo, ctx: Context[None]) -> Echoed:
        return Echoed(data.text)

    return route


def make_server(url: str, **options: Any) -> WebSocketServer:
    options.setdefault("reconnect_delay", 0.05)
    options.setdefault("max_reconnect_delay", 0.3)
    broker = RedisBroker(url, **options)
    return WebSocketServer([room_route()], broker=broker, history={"room:*": History(size=10_000)})


def broker_of(server: WebSocketServer) -> RedisBroker:
    broker = server.broker
    assert isinstance(broker, RedisBroker)
    return broker


class Watcher:
    """A Python client subscribed to :data:`TOPIC`, reconnecting and resuming by itself:
    the positions of the publications it received, in order, and its verdicts."""

    def __init__(self, url: str) -> None:
        self.client: Client[Out, Any] = connect(
            f"{url}/room/f", room_route(), reconnect=FAST, proxy=False, on_recovery=self.verdict
        )
        self.seen: list[tuple[Position, int]] = []
        """(position, n) of each numbered publication received."""
        self.numbers: list[int] = []
        """The ``n`` of every publication received, numbered or not (those without a
        position were made while Redis was unreachable, and delivered locally)."""
        self.verdicts: list[RecoveryInfo] = []
        self.joins: list[Joined] = []

    async def verdict(self, info: RecoveryInfo) -> None:
        self.verdicts.append(info)

    @property
    def last(self) -> Position | None:
        return self.seen[-1][0] if self.seen else None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.client as client:
            started = False
            while True:
                got = await client.receive()
                if isinstance(got, Joined):
                    self.joins.append(got)
                    if not started:
                        started = True
                        task_status.started()
                elif isinstance(got, Said):
                    self.numbers.append(got.n)
                    position = client.positions.get(TOPIC)
                    if position is not None and position != self.last:
                        self.seen.append((position, got.n))

    def check(self, final: Position) -> None:
        """The verdict: every numbered publication up to ``final``, in order, once, except
        where the client was told ``recovered=False`` (from its position then to the
        next one it got)."""
        honest = {(v.since, v.position) for v in self.verdicts if not v.recovered}
        previous: Position | None = None
        for position, _ in self.seen:
            if previous is not None and not (
                position.epoch == previous.epoch and position.offset == previous.offset + 1
            ):
                assert (previous, position) in honest, (
                    f"a gap without recovered=False: {previous} then {position}; "
                    f"verdicts {self.verdicts}"
                )
            previous = position
        # Each publication has its own n: none twice, numbered or not.
        assert len(set(self.numbers)) == len(self.numbers), "a duplicate"
        numbers = [n for _, n in self.seen]
        assert numbers == sorted(numbers), "out of order"
        assert self.last == final, (self.last, final)


async def last_position(server: WebSocketServer) -> Position:
    """The topic's last position in Redis (retried while the broker reconnects)."""
    while True:
        try:
            return (await server.history(TOPIC, limit=0)).position
        except ConnectionError:
            await trio.sleep(0.05)


async def still_serving(url: str) -> None:
    """A new connection is accepted and answered."""
    async with connect(f"{url}/room/probe", room_route(), proxy=False) as probe:
        assert isinstance(await probe.receive(), Joined)
        reply = await probe.request(Echo("hello"), reply_type=Echoed, timeout=10)
        assert reply == Echoed("hello")


class Publisher:
    """Publishes Said(1), Said(2), ... on :data:`TOPIC` from ``server``, a few ms apart,
    until stopped."""

    def __init__(self, server: WebSocketServer) -> None:
        self.server = server
        self.n = 0
        self.stopped = trio.Event()

    async def run(self) -> None:
        while not self.stopped.is_set():
            await self.one_more()
            await trio.sleep(0.005)

    async def one_more(self) -> None:
        self.n += 1
        await self.server.publish(TOPIC, Said(self.n))

    async def more(self, count: int) -> None:
        """Wait until ``count`` more are published (by :meth:`run`)."""
        mark = self.n
        await wait_until(lambda: self.n >= mark + count)


@asynccontextmanager
async def publishing(
    server: WebSocketServer, watchers: list[Watcher]
) -> AsyncGenerator[Publisher]:
    """A :class:`Publisher` running on ``server``, once every watcher has five of its
    publications; stopped on the way out."""
    publisher = Publisher(server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        await wait_until(lambda: all(len(w.seen) >= 5 for w in watchers))
        yield publisher
        publisher.stopped.set()


@asynccontextmanager
async def scene(
    serve_live: ServeLive, url_one: str, url_two: str, **options: Any
) -> AsyncGenerator[tuple[WebSocketServer, WebSocketServer, str, str, list[Watcher]]]:
    """Two servers (``one`` on ``url_one``, ``two`` on ``url_two``), a watcher on each,
    connected and subscribed."""
    one, two = make_server(url_one), make_server(url_two, **options)
    async with (
        serve_live(one) as a,
        serve_live(two) as b,
        trio.open_nursery() as nursery,
    ):
        await wait_until(lambda: broker_of(one).connected and broker_of(two).connected)
        watchers = [Watcher(a.ws_url), Watcher(b.ws_url)]
        for watcher in watchers:
            await nursery.start(watcher.run)
        yield one, two, a.ws_url, b.ws_url, watchers
        nursery.cancel_scope.cancel()


def all_at(watchers: list[Watcher], position: Position) -> bool:
    return all(w.last == position for w in watchers)


async def settle(publisher: Publisher, watchers: list[Watcher]) -> Position:
    """Once every watcher is connected and has its ``joined`` (a watcher told to resume
    late may have heard ``recovered=False`` after the last publication, and gone live
    with nothing after it), publish one more and wait until every watcher has it (again
    if one was told to resume meanwhile); return its position, the topic's last."""
    for _ in range(5):
        await wait_until(
            lambda: all(
                w.client.connected and len(w.joins) == w.client.reconnects + 1 for w in watchers
            )
        )
        await publisher.one_more()
        await broker_of(publisher.server).flush()  # committed in Redis: then read
        final = await last_position(publisher.server)
        with trio.move_on_after(5):
            await wait_until(functools.partial(all_at, watchers, final))
            return final
    raise AssertionError("the watchers never caught up")


def connected(*servers: WebSocketServer) -> Callable[[], bool]:
    return lambda: all(broker_of(s).connected for s in servers)


# -- the network between one server and Redis stalls --------------------------------------


async def test_a_stall_past_the_health_check_is_detected_and_nothing_is_lost_silently(
    serve_live: ServeLive, redis: RedisServer
) -> None:
    """The connection of server two to Redis stops forwarding (no RST, no FIN) while one
    publishes: two notices within its health check, keeps serving, reconnects when the
    network comes back, and its subscriber gets every publication or hears it did not."""
    with trio.fail_after(40):
        async with tcp_proxy(redis.port) as proxy:
            async with scene(
                serve_live, redis.url, proxy.url(), health_check_interval=0.5, timeout=1.0
            ) as (
                one,
                two,
                url1,
                url2,
                watchers,
            ):
                async with publishing(one, watchers) as publisher:
                    proxy.pause()
                    await still_serving(url2)  # the stall not noticed yet, or just
                    # Detected: no reset comes, only the health check can tell.
                    await wait_until(lambda: not broker_of(two).connected, timeout=15)
                    await still_serving(url2)
                    await still_serving(url1)
                    await publisher.more(20)
                    proxy.resume()
                    await wait_until(connected(two), timeout=15)
                    await publisher.more(20)
                final = await settle(publisher, watchers)
                for watcher in watchers:
                    watcher.check(final)
                await still_serving(url2)
                assert broker_of(two).stats.disconnects >= 1
                assert broker_of(one).stats.disconnects == 0
                # Two's subscriber missed what one published during the stall: told to
                # resume (1012), it recovered every one of them from the history.
                assert broker_of(two).stats.history_resumes >= 1
                metric = two._observability.snapshot()["metrics"]  # pyright: ignore[reportPrivateUsage]
                resumes = metric["broker_history_resumes_total"]["samples"]
                assert resumes == [[broker_of(two).stats.history_resumes]]
                assert any(v.recovered for v in watchers[1].verdicts), watchers[1].verdicts
                assert not any(not v.recovered for v in watchers[1].verdicts)
                assert watchers[0].verdicts == []


@pytest.mark.parametrize("which", [0, 1], ids=["subscription", "publishing"])
async def test_a_stall_of_one_connection_alone_is_detected(
    serve_live: ServeLive, redis: RedisServer, which: int
) -> None:
    """Only one of server two's connections goes silent (as when a firewall drops the state
    of an idle connection). The publishing one: the subscription connection still gets
    traffic, so only a check of the publishing one can tell; two must notice and
    reconnect, or every history read, recovery and presence update there fails after
    ``timeout``, for ever, while it says it is connected. The subscription one: its
    subscriber misses publications, and must get them back."""
    with trio.fail_after(40):
        async with tcp_proxy(redis.port) as proxy:
            async with scene(
                serve_live, redis.url, proxy.url(), health_check_interval=0.5, timeout=1.0
            ) as (one, two, _, url2, watchers):
                assert proxy.connections == 2  # two's subscription, then publishing one
                async with publishing(one, watchers) as publisher:
                    proxy.pause(only=which)
                    await wait_until(lambda: broker_of(two).stats.disconnects >= 1, timeout=15)
                    proxy.resume()
                    await wait_until(connected(two), timeout=15)
                    await still_serving(url2)
                final = await settle(publisher, watchers)
                for watcher in watchers:
                    watcher.check(final)
                # Reads through two's connections work again, and see what one sees.
                assert await two.history(TOPIC, limit=3) == await one.history(TOPIC, limit=3)


async def test_what_was_missed_at_the_end_of_a_stall_comes_back_without_a_later_one(
    serve_live: ServeLive, redis: RedisServer
) -> None:
    """Nothing is published after the stall: no jump in offsets will ever show the gap, so
    the reconnection itself must find it (the topic's last position in Redis is past
    the one delivered) and the subscriber must get the missed publications."""
    with trio.fail_after(40):
        async with tcp_proxy(redis.port) as proxy:
            async with scene(
                serve_live, redis.url, proxy.url(), health_check_interval=0.5, timeout=1.0
            ) as (one, two, _, _, watchers):
                publisher = Publisher(one)
                for _ in range(5):
                    await publisher.one_more()
                await wait_until(lambda: all(len(w.seen) == 5 for w in watchers))
                proxy.pause()
                await wait_until(lambda: not broker_of(two).connected, timeout=15)
                for _ in range(20):
                    await publisher.one_more()
                await broker_of(one).flush()
                final = await last_position(one)
                proxy.resume()
                await wait_until(functools.partial(all_at, watchers, final), timeout=20)
                for watcher in watchers:
                    watcher.check(final)
                assert [v.recovered for v in watchers[1].verdicts] == [True]
                assert watchers[0].verdicts == []


async def test_a_stall_shorter_than_the_health_check_loses_nothing_and_needs_no_recovery(
    serve_live: ServeLive, redis: RedisServer
) -> None:
    """A pause well under the detection time: the connection stays up, what Redis sent
    meanwhile arrives when the network comes back, nobody reconnects."""
    with trio.fail_after(30):
        async with tcp_proxy(redis.port) as proxy:
            async with scene(
                serve_live, redis.url, proxy.url(), health_check_interval=5.0, timeout=5.0
            ) as (one, two, url1, url2, watchers):
                async with publishing(one, watchers) as publisher:
                    proxy.pause()
                    await publisher.more(10)
                    await still_serving(url1)
                    proxy.resume()
                    await publisher.more(10)
                final = await settle(publisher, watchers)
                for watcher in watchers:
                    watcher.check(final)
                    assert watcher.verdicts == []
                    assert watcher.client.reconnects == 0
                    assert [p.offset for p, _ in watcher.seen] == list(
                        range(watcher.seen[0][0].offset, final.offset + 1)
                    )
                assert broker_of(two).stats.disconnects == 0
                assert broker_of(two).stats.missed == 0
                await still_serving(url1)
                await still_serving(url2)


# -- Redis killed while publishing, restarted on the same port ------------------------------


@pytest.mark.parametrize("persistent", [False, True], ids=["no-persistence", "aof"])
async def test_redis_killed_while_publishing_and_restarted(
    serve_live: ServeLive, tmp_path: Path, persistent: bool
) -> None:
    """SIGKILL while one publishes; restarted on the same port, while the network to
    server two is still stalled, so that one publishes numbered publications that two
    misses. Without persistence the history is gone (a new epoch): watchers must hear
    ``recovered=False``; with an append-only file it survives: they must get every
    publication."""
    redis = RedisServer(require_redis(), tmp_path, persistent=persistent)
    redis.start()
    try:
        with trio.fail_after(45):
            async with tcp_proxy(redis.port) as proxy:
                await faults_with_a_restart(serve_live, redis, proxy, persistent)
    finally:
        redis.kill()


async def faults_with_a_restart(
    serve_live: ServeLive, redis: RedisServer, proxy: TcpProxy, persistent: bool
) -> None:
    async with scene(
        serve_live, redis.url, proxy.url(), health_check_interval=0.5, timeout=1.0
    ) as (
        one,
        two,
        url1,
        url2,
        watchers,
    ):
        async with publishing(one, watchers) as publisher:
            before = watchers[0].last
            assert before is not None
            proxy.pause()
            redis.kill()
            await wait_until(lambda: not broker_of(one).connected)
            await still_serving(url1)
            await still_serving(url2)
            await trio.to_thread.run_sync(redis.start)
            await wait_until(connected(one), timeout=15)
            # Numbered again, two still cut off: two's watcher misses these.
            numbered = len(watchers[0].seen)
            await wait_until(lambda: len(watchers[0].seen) >= numbered + 10)
            proxy.cut()
            proxy.resume()
            await wait_until(connected(two), timeout=15)
            await publisher.more(10)
        final = await settle(publisher, watchers)
        for watcher in watchers:
            watcher.check(final)
        await still_serving(url1)
        await still_serving(url2)
        if persistent:
            assert final.epoch == before.epoch
            # Two's watcher missed numbered publications and got them back.
            assert any(v.recovered for v in watchers[1].verdicts), watchers[1].verdicts
        else:
            assert final.epoch != before.epoch
            for watcher in watchers:
                assert any(not v.recovered for v in watcher.verdicts), watcher.verdicts
