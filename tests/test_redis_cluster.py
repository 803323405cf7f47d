"""RedisBroker on a real three-master Redis Cluster (``redis+cluster://``): sharded pub/sub
between two servers on topics of every shard, history and its recovery, presence and the
control channel across servers, a master killed with SIGKILL (the other shards keep
flowing) and restarted, and a gap in one master's subscription caught up from history.

One cluster for the module (``tests/_redis_cluster.py``; skipped without ``redis-server``,
failed under ``CI=true``); each test uses topics of its own. Every wait is bounded;
nothing asserts on timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests._redis import free_port, require_coredis
from tests._redis_cluster import RedisCluster, require_cluster_tools
from tests.conftest import live_server, wait_until
from tests.presence_app import make_server
from tests.test_history import Recorder
from tests.test_presence_redis import enter, seat_of
from tests.test_redis_broker import HISTORY, Said, chat_route, received
from tests.test_users import Alert, app, closed_with, ping, receive, user
from trio_wsroutes import (
    CloseCode,
    PresenceJoin,
    PresenceStats,
    RedisBroker,
    WebSocketServer,
)
from trio_wsroutes._broker.redis._common import Settings
from trio_wsroutes._history import Position, Recovery

TIMEOUT = 30


def broker(cluster: RedisCluster, **options: Any) -> RedisBroker:
    """A broker on the cluster, quick to retry, with history on ``room:*``."""
    options.setdefault("history", HISTORY)
    options.setdefault("reconnect_delay", 0.05)
    options.setdefault("max_reconnect_delay", 0.5)
    options.setdefault("timeout", 2.0)
    return RedisBroker(cluster.url, **options)


def channel(topic: str) -> bytes:
    return Settings(
        "redis+cluster://127.0.0.1:1/",
        channel_prefix="wsroutes:",
        max_queued_messages=1,
        max_queued_bytes=1,
        reconnect_delay=1,
        max_reconnect_delay=1,
        timeout=1,
        health_check_interval=1,
        history_meta_ttl=1,
        max_recovery_buffer=1,
        secret=None,
        max_message_size=None,
    ).channel(topic)


def one_topic_per_node(cluster: RedisCluster, prefix: str) -> list[str]:
    """``prefix0``, ``prefix1``, ...: the first topic whose slot is on each node, in node order."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < len(cluster.nodes):
        topic = f"{prefix}{n}"
        found.setdefault(cluster.node_of(channel(topic)).port, topic)
        n += 1
    return [found[node.port] for node in cluster.nodes]


def owner(cluster: RedisCluster, name: bytes) -> object:
    """The running node that owns the slot of ``name``, or ``None`` (none does now)."""
    try:
        return cluster.node_of(name)
    except LookupError:
        return None


def shard_channels(cluster: RedisCluster) -> dict[int, set[bytes]]:
    """The sharded channels each node has subscribers on."""
    result: dict[int, set[bytes]] = {}
    for node in cluster.nodes:
        reply = node.command("PUBSUB", "SHARDCHANNELS")
        result[node.port] = set(reply.split(b"\r\n")[2::2]) - {b""}
    return result


