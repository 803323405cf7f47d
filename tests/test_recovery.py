"""History and recovery end to end: real servers, real clients, real Redis.

Every test that takes ``serve_live`` (or ``transport``) runs under hypercorn's trio worker
and under the native transport. Clients are raw WebSocket clients (trio-websocket) that
build the ``since`` query parameter by hand, as the contract spells it, and the project's
Python client for the restart cases. The Redis tests start their own ``redis-server`` on a
free 127.0.0.1 port (``tests/_redis.py``). Every wait is bounded; nothing asserts on
timing.

The broker-level tests (no network) are ``tests/test_history.py`` and the history part
of ``tests/test_redis_broker.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import attrs
import orjson
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from tests._redis import RedisServer
from tests.conftest import ServeLive, live_server, wait_until
from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    History,
    Position,
    Recovery,
    RedisBroker,
    WebSocketRoute,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes.client import Backoff, RecoveryInfo, connect

TIMEOUT = 30
FAST = Backoff(initial=0.02, maximum=0.2)
EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}")

HISTORY = {
    "room:*": History(size=100),
    "small:*": History(size=3),
    "busy:*": History(size=50_000),
    "big:*": History(size=20_000),
}


# -- the app --------------------------------------------------------------------------------


@attrs.frozen
class Say:
    text: str


@attrs.frozen
class Resume:
    epoch: str
    offset: int


@message("said")
@attrs.frozen
class Said:
    n: int
    text: str = ""


@message("joined")
@attrs.frozen
class Joined:
    topic: str
    recovered: bool
    missed: int


Out = Said | Joined


@attrs.define
class App:
    """A server whose route ``/topic/{name}`` subscribes to the topic ``name`` on connect
    and tells the client (and the test) what ``subscribe`` returned."""

    server: WebSocketServer
    route: WebSocketRoute[None, Out]
    recoveries: list[tuple[str, Recovery]]


def topic_route(recoveries: list[tuple[str, Recovery]]) -> WebSocketRoute[None, Out]:
    route = create_websocket_route("/topic/:name").server_messages(Said, Joined)

    @route.on_connect
    async def join(ws: Connection[Out], ctx: Context[None]) -> None:
        topic = ctx.params["name"]
        # The client's position for this topic, if it named one in the upgrade request.
        recovery = await ws.subscribe(topic)
        recoveries.append((topic, recovery))
        await ws.send(Joined(topic, recovery.recovered, recovery.missed))

    @route.on("say", Say)
    async def say(ws: Connection[Out], data: Say, ctx: Context[None]) -> None:
        await ws.publish(ctx.params["name"], Said(0, data.text))

    @route.on("resume", Resume)
    async def resume(ws: Connection[Out], data: Resume, ctx: Context[None]) -> Joined:
        # An explicit position: leave the topic, then resume it from there.
        topic = ctx.params["name"]
        await ws.unsubscribe(topic)
        recovery = await ws.subscribe(topic, since=Position(data.epoch, data.offset))
        recoveries.append((topic, recovery))
        return Joined(topic, recovery.recovered, recovery.missed)

    return route


def make_app(**options: Any) -> App:
    recoveries: list[tuple[str, Recovery]] = []
    route = topic_route(recoveries)
    options.setdefault("history", HISTORY)
    # Correctness of large recoveries here; their bounds (max_recovery, recovery_rate)
    # are tested with the attacks they stop (tests/test_attacks_history.py).
    options.setdefault("max_recovery", 100_000)
    options.setdefault("recovery_rate", None)
    return App(WebSocketServer([route], **options), route, recoveries)


# -- raw clients ----------------------------------------------------------------------------


def since_query(positions: Mapping[str, Position]) -> str:
    """``since=TOPIC@EPOCH:OFFSET`` per topic, URL-encoded: written out here, as the
    contract says, not with the library's helper."""
    return "&".join(
        "since=" + quote(f"{topic}@{p.epoch}:{p.offset}", safe="")
        for topic, p in positions.items()
    )


