"""What every broker does, checked on both: :class:`~trio_wsroutes.MemoryBroker` and
:class:`~trio_wsroutes.RedisBroker` on a real ``redis-server`` (``open_broker`` runs each
test once per broker; see ``conftest.py``).

Subscribers here behave as connections do: each lists its topics before it subscribes
and until it has unsubscribed (:attr:`Subscriber.topics
<trio_wsroutes.Subscriber.topics>`), and one past its capacity is gone, as a connection
evicted as a slow consumer is. A Redis broker delivers a publication on a topic with
history when it comes back from Redis, so tests wait for deliveries (bounded) rather
than expect them at once; what must happen *at once* is checked without waiting.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio

from tests._redis import RedisServer
from tests.brokers.conftest import AnyBroker, OpenBroker
from tests.conftest import wait_until
from tests.test_history import said
from trio_wsroutes import (
    Frame,
    History,
    HistoryPolicy,
    MemoryBroker,
    Position,
    Recovery,
)
from trio_wsroutes._history import NOT_RECOVERED

TIMEOUT = 30
ROOMS = {"room:*": History(size=100)}


class Member:
    """A subscriber as a connection is one; past ``capacity`` frames it is gone."""

    def __init__(self, capacity: int | None = None) -> None:
        self.topics: set[str] = set()
        self.frames: list[Frame] = []
        self.capacity = capacity

    def deliver(self, frame: Frame) -> bool:
        if self.capacity is not None and len(self.frames) >= self.capacity:
            return False
        self.frames.append(frame)
        return True

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(frame.payload) for frame in self.frames if not frame.binary]

    @property
    def numbers(self) -> list[int]:
        return [m["data"]["n"] for m in self.messages]

    @property
    def offsets(self) -> list[int]:
        return [m.get("offset", 0) for m in self.messages]

    def last(self) -> Position:
        latest = self.messages[-1]
        return Position(latest["epoch"], latest["offset"])


async def join(
    broker: AnyBroker, topic: str, member: Member, since: Position | None = None
) -> Recovery:
    """Subscribe as a connection does: list the topic first."""
    member.topics.add(topic)
    return await broker.subscribe(topic, member, since=since)


async def leave(broker: AnyBroker, topic: str, member: Member) -> None:
    """Unsubscribe as a connection does: unlist the topic once the broker let go."""
    await broker.unsubscribe(topic, member)
    member.topics.discard(topic)


async def received(member: Member, count: int) -> None:
    await wait_until(lambda: len(member.frames) >= count, TIMEOUT)


async def published(broker: AnyBroker, topic: str, count: int, witness: Member) -> None:
    """Publish 1 to ``count`` on ``topic`` and wait until ``witness`` has them all."""
    for n in range(1, count + 1):
        await broker.publish(topic, said(n))
    await received(witness, count)


async def test_subscribe_unsubscribe_and_unsubscribe_all(open_broker: OpenBroker) -> None:
    first, second = Member(), Member()
    with trio.fail_after(TIMEOUT):
        async with open_broker(None) as broker:
            await join(broker, "a", first)
            await join(broker, "b", first)
            await join(broker, "a", second)
            await join(broker, "a", second)  # again: nothing changes
            assert (broker.subscriber_count("a"), broker.subscriber_count("b")) == (2, 1)
            assert await broker.publish("a", said(1)) == 2
            assert first.numbers == second.numbers == [1]

            await leave(broker, "a", second)
            await leave(broker, "a", second)  # not subscribed: no error
            assert broker.subscriber_count("a") == 1
            assert await broker.publish("a", said(2)) == 1
            assert (first.numbers, second.numbers) == ([1, 2], [1])

            # Leaving (a connection closing): every topic it lists, at once.
            await broker.unsubscribe_all(first)
            assert broker.subscriber_count("a") == broker.subscriber_count("b") == 0
            assert await broker.publish("a", said(3)) == 0
            assert await broker.publish("b", said(4)) == 0
            await broker.unsubscribe_all(first)  # again: no error
    assert (first.numbers, second.numbers) == ([1, 2], [1])


@pytest.mark.parametrize("topic", ["plain", "room:p"])
async def test_publish_reaches_every_subscriber_but_the_excluded_one(
    open_broker: OpenBroker, topic: str
) -> None:
    # With history ("room:p") or without, a publish returns how many local subscribers
    # it reaches, skips ``exclude``, and delivers binary frames live.
    publisher, first, second = Member(), Member(), Member()
    with trio.fail_after(TIMEOUT):
        async with open_broker(ROOMS) as broker:
            for member in (publisher, first, second):
                await join(broker, topic, member)
            assert await broker.publish(topic, said(1), exclude=publisher) == 2
            assert await broker.publish(topic, said(2)) == 3
            assert await broker.publish(topic, Frame(b"\x00raw", binary=True)) == 3
            await received(first, 3)
            await received(second, 3)
            await received(publisher, 2)
            # Nothing but those: another publish shows nothing else was on its way.
            assert await broker.publish(topic, said(3), exclude=first) == 2
            await received(second, 4)
            await received(publisher, 3)
    assert first.numbers == [1, 2]
    assert second.numbers == [1, 2, 3]
    assert publisher.numbers == [2, 3]
    assert [f.payload for f in second.frames if f.binary] == [b"\x00raw"]
    expected = [1, 2, 3] if topic == "room:p" else [0, 0, 0]
    assert second.offsets == expected  # numbered on a topic with history only


async def test_a_subscriber_gone_during_a_fan_out_leaves_every_topic_at_once(
    open_broker: OpenBroker,
) -> None:
    slow, other = Member(capacity=1), Member()
    with trio.fail_after(TIMEOUT):
        async with open_broker(None) as broker:
            for topic in ("a", "b", "c"):
                await join(broker, topic, slow)
            await join(broker, "a", other)
            assert await broker.publish("a", said(1)) == 2
            # The second does not fit: it is gone, and out of every topic before the
            # publish returns (a connection evicted as a slow consumer is, too).
            assert await broker.publish("a", said(2)) == 1
            assert [broker.subscriber_count(t) for t in ("a", "b", "c")] == [1, 0, 0]
            assert await broker.publish("b", said(3)) == 0
            assert await broker.publish("a", said(4)) == 1
    assert slow.numbers == [1]
    assert other.numbers == [1, 2, 4]


async def test_a_subscriber_gone_during_its_recovery_is_not_subscribed_anywhere(
    open_broker: OpenBroker,
) -> None:
    witness, slow = Member(), Member(capacity=2)
    with trio.fail_after(TIMEOUT):
        async with open_broker(ROOMS) as broker:
            await join(broker, "room:r", witness)
            await published(broker, "room:r", 5, witness)
            await join(broker, "other", slow)
            since = Position(witness.last().epoch, 1)
            assert await join(broker, "room:r", slow, since=since) == NOT_RECOVERED
            assert broker.subscriber_count("room:r") == 1
            assert broker.subscriber_count("other") == 0
    assert slow.offsets == [2, 3]  # what fitted


async def test_history_is_bounded_by_size_and_bytes(open_broker: OpenBroker) -> None:
    padding = "x" * 1000
    policy = {"room:*": History(size=3), "big:*": History(size=100, max_bytes=2500)}
    watcher = Member()
    with trio.fail_after(TIMEOUT):
        async with open_broker(policy) as broker:
            await join(broker, "room:s", watcher)
            await join(broker, "big:s", watcher)
            for n in range(1, 6):
                await broker.publish("room:s", said(n))
                await broker.publish("big:s", said(n, padding))  # about 1 100 bytes each
            await received(watcher, 10)
            epoch = watcher.last().epoch

            page = await broker.history("room:s")
            assert [p.position.offset for p in page.publications] == [3, 4, 5]
            assert page.position.offset == 5
            assert page.recovered
            page = await broker.history("room:s", limit=2)
            assert [p.position.offset for p in page.publications] == [4, 5]
            page = await broker.history("room:s", since=Position(page.position.epoch, 3))
            assert [p.position.offset for p in page.publications] == [4, 5]
            # No longer reaching back: nothing, and not recovered.
            page = await broker.history("room:s", since=Position(page.position.epoch, 1))
            assert (page.publications, page.recovered) == ((), False)

            page = await broker.history("big:s")
            assert [p.position.offset for p in page.publications] == [4, 5]
            assert page.position == Position(epoch, 5)
            with pytest.raises(ValueError, match="no history"):
                await broker.history("plain")


async def test_recovery_with_and_without_a_position(open_broker: OpenBroker) -> None:
    witness, first, again, fresh, elsewhere = Member(), Member(), Member(), Member(), Member()
    with trio.fail_after(TIMEOUT):
        async with open_broker(ROOMS) as broker:
            await join(broker, "room:r", witness)
            await join(broker, "room:r", first)
            for n in range(1, 4):
                await broker.publish("room:r", said(n))
            await received(first, 3)
            seen = first.last()
            await broker.unsubscribe_all(first)  # it disconnects...
            for n in range(4, 7):
                await broker.publish("room:r", said(n))  # ...and misses 4 to 6
            await received(witness, 6)  # delivered (from Redis, there): live is past 6

            assert await join(broker, "room:r", again, since=seen) == Recovery(True, 3)
            assert again.numbers == [4, 5, 6]  # delivered before subscribe returns
            assert await join(broker, "room:r", fresh) == NOT_RECOVERED
            other_epoch = Position("E" * 11, seen.offset)
            assert await join(broker, "room:r", elsewhere, since=other_epoch) == NOT_RECOVERED
            assert await join(broker, "room:r", again, since=seen) == NOT_RECOVERED  # twice
            await broker.publish("room:r", said(7))
            await received(again, 4)
            await received(fresh, 1)
            await received(elsewhere, 1)
    assert first.numbers == [1, 2, 3]
    assert again.offsets == [4, 5, 6, 7]  # no gap, no duplicate
    assert fresh.numbers == elsewhere.numbers == [7]  # live only


async def test_a_recovery_sends_at_most_max_recovery_publications(
    open_broker: OpenBroker,
) -> None:
    policy = HistoryPolicy(ROOMS, max_recovery=3)
    watcher, behind, near = Member(), Member(), Member()
    with trio.fail_after(TIMEOUT):
        async with open_broker(policy) as broker:
            await join(broker, "room:m", watcher)
            await published(broker, "room:m", 5, watcher)
            epoch = watcher.last().epoch
            # Four missed: more than max_recovery, so nothing old at all.
            assert await join(broker, "room:m", behind, since=Position(epoch, 1)) == (
                NOT_RECOVERED
            )
            assert await join(broker, "room:m", near, since=Position(epoch, 2)) == (
                Recovery(True, 3)
            )
            assert behind.frames == []
            assert near.offsets == [3, 4, 5]


async def test_reading_history_creates_nothing(
    open_broker: OpenBroker, request: pytest.FixtureRequest
) -> None:
    reader = Member()
    with trio.fail_after(TIMEOUT):
        async with open_broker(ROOMS) as broker:
            first = await broker.history("room:new")
            second = await broker.history("room:new", since=first.position)
            assert first.publications == second.publications == ()
            assert not first.recovered and not second.recovered
            assert first.position.offset == second.position.offset == 0
            assert first.position.epoch != second.position.epoch  # none was kept
            assert await join(broker, "room:new", reader, since=first.position) == (NOT_RECOVERED)
            if isinstance(broker, MemoryBroker):
                assert broker.history_topics() == 0
            else:
                redis: RedisServer = request.getfixturevalue("redis")
                assert redis.command("KEYS", "*") == b"*0\r\n"
            await broker.publish("room:new", said(1))
            await received(reader, 1)
    position = reader.last()
    assert position.offset == 1
    assert position.epoch not in (first.position.epoch, second.position.epoch)


async def test_a_loop_of_publishes_yields_every_16th_publication(open_broker: OpenBroker) -> None:
    # Publications made together are written to each subscriber together: a loop of
    # publishes lets other tasks run every 16th publication, not after each one (each
    # turn would write every subscriber's frames in a system call of its own).
    member = Member()
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    with trio.fail_after(TIMEOUT):
        async with open_broker(None) as broker:
            await join(broker, "live", member)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other_task)
                await trio.sleep(0.01)
                turns = 0
                for n in range(64):
                    await broker.publish("live", said(n))
                assert 3 <= turns <= 8  # 64 / 16, and the first may come sooner
                nursery.cancel_scope.cancel()
            assert len(member.frames) == 64