def test_cluster_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="host:port"):
        RedisBroker("redis+cluster://127.0.0.1/")
    with pytest.raises(ValueError, match="database 0"):
        RedisBroker("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(ValueError, match="cannot contain"):
        RedisBroker("redis+cluster://127.0.0.1:7000", channel_prefix="{app}:")
    masked = RedisBroker("redis+cluster://:hunter2@127.0.0.1:7000,127.0.0.1:7001/")
    assert "hunter2" not in masked.url and "127.0.0.1:7001" in masked.url
    # A topic whose hash tag would end early keeps its keys and channel in one slot.
    settings = Settings(
        "redis+cluster://127.0.0.1:7000",
        channel_prefix="p:",
        max_queued_messages=1,
        max_queued_bytes=1,
        reconnect_delay=1,
        max_reconnect_delay=1,
        timeout=1,
        health_check_interval=1,
        history_meta_ttl=1,
        max_recovery_buffer=1,
        secret=None,
        max_message_size=None,
    )
    from coredis._utils import hash_slot

    for topic in ("room:1", "a}b", "}", "", "{x}", "\x00control"):
        names = [settings.channel(topic), *settings.history_keys(topic)]
        assert len({hash_slot(name) for name in names}) == 1, topic
    assert settings.channel("a}b") != settings.channel("a")


async def test_an_unreachable_cluster_is_retried_and_local_delivery_goes_on() -> None:
    require_coredis()
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"  # nobody there
    lonely = RedisBroker(url, reconnect_delay=0.05, max_reconnect_delay=0.2, timeout=1.0)
    with trio.fail_after(TIMEOUT):
        async with lonely:
            assert lonely.state == "disconnected"
            recorder = Recorder()
            recorder.topics.add("news")
            await lonely.subscribe("news", recorder)
            assert await lonely.publish("news", Said("x", 1)) == 1
            assert recorder.numbers == [1]
            assert lonely.stats.publish_lost == 1
        with pytest.raises(ConnectionError, match="could not publish to Redis"):
            await RedisBroker(url, timeout=1.0).publish("news", Said("x", 2))


async def test_publications_on_every_shard_reach_the_other_server_in_order(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    rooms = one_topic_per_node(cluster, "room:lobby")  # one on each master
    per_room = 20
    servers = [WebSocketServer([chat_route()], broker=broker(cluster)) for _ in range(2)]
    with trio.fail_after(TIMEOUT):
        async with live_server(servers[0]) as first, live_server(servers[1], "native") as second:
            async with AsyncExitStack() as stack:
                talkers: list[WebSocketConnection] = []
                listeners: list[WebSocketConnection] = []
                for room in rooms:
                    for address, into in ((first, talkers), (second, listeners)):
                        ws = await stack.enter_async_context(
                            open_websocket_url(f"{address.ws_url}/chat/{room[5:]}")
                        )
                        await ws.get_message()  # joined: subscribed
                        into.append(ws)
                # Each master carries only the channels of its own slots (sharded).
                by_node = shard_channels(cluster)
                for room, node in zip(rooms, cluster.nodes, strict=True):
                    assert channel(room) in by_node[node.port]
                    others = [n for n in cluster.nodes if n is not node]
                    assert all(channel(room) not in by_node[n.port] for n in others)
                for ws in talkers:
                    for n in range(per_room):
                        await ws.send_message(json.dumps({"type": "say", "data": {"n": n}}))
                for room, ws in zip(rooms, listeners, strict=True):
                    got = [json.loads(await ws.get_message()) for _ in range(per_room)]
                    assert [m["data"]["n"] for m in got] == list(range(per_room)), room
                    assert [m["offset"] for m in got] == list(range(1, per_room + 1))
                    assert all(m["topic"] == room for m in got)
    for server in servers:
        stats = server.broker.stats  # type: ignore[attr-defined]
        assert stats.publish_lost == stats.missed == stats.duplicates == 0


async def test_history_recovers_on_another_server_on_every_shard(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    topics = one_topic_per_node(cluster, "room:rec")
    worker_a, worker_b = broker(cluster), broker(cluster)
    with trio.fail_after(TIMEOUT):
        async with worker_a, worker_b:
            for topic, node in zip(topics, cluster.nodes, strict=True):
                first = Recorder()
                first.topics.add(topic)
                await worker_a.subscribe(topic, first)
                for n in range(1, 4):
                    await worker_a.publish(topic, Said("x", n))
                await received(first, 3)
                seen = first.last()
                await worker_a.unsubscribe_all(first)
                for n in range(4, 11):
                    await worker_a.publish(topic, Said("x", n))
                await worker_a.flush()
                again = Recorder()
                assert await worker_b.subscribe(topic, again, since=seen) == Recovery(True, 7)
                assert again.offsets == list(range(4, 11))
                await worker_a.publish(topic, Said("x", 11))
                await received(again, 8)
                assert again.numbers == list(range(4, 12))
                # The topic's keys live on the master of its channel's slot.
                stream = b"wsroutes:h:{" + topic.encode() + b"}:l"
                assert node.command("EXISTS", stream.decode()) == b":1\r\n"
                # A publisher-only handle (no server) reads and publishes on the cluster.
                handle = RedisBroker(cluster.url, history=HISTORY)
                page = await handle.history(topic, since=Position(seen.epoch, 9))
                assert [p.position.offset for p in page.publications] == [10, 11]
                assert await handle.publish(topic, Said("cron", 12)) == 1
                await received(again, 9)
                assert again.offsets[-1] == 12
            # And on a topic without history: a sharded publish, one process reached.
            news = Recorder()
            await worker_b.subscribe("news", news)
            assert await RedisBroker(cluster.url).publish("news", Said("cron", 1)) == 1
            await received(news, 1)
            assert news.numbers == [1]


async def test_presence_is_shared_across_servers_on_the_cluster(
    redis_cluster: RedisCluster,
) -> None:
    one = make_server(broker(redis_cluster, history=None))
    two = make_server(broker(redis_cluster, history=None))
    with trio.fail_after(TIMEOUT):
        async with live_server(one) as a, live_server(two, "native") as b:
            await wait_until(lambda: one.broker.connected and two.broker.connected)  # type: ignore[attr-defined]
            async with AsyncExitStack() as stack:
                carol = await enter(stack, a.ws_url, "carol")
                await enter(stack, b.ws_url, "dave")
                assert await carol.receive() == PresenceJoin("room:a", "dave", seat_of("dave"))
                for server in (one, two):
                    assert await server.presence_stats("room:a") == PresenceStats(2, 2)
                    users = sorted(str(e.user_id) for e in await server.presence("room:a"))
                    assert users == ["carol", "dave"]


async def test_a_user_is_disconnected_on_another_server_on_the_cluster(
    redis_cluster: RedisCluster,
) -> None:
    a = app(broker=broker(redis_cluster, history=None))
    b = app(broker=broker(redis_cluster, history=None))
    with trio.fail_after(TIMEOUT):
        async with live_server(a), live_server(b, "native") as on_b:
            await wait_until(lambda: a.broker.connected and b.broker.connected)  # type: ignore[attr-defined]
            async with user(on_b, "ada") as ada, user(on_b, "bob") as bob:
                for ws in (ada, bob):
                    await ping(ws, 0)
                    await receive(ws)
                assert await a.subscribe(user="ada", topic="alerts") == 0
                await wait_until(lambda: b.subscriber_count("alerts") == 1)
                await a.publish("alerts", Alert("from A"))
                assert await receive(ada) == {"type": "alert", "data": {"text": "from A"}}
                assert await a.disconnect(user="ada", reason="banned") == 0
                assert await closed_with(ada) == CloseCode.FORBIDDEN
                await ping(bob, 5)
                assert await receive(bob) == {"type": "pong", "data": {"n": 5}, "id": 5}
    assert b.broker.stats.control_received == 2  # type: ignore[attr-defined]


@asynccontextmanager
async def publishing(
    publisher: RedisBroker, topics: list[str], pause: float = 0.005
) -> AsyncIterator[list[int]]:
    """Publish ``Said("p", n)`` on every topic in turn, n = 1, 2, ..., until the block
    ends; yields the count of rounds published so far."""
    count = [0]

    async def run() -> None:
        while True:
            n = count[0] + 1
            for topic in topics:
                await publisher.publish(topic, Said("p", n))
            count[0] = n
            await trio.sleep(pause)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield count
        nursery.cancel_scope.cancel()


def runs(recorder: Recorder) -> list[tuple[str, list[int]]]:
    """The offsets ``recorder`` got, per epoch, in the order they came."""
    out: list[tuple[str, list[int]]] = []
    for message in recorder.messages:
        if not out or out[-1][0] != message["epoch"]:
            out.append((message["epoch"], []))
        out[-1][1].append(message["offset"])
    return out


async def test_a_gap_in_one_masters_subscription_is_caught_up_from_history(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    topic = one_topic_per_node(cluster, "room:gap")[1]
    node = cluster.nodes[1]
    # The subscriber's broker is slow to reconnect: publications go by meanwhile.
    publisher = broker(cluster)
    subscriber = broker(cluster, reconnect_delay=0.3, max_reconnect_delay=0.6)
    recorder = Recorder()
    recorder.topics.add(topic)
    with trio.fail_after(TIMEOUT):
        async with publisher, subscriber:
            await subscriber.subscribe(topic, recorder)
            async with publishing(publisher, [topic]):
                await received(recorder, 20)
                node.command("CLIENT", "KILL", "TYPE", "pubsub")
                await wait_until(lambda: subscriber.stats.disconnects >= 1)
                await wait_until(lambda: subscriber.stats.catch_ups >= 1)
                done = len(recorder.messages) + 20
                await received(recorder, done)
            await publisher.flush()
            last = (await publisher.history(topic, limit=0)).position.offset
            await wait_until(lambda: recorder.offsets[-1:] == [last])
    # Every publication, once, in order: the gap was filled from the stream.
    assert recorder.offsets == list(range(1, last + 1))
    assert recorder.numbers == list(range(1, last + 1))
    assert subscriber.stats.catch_ups_failed == 0
    assert publisher.stats.publish_lost == 0


async def test_a_slot_moving_to_another_master_resubscribes_and_catches_up(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    topic = one_topic_per_node(cluster, "room:move")[0]
    target = cluster.nodes[2]
    publisher, subscriber = broker(cluster), broker(cluster)
    recorder = Recorder()
    recorder.topics.add(topic)
    with trio.fail_after(TIMEOUT):
        async with publisher, subscriber:
            await subscriber.subscribe(topic, recorder)
            async with publishing(publisher, [topic]) as count:
                await received(recorder, 20)
                await trio.to_thread.run_sync(cluster.move_slot, channel(topic), target)
                assert cluster.node_of(channel(topic)) is target
                # The subscription follows the slot: the new master carries it.
                await wait_until(lambda: channel(topic) in shard_channels(cluster)[target.port])
                await received(recorder, len(recorder.messages) + 20)
            await publisher.flush()
            last = (await publisher.history(topic, limit=0)).position.offset
            await wait_until(lambda: recorder.offsets[-1:] == [last])
    # Every committed publication, once, in order (those refused while the slot moved
    # were never numbered, and are counted lost by their publisher).
    assert recorder.offsets == list(range(1, last + 1))
    numbers = recorder.numbers
    assert numbers == sorted(set(numbers))
    # Each one that did not arrive is counted lost (a few counted may have arrived:
    # those in flight when the session ended, unacknowledged).
    assert publisher.stats.publish_lost >= count[0] - len(numbers)
    assert subscriber.stats.connects >= 2  # a new session on the new slot map
    assert subscriber.stats.catch_ups_failed == 0


async def test_a_killed_master_stops_only_its_shard_and_its_topics_resume_honestly(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    alive_topic, dead_topic, _ = one_topic_per_node(cluster, "room:kill")
    presence_room = one_topic_per_node(cluster, "room:p")[0][5:]  # not on the victim
    victim = cluster.nodes[1]
    servers = [make_server(broker(cluster, history=None)) for _ in range(2)]
    publisher, subscriber = broker(cluster), broker(cluster)
    alive, dead = Recorder(), Recorder()
    alive.topics.add(alive_topic)
    dead.topics.add(dead_topic)
    try:
        with trio.fail_after(TIMEOUT):
            async with (
                publisher,
                subscriber,
                live_server(servers[0]) as a,
                live_server(servers[1], "native") as b,
            ):
                await subscriber.subscribe(alive_topic, alive)
                await subscriber.subscribe(dead_topic, dead)
                async with publishing(publisher, [alive_topic, dead_topic]):
                    await received(alive, 10)
                    await received(dead, 10)
                    victim.kill()
                    # The other shard keeps flowing, and so do both servers.
                    before = len(alive.messages)
                    await received(alive, before + 100)
                    assert publisher.connected and subscriber.connected
                    async with AsyncExitStack() as stack:
                        carol = await enter(stack, a.ws_url, "carol", room=presence_room)
                        await enter(stack, b.ws_url, "dave", room=presence_room)
                        join = await carol.receive()
                        topic = f"room:{presence_room}"
                        assert join == PresenceJoin(topic, "dave", seat_of("dave"))
                    victim.start()  # same port, same nodes conf: its slots, no data
                    stalled = len(dead.messages)
                    await received(dead, stalled + 20, timeout=TIMEOUT)
                    await received(alive, len(alive.messages) + 20)
    finally:
        if victim.process is None:
            victim.start()
        cluster.wait_ok()
    # The live shard: never interrupted (no new session), every publication, in order.
    assert subscriber.stats.connects == publisher.stats.connects == 1
    assert runs(alive) == [(alive.messages[0]["epoch"], list(range(1, len(alive.messages) + 1)))]
    assert alive.numbers == list(range(1, len(alive.numbers) + 1))
    # The restarted shard lost its history: two contiguous runs, the second in a new
    # epoch, and the gap said, never silent: the catch-up failed and a client resuming
    # from its last old position is told it did not recover.
    epochs = runs(dead)
    assert len(epochs) == 2, epochs
    for _, offsets in epochs:
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    assert epochs[0][1][0] == 1
    assert subscriber.stats.catch_ups_failed >= 1
    old_epoch, old_offsets = epochs[0]
    async with broker(cluster) as resumer:
        since = Position(old_epoch, old_offsets[-1])
        assert await resumer.subscribe(dead_topic, Recorder(), since=since) == Recovery(False, 0)
    assert publisher.stats.publish_lost > 0  # counted, not hidden


async def test_a_failover_moves_the_subscription_to_the_promoted_replica(
    tmp_path: Path,
) -> None:
    # A cluster of its own: three masters, and a replica of the master of the topic.
    executable, cli = require_cluster_tools()
    cluster = RedisCluster(executable, cli, tmp_path)
    try:
        await trio.to_thread.run_sync(cluster.start)
        topic = one_topic_per_node(cluster, "room:failover")[0]
        master = cluster.nodes[0]
        replica = await trio.to_thread.run_sync(cluster.add_replica, master)
        publisher, subscriber = broker(cluster), broker(cluster)
        recorder = Recorder()
        recorder.topics.add(topic)
        with trio.fail_after(TIMEOUT):
            async with publisher, subscriber:
                await subscriber.subscribe(topic, recorder)
                for n in range(1, 11):
                    await publisher.publish(topic, Said("p", n))
                await received(recorder, 10)
                # Everything so far is on the replica (replication is asynchronous: a
                # failover can lose what the master had not sent it yet).
                await wait_until(lambda: cluster.replicated(master, replica))
                master.kill()
                async with publishing(publisher, [topic]) as count:
                    # Lost until the replica is promoted and the broker sees the new map.
                    await wait_until(lambda: owner(cluster, channel(topic)) is replica)
                    await received(recorder, len(recorder.messages) + 20)
                await publisher.flush()
                last = (await publisher.history(topic, limit=0)).position.offset
                await wait_until(lambda: recorder.offsets[-1:] == [last])
    finally:
        cluster.stop()
    # One epoch, every committed publication once and in order, the others counted lost.
    assert runs(recorder) == [(recorder.messages[0]["epoch"], list(range(1, last + 1)))]
    numbers = recorder.numbers
    assert numbers[:10] == list(range(1, 11))
    assert numbers[10:] == sorted(set(numbers[10:]))
    assert publisher.stats.publish_lost >= count[0] - (len(numbers) - 10)
    assert subscriber.stats.connects >= 2  # a new session on the new slot map
    assert subscriber.stats.catch_ups_failed == 0