def topic_url(address: BoundAddress, topic: str, since: Mapping[str, Position] | None) -> str:
    url = f"{address.ws_url}/topic/{quote(topic, safe=':@')}"
    return f"{url}?{since_query(since)}" if since else url


class Sub:
    """A raw client of ``/topic/{topic}``: what it received, in order."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any] | bytes] = []
        self.raw: list[str] = []
        self.joined: dict[str, Any] | None = None
        self.before_joined: list[dict[str, Any]] = []
        """Publications received before the ``joined`` message: the recovered ones."""
        self.last_offset = 0
        """The offset of the latest publication received (0 before the first)."""

    async def next(self) -> dict[str, Any] | bytes:
        data = await self.ws.get_message()
        if isinstance(data, bytes):
            self.received.append(data)
            return data
        self.raw.append(data)
        decoded: dict[str, Any] = orjson.loads(data)
        self.received.append(decoded)
        if decoded["type"] == "said" and "offset" in decoded:
            self.last_offset = decoded["offset"]
        if decoded["type"] == "joined" and "id" not in decoded:  # not a reply
            assert self.joined is None, "joined twice"
            self.joined = decoded
            self.before_joined = self.publications
        return decoded

    async def until_joined(self) -> dict[str, Any]:
        while self.joined is None:
            await self.next()
        return self.joined

    async def until_offset(self, offset: int) -> None:
        # Not ``self.offsets``: rebuilt per message, that is quadratic in a long run.
        while self.last_offset < offset:
            await self.next()

    async def until_closed(self) -> int:
        """Read everything until the server's close; return its code."""
        try:
            while True:
                await self.next()
        except ConnectionClosed as closed:
            assert closed.reason is not None
            return int(closed.reason.code)

    @property
    def publications(self) -> list[dict[str, Any]]:
        return [m for m in self.received if isinstance(m, dict) and m["type"] == "said"]

    @property
    def offsets(self) -> list[int]:
        return [m["offset"] for m in self.publications]

    def last(self) -> Position:
        latest = self.publications[-1]
        return Position(latest["epoch"], latest["offset"])

    async def say(self, text: str) -> None:
        await self.ws.send_message(orjson.dumps({"type": "say", "data": {"text": text}}).decode())


@asynccontextmanager
async def subscriber(
    address: BoundAddress,
    topic: str,
    since: Mapping[str, Position] | None = None,
    *,
    queue: int = 100_000,
) -> AsyncGenerator[Sub]:
    """Connect to ``topic`` (with ``since``) and wait for its ``joined`` message.

    ``queue`` bounds the messages trio-websocket reads ahead: 1 stops reading the
    socket until the test takes a message (a client that does not keep up)."""
    async with open_websocket_url(
        topic_url(address, topic, since), message_queue_size=queue
    ) as ws:
        sub = Sub(ws)
        await sub.until_joined()
        yield sub


def said(n: int, topic: str, offset: int, epoch: str, text: str = "") -> dict[str, Any]:
    return {
        "type": "said",
        "data": {"n": n, "text": text},
        "topic": topic,
        "offset": offset,
        "epoch": epoch,
    }


def joined(topic: str, recovered: bool, missed: int) -> dict[str, Any]:
    return {
        "type": "joined",
        "data": {"topic": topic, "recovered": recovered, "missed": missed},
    }


# -- positions ------------------------------------------------------------------------------


async def test_publications_on_history_topics_carry_topic_offset_and_epoch(
    serve_live: ServeLive,
) -> None:
    app = make_app()
    server = app.server
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with (
                subscriber(address, "room:a") as a,
                subscriber(address, "room:a") as b,
                subscriber(address, "lobby") as lobby,
            ):
                assert a.joined == joined("room:a", False, 0)  # no position: as before
                await server.publish("room:a", Said(1))
                await a.until_offset(1)
                await b.say("from b")  # ws.publish: everyone but b
                await a.until_offset(2)
                await server.publish_binary("room:a", b"\x00raw")  # live, unnumbered
                await server.publish("room:a", Said(3))
                await server.publish("lobby", Said(9))  # no history
                await a.until_offset(3)
                await b.until_offset(3)
                assert await lobby.next() == {"type": "said", "data": {"n": 9, "text": ""}}

                epoch = a.publications[0]["epoch"]
                assert EPOCH.fullmatch(epoch)
                assert a.received[1:] == [
                    said(1, "room:a", 1, epoch),
                    said(0, "room:a", 2, epoch, "from b"),
                    b"\x00raw",
                    said(3, "room:a", 3, epoch),
                ]
                assert b.received[1:] == [
                    said(1, "room:a", 1, epoch),
                    b"\x00raw",
                    said(3, "room:a", 3, epoch),
                ]
                # The position is added after the envelope's members, as bytes.
                assert a.raw[1] == (
                    '{"type":"said","data":{"n":1,"text":""},'
                    f'"topic":"room:a","offset":1,"epoch":"{epoch}"}}'
                )
                # The history holds exactly what subscribers received (not the binary).
                page = await server.history("room:a")
                assert page.position == Position(epoch, 3)
                assert [p.text for p in page.publications] == [
                    a.raw[1],
                    a.raw[2],
                    a.raw[3],
                ]


# -- recovery -------------------------------------------------------------------------------


async def test_reconnecting_with_since_gets_exactly_the_missed_ones_then_live_ones(
    serve_live: ServeLive,
) -> None:
    app = make_app()
    server = app.server
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with subscriber(address, "room:a") as first:
                for n in range(1, 4):
                    await server.publish("room:a", Said(n))
                await first.until_offset(3)
                seen = first.last()
            await wait_until(lambda: server.subscriber_count("room:a") == 0)
            for n in range(4, 11):  # missed while away
                await server.publish("room:a", Said(n))

            async with subscriber(address, "room:a", {"room:a": seen}) as again:
                # What it missed, in order, before the app's joined message...
                assert [m["data"]["n"] for m in again.before_joined] == list(range(4, 11))
                assert again.offsets == list(range(4, 11))
                # ...and subscribe() told the app.
                assert again.joined == joined("room:a", True, 7)
                assert app.recoveries[-1] == ("room:a", Recovery(True, 7))
                await server.publish("room:a", Said(11))  # then live
                await again.until_offset(11)
                assert again.offsets == list(range(4, 12))
                assert {m["epoch"] for m in again.publications} == {seen.epoch}
                latest = again.last()

            # Up to date: recovered, nothing missed.
            async with subscriber(address, "room:a", {"room:a": latest}) as current:
                assert current.joined == joined("room:a", True, 0)
                assert current.before_joined == []

            # Positions for other topics do not touch this one; several are accepted.
            other = {"room:b": Position(seen.epoch, 1), "x@y:z": Position("e", 0)}
            async with subscriber(address, "room:a", other) as unrelated:
                assert unrelated.joined == joined("room:a", False, 0)
                assert unrelated.before_joined == []


async def test_topics_with_at_and_colon_resume_from_a_url_encoded_since(
    serve_live: ServeLive,
) -> None:
    # The value is split at its last ":" and then its last "@".
    topic = "room:a@b:c"
    app = make_app()
    async with serve_live(app.server) as address:
        with trio.fail_after(TIMEOUT):
            async with subscriber(address, topic) as first:
                await app.server.publish(topic, Said(1))
                await first.until_offset(1)
                seen = first.last()
            await app.server.publish(topic, Said(2))
            async with subscriber(address, topic, {topic: seen}) as again:
                assert again.joined == joined(topic, True, 1)
                assert again.before_joined == [said(2, topic, 2, seen.epoch)]


async def test_a_wrong_epoch_or_an_offset_out_of_reach_recovers_nothing_old(
    serve_live: ServeLive,
) -> None:
    app = make_app()
    server = app.server
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            for n in range(1, 9):
                await server.publish("small:a", Said(n))  # keeps 6, 7, 8
            epoch = (await server.history("small:a")).position.epoch
            offset = 8
            for since in (
                Position("another-epoch", 8),  # the history was lost since
                Position(epoch, 4),  # too old: 5 is gone
                Position(epoch, 99),  # ahead of the topic
            ):
                async with subscriber(address, "small:a", {"small:a": since}) as late:
                    assert late.joined == joined("small:a", False, 0)
                    assert late.before_joined == []
                    assert app.recoveries[-1] == ("small:a", Recovery(False, 0))
                    offset += 1
                    await server.publish("small:a", Said(offset))  # live from here on
                    assert await late.next() == said(offset, "small:a", offset, epoch)

            # The oldest kept publication is still in reach.
            page = await server.history("small:a")
            oldest = page.publications[0].position
            edge = Position(epoch, oldest.offset - 1)
            async with subscriber(address, "small:a", {"small:a": edge}) as just:
                assert just.joined == joined("small:a", True, 3)
                assert just.offsets == [oldest.offset, oldest.offset + 1, oldest.offset + 2]


async def hammer(server: WebSocketServer, topic: str, stop: trio.Event) -> None:
    """Publish ``Said(1)``, ``Said(2)``, ... until ``stop``, about 5 000 a second at most."""
    n = 0
    while not stop.is_set():
        n += 1
        await server.publish(topic, Said(n))
        if n % 10 == 0:
            await trio.sleep(0.002)


async def check_hammered_reconnect(
    publishing: WebSocketServer,
    first_address: BoundAddress,
    second_address: BoundAddress,
    topic: str,
) -> tuple[int, int, Recovery]:
    """A witness and a client listen to ``topic`` on the first server while a publisher
    hammers it; the client leaves, misses at least 200 publications, and reconnects with
    its position to the second server while the publishing goes on. Both must see a
    contiguous run of offsets with no duplicate. Returns (since, final, the recovery)."""
    stop = trio.Event()
    async with subscriber(first_address, topic) as witness, trio.open_nursery() as nursery:
        nursery.start_soon(hammer, publishing, topic, stop)
        try:
            async with subscriber(first_address, topic) as first:
                await first.until_offset(50)
                since = first.last()
            await witness.until_offset(since.offset + 200)
            async with subscriber(second_address, topic, {topic: since}) as again:
                assert again.joined is not None
                recovery = Recovery(
                    again.joined["data"]["recovered"], again.joined["data"]["missed"]
                )
                # Live publications after the recovered ones, while the hammer goes on.
                await again.until_offset(since.offset + recovery.missed + 300)
                stop.set()
                final = await last_offset(publishing, topic)
                await again.until_offset(final)
                await witness.until_offset(final)
        finally:
            stop.set()
    assert again.offsets == list(range(since.offset + 1, final + 1))  # no gap, no duplicate
    assert [m["data"]["n"] for m in again.publications] == again.offsets
    assert len({m["epoch"] for m in again.publications}) == 1
    assert len(again.before_joined) >= recovery.missed  # the recovered ones came first
    assert witness.offsets == list(range(1, final + 1))
    return since.offset, final, recovery


async def last_offset(server: WebSocketServer, topic: str) -> int:
    broker = server.broker
    if isinstance(broker, RedisBroker):
        await broker.flush()
    return (await server.history(topic, limit=0)).position.offset


async def test_a_publisher_hammering_during_the_reconnect_leaves_no_gap_and_no_duplicate(
    serve_live: ServeLive,
) -> None:
    app = make_app()
    async with serve_live(app.server) as address:
        with trio.fail_after(60):
            since, final, recovery = await check_hammered_reconnect(
                app.server, address, address, "busy:a"
            )
    assert recovery.recovered
    assert recovery.missed >= 200
    assert since + recovery.missed + 300 <= final  # then live, while publishing went on
    assert app.server.stats.messages_dropped == app.server.stats.slow_consumer_closes == 0


# -- the upgrade request --------------------------------------------------------------------


BAD_SINCE: list[tuple[str, list[str]]] = [
    ("not TOPIC@EPOCH:OFFSET", ["room:a"]),
    ("no topic", ["@e1:3"]),
    ("empty epoch", ["room:a@:3"]),
    ("epoch with other characters", ["room:a@bad!epoch:3"]),
    ("epoch over 64 characters", ["room:a@" + "e" * 65 + ":3"]),
    ("negative offset", ["room:a@e1:-1"]),
    ("fractional offset", ["room:a@e1:3.5"]),
    ("non-ASCII digits", ["room:a@e1:\u0663"]),
    ("offset over 2**53 - 1", ["room:a@e1:9007199254740992"]),
    ("a topic twice", ["room:a@e1:3", "room:a@e1:4"]),
    ("a value over 512 characters", ["room:" + "a" * 520 + "@e1:3"]),
    ("over 100 values", [f"room:{n}@e1:1" for n in range(101)]),
]


@pytest.mark.parametrize("values", [pytest.param(v, id=name) for name, v in BAD_SINCE])
async def test_a_bad_since_is_a_400_with_a_json_body_before_the_upgrade(
    serve_live: ServeLive, values: list[str]
) -> None:
    app = make_app(max_query_params=200)
    query = "&".join("since=" + quote(value, safe="") for value in values)
    async with serve_live(app.server) as address:
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(f"{address.ws_url}/topic/room:a?{query}"):
                pass
    rejection = info.value
    assert rejection.status_code == 400
    headers = {bytes(k).decode().lower(): bytes(v).decode() for k, v in rejection.headers or []}
    assert headers["content-type"].startswith("application/json")
    assert rejection.body is not None
    body = orjson.loads(rejection.body)
    assert set(body) == {"message", "code"}
    assert body["code"] == "BAD_REQUEST"
    assert "since" in body["message"]
    assert values[0] not in body["message"]  # the value is not echoed
    assert app.recoveries == []  # never upgraded, no handler ran
    assert app.server.stats.connections_accepted == 0


# -- slow consumers -------------------------------------------------------------------------

BIG = "x" * 1024


async def reconnect_until_current(
    address: BoundAddress, topic: str, since: Position, final: int
) -> tuple[list[int], list[int | None], list[Recovery]]:
    """Reconnect with the last position seen, reading as fast as possible, until the
    client has every publication up to ``final``. Returns the offsets received after
    ``since``, the close code of each connection (``None``: still open at the end) and
    what each subscribe returned."""
    offsets: list[int] = []
    codes: list[int | None] = []
    recoveries: list[Recovery] = []
    position = since
    while position.offset < final:
        assert len(codes) < 50, "no progress"
        async with open_websocket_url(
            topic_url(address, topic, {topic: position}), message_queue_size=100_000
        ) as ws:
            sub = Sub(ws)
            try:
                while not sub.offsets or sub.offsets[-1] < final:
                    await sub.next()
                code: int | None = None
            except ConnectionClosed as closed:
                assert closed.reason is not None
                code = int(closed.reason.code)
        codes.append(code)
        if sub.joined is not None:
            data = sub.joined["data"]
            recoveries.append(Recovery(data["recovered"], data["missed"]))
        offsets += sub.offsets
        if sub.publications:
            position = sub.last()
    return offsets, codes, recoveries


async def test_a_subscriber_evicted_with_1013_reconnects_and_recovers_what_it_lost(
    serve_live: ServeLive,
) -> None:
    app = make_app(backpressure_limit=64 * 1024)
    server = app.server
    async with serve_live(server) as address:
        with trio.fail_after(60):
            # A client that stops reading (trio-websocket reads one message ahead).
            async with subscriber(address, "big:a", queue=1) as slow:
                published = 0
                while server.stats.slow_consumer_closes == 0:
                    assert published < 20_000, "never evicted"
                    published += 1
                    await server.publish("big:a", Said(published, BIG))
                for _ in range(5):  # published after it was evicted
                    published += 1
                    await server.publish("big:a", Said(published, BIG))
                # It reads what reached it, then the close.
                assert await slow.until_closed() == 1013
            got = slow.offsets
            assert got == list(range(1, len(got) + 1))
            assert len(got) < published
            offsets, codes, recoveries = await reconnect_until_current(
                address, "big:a", slow.last(), published
            )
    assert got + offsets == list(range(1, published + 1))
    assert all(r.recovered for r in recoveries)
    assert codes[-1] is None
    assert server.stats.messages_dropped == 0
    print(f"\nevicted after {len(got)} of {published}; recovered in {len(codes)} connection(s)")


async def test_with_the_drop_policy_a_recovery_closes_with_1013_instead_of_dropping(
    serve_live: ServeLive,
) -> None:
    # Live publications to a slow subscriber are dropped; a recovery never drops one (a
    # gap the client cannot see): a backlog over the limit closes with 1013, and the
    # client resumes from where it got to.
    app = make_app(slow_consumer_policy="drop", backpressure_limit=256 * 1024)
    server = app.server
    async with serve_live(server) as address:
        with trio.fail_after(60):
            async with subscriber(address, "big:d") as first:
                await server.publish("big:d", Said(1, BIG))
                await first.until_offset(1)
                since = first.last()
            await wait_until(lambda: server.subscriber_count("big:d") == 0)
            total = 1500  # about 1.5 MiB missed: over the limit and the socket buffers
            for n in range(2, total + 1):
                await server.publish("big:d", Said(n, BIG))
            offsets, codes, recoveries = await reconnect_until_current(
                address, "big:d", since, total
            )
    assert offsets == list(range(2, total + 1))
    assert 1013 in codes
    assert codes[-1] is None
    assert all(r.recovered for r in recoveries)
    assert server.stats.messages_dropped == 0
    assert server.stats.slow_consumer_closes == codes.count(1013)
    print(f"\n{total - 1} missed, recovered over {len(codes)} connections: {codes}")


# -- server.history --------------------------------------------------------------------------


async def test_server_history_reads_what_subscribers_received(serve_live: ServeLive) -> None:
    app = make_app()
    server = app.server
    async with serve_live(server) as address:
        with trio.fail_after(TIMEOUT):
            async with subscriber(address, "room:h") as sub, subscriber(address, "room:h") as pub:
                for n in range(1, 4):
                    await server.publish("room:h", Said(n))
                await pub.say("four")
                await server.publish_binary("room:h", b"bin")  # not kept
                await server.publish("room:h", Said(5))
                await sub.until_offset(5)
                epoch = sub.last().epoch

                page = await server.history("room:h")
                assert page.topic == "room:h"
                assert page.recovered
                assert page.position == Position(epoch, 5)
                assert [p.position for p in page.publications] == [
                    Position(epoch, n) for n in range(1, 6)
                ]
                # Exactly the bytes a subscriber got.
                assert [p.text for p in page.publications] == [
                    r for r in sub.raw if '"type":"said"' in r
                ]
                last_two = await server.history("room:h", limit=2)
                assert [p.position.offset for p in last_two.publications] == [4, 5]
                none = await server.history("room:h", limit=0)
                assert (none.publications, none.position) == ((), Position(epoch, 5))
                after = await server.history("room:h", since=Position(epoch, 1), limit=2)
                assert [p.position.offset for p in after.publications] == [2, 3]
                assert after.recovered
                lost = await server.history("room:h", since=Position("other", 1))
                assert (lost.recovered, lost.publications) == (False, ())
                assert lost.position == Position(epoch, 5)
                with pytest.raises(ValueError, match="has no history"):
                    await server.history("lobby")

                # A snapshot stands at page.position; resuming from it (an explicit
                # subscribe(since=...)) sends what came after, then the live ones.
                snapshot = await server.history("room:h", limit=0)
                for n in range(6, 9):
                    await server.publish("room:h", Said(n))
                await pub.ws.send_message(
                    orjson.dumps(
                        {
                            "type": "resume",
                            "id": "r1",
                            "data": {
                                "epoch": snapshot.position.epoch,
                                "offset": snapshot.position.offset,
                            },
                        }
                    ).decode()
                )
                while True:
                    reply = await pub.next()
                    if isinstance(reply, dict) and reply.get("id") == "r1":
                        break
                assert reply == {**joined("room:h", True, 3), "id": "r1"}
                assert pub.offsets[-3:] == [6, 7, 8]
                await server.publish("room:h", Said(9))
                await pub.until_offset(9)
                assert pub.offsets[-4:] == [6, 7, 8, 9]


# -- Redis ----------------------------------------------------------------------------------


def redis_app(url: str, **options: Any) -> App:
    broker = RedisBroker(url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    return make_app(broker=broker, **options)


async def test_two_servers_on_one_redis_a_client_recovers_on_the_other_one(
    redis: RedisServer, transport: str
) -> None:
    one, two = redis_app(redis.url), redis_app(redis.url)
    async with (
        live_server(one.server, transport) as first,
        live_server(two.server, transport) as second,
    ):
        with trio.fail_after(TIMEOUT):
            async with subscriber(first, "room:a") as client, subscriber(second, "room:a") as far:
                for n in range(1, 4):
                    await one.server.publish("room:a", Said(n))
                await client.until_offset(3)
                await far.until_offset(3)
                assert far.received[1:] == client.received[1:]  # one order, one position
                seen = client.last()
            for n in range(4, 9):
                await one.server.publish("room:a", Said(n))  # missed, published on one
            await last_offset(one.server, "room:a")
            async with subscriber(second, "room:a", {"room:a": seen}) as again:  # on two
                assert again.joined == joined("room:a", True, 5)
                assert two.recoveries[-1] == ("room:a", Recovery(True, 5))
                assert again.offsets == list(range(4, 9))
                await one.server.publish("room:a", Said(9))
                await again.until_offset(9)
                assert again.offsets == list(range(4, 10))
                assert [m["data"]["n"] for m in again.publications] == list(range(4, 10))
            # The history is Redis's: both servers read the same.
            assert await one.server.history("room:a") == await two.server.history("room:a")


async def test_two_servers_on_one_redis_hammered_during_the_reconnect(
    redis: RedisServer, transport: str
) -> None:
    one, two = redis_app(redis.url), redis_app(redis.url)
    async with (
        live_server(one.server, transport) as first,
        live_server(two.server, transport) as second,
    ):
        with trio.fail_after(90):
            since, final, recovery = await check_hammered_reconnect(
                one.server, first, second, "busy:r"
            )
    assert recovery.recovered
    assert recovery.missed >= 200
    assert since + recovery.missed + 300 <= final
    for app in (one, two):
        broker = app.server.broker
        assert isinstance(broker, RedisBroker)
        assert broker.stats.publish_lost == broker.stats.duplicates == 0
    assert isinstance(two.server.broker, RedisBroker)
    assert two.server.broker.stats.recoveries == 1


async def test_a_redis_restart_changes_the_epoch_and_old_positions_do_not_recover(
    redis: RedisServer, transport: str
) -> None:
    app = redis_app(redis.url)
    broker = app.server.broker
    assert isinstance(broker, RedisBroker)
    async with live_server(app.server, transport) as address:
        with trio.fail_after(TIMEOUT):
            async with subscriber(address, "room:r") as client:
                for n in range(1, 4):
                    await app.server.publish("room:r", Said(n))
                await client.until_offset(3)
                old = client.last()
                redis.kill()  # no persistence: the history is gone
                await wait_until(lambda: not broker.connected)
                await trio.to_thread.run_sync(redis.start)  # the same port
                await wait_until(lambda: broker.connected)
                # Its position no longer recovers: closed, to resume and hear so.
                assert await client.until_closed() == 1012
            async with subscriber(address, "room:r", {"room:r": old}) as late:
                assert late.joined == joined("room:r", False, 0)
                assert late.before_joined == []
                await app.server.publish("room:r", Said(4))
                message = await late.next()
                assert isinstance(message, dict)
                new = Position(message["epoch"], message["offset"])
                assert new.epoch != old.epoch
                assert new.offset == 1  # a new run of offsets
            async with subscriber(address, "room:r", {"room:r": Position(new.epoch, 0)}) as fresh:
                assert fresh.joined == joined("room:r", True, 1)
                assert fresh.offsets == [1]


# -- the Python client across a server restart -------------------------------------------------


async def hold(
    client: Any, done: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keep ``client`` connected (reconnecting) in a task of its own until ``done``."""
    async with client:
        task_status.started()
        await done.wait()


async def test_the_python_client_misses_nothing_across_a_server_restart_with_redis(
    redis: RedisServer, transport: str
) -> None:
    first_app, second_app = redis_app(redis.url), redis_app(redis.url)
    # Publishes while no server runs: a handle that is not running, with the same policy.
    outside = RedisBroker(redis.url, history=HISTORY)
    received: list[Out] = []
    verdicts: list[RecoveryInfo] = []
    done = trio.Event()

    async def on_recovery(info: RecoveryInfo) -> None:
        verdicts.append(info)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with live_server(first_app.server, transport) as address:
                url = f"{address.ws_url}/topic/room:p"
                client = connect(
                    url, first_app.route, reconnect=FAST, proxy=False, on_recovery=on_recovery
                )
                await nursery.start(hold, client, done)
                received.append(await client.receive())
                for n in range(1, 4):
                    await first_app.server.publish("room:p", Said(n))
                received += [await client.receive() for _ in range(3)]
                before = client.positions["room:p"]
            # The server has shut down (1001); the client keeps trying to reconnect.
            for n in range(4, 8):
                await outside.publish("room:p", Said(n))
            async with live_server(second_app.server, transport, address.port):
                # What it missed, then the app's joined (it recovered), then live ones.
                received += [await client.receive() for _ in range(5)]
                await second_app.server.publish("room:p", Said(8))
                received.append(await client.receive())
                assert client.reconnects == 1
                after = client.positions["room:p"]
                await wait_until(lambda: verdicts)
                done.set()
    assert received == [
        Joined("room:p", False, 0),
        Said(1),
        Said(2),
        Said(3),
        Said(4),
        Said(5),
        Said(6),
        Said(7),
        Joined("room:p", True, 4),
        Said(8),
    ]
    assert second_app.recoveries == [("room:p", Recovery(True, 4))]
    assert after == Position(before.epoch, before.offset + 5)
    # The client's own verdict: the first publication it got followed its position.
    assert verdicts == [
        RecoveryInfo("room:p", True, before, Position(before.epoch, before.offset + 1))
    ]


async def test_the_python_client_learns_that_an_in_memory_history_was_lost(
    transport: str,
) -> None:
    # MemoryBroker keeps history in the process: a restarted server starts a new epoch,
    # the client's position does not recover, and the app can tell it so (and would send
    # a snapshot here).
    first_app, second_app = make_app(), make_app()
    verdicts: list[RecoveryInfo] = []
    done = trio.Event()

    async def on_recovery(info: RecoveryInfo) -> None:
        verdicts.append(info)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with live_server(first_app.server, transport) as address:
                url = f"{address.ws_url}/topic/room:m"
                client = connect(
                    url, first_app.route, reconnect=FAST, proxy=False, on_recovery=on_recovery
                )
                await nursery.start(hold, client, done)
                assert await client.receive() == Joined("room:m", False, 0)
                await first_app.server.publish("room:m", Said(1))
                assert await client.receive() == Said(1)
                before = client.positions["room:m"]
            async with live_server(second_app.server, transport, address.port):
                assert await client.receive() == Joined("room:m", False, 0)
                assert second_app.recoveries == [("room:m", Recovery(False, 0))]
                await second_app.server.publish("room:m", Said(2))
                assert await client.receive() == Said(2)
                after = client.positions["room:m"]
                await wait_until(lambda: verdicts)
                done.set()
    assert after.epoch != before.epoch
    assert after.offset == 1
    # The app hears it from the client too, and would fetch a snapshot.
    assert verdicts == [RecoveryInfo("room:m", False, before, after)]
