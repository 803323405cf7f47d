"""History and recovery at the broker level, in process (``MemoryBroker``).

The Redis broker's history tests live beside the other Redis tests
(``tests/test_redis_broker.py``). Every wait is bounded with ``trio.fail_after``; nothing
asserts on timing.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_wsroutes import Frame, MemoryBroker, message
from trio_wsroutes._history import (
    NOT_RECOVERED,
    History,
    HistoryPage,
    HistoryPolicy,
    Position,
    Publication,
    Recovery,
    format_since,
    parse_since,
)
from trio_wsroutes._messages import encode_message

ROOMS = {"room:*": History(size=5)}


@message("said")
@attrs.frozen
class Said:
    n: int
    text: str = ""


def said(n: int, text: str = "") -> Frame:
    return encode_message(Said(n, text))


class Recorder:
    """A subscriber that keeps every frame it is given, decoded; ``capacity`` frames at
    most, after which it is gone (as a connection evicted with 1013 is)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.binary: list[bytes] = []
        self.texts: list[bytes] = []  # text frames that are not JSON
        self.order: list[int | bytes] = []  # offsets (0: none) and binary payloads, in order
        self.capacity = capacity
        self.topics: set[str] = set()

    def deliver(self, frame: Frame) -> bool:
        if self.capacity is not None and len(self.messages) >= self.capacity:
            return False
        if frame.binary:
            self.binary.append(frame.payload)
            self.order.append(frame.payload)
            return True
        try:
            decoded = orjson.loads(frame.payload)
        except orjson.JSONDecodeError:
            self.texts.append(frame.payload)
            self.order.append(0)
            return True
        self.messages.append(decoded)
        self.order.append(decoded.get("offset", 0))
        return True

    @property
    def offsets(self) -> list[int]:
        return [m["offset"] for m in self.messages]

    @property
    def numbers(self) -> list[int]:
        return [m["data"]["n"] for m in self.messages]

    def last(self) -> Position:
        return Position(self.messages[-1]["epoch"], self.messages[-1]["offset"])


# -- values ------------------------------------------------------------------------------------


def test_history_position_and_recovery_are_validated_frozen_values() -> None:
    assert History(100, 300.0) == History(size=100, ttl=300.0)
    assert History(1).ttl is None
    for size in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="size"):
            History(size)  # type: ignore[arg-type]
    for ttl in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="ttl"):
            History(10, ttl)  # type: ignore[arg-type]

    assert Position("abc_-9", 0).offset == 0
    for epoch in ("", "a b", "a:b", "a@b", "x" * 65, "é"):
        with pytest.raises(ValueError, match="epoch"):
            Position(epoch, 1)
    for offset in (-1, 2**53, 1.0, True):
        with pytest.raises(ValueError, match="offset"):
            Position("e", offset)  # type: ignore[arg-type]
    assert Recovery(recovered=False, missed=0) == NOT_RECOVERED
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Position("e", 1).offset = 2  # type: ignore[misc]


def test_policy_matches_fnmatch_patterns_first_match_wins() -> None:
    small, big = History(5), History(500, ttl=60.0)
    policy = HistoryPolicy({"room:vip:*": big, "room:*": small, "feed[0-9]": small})
    assert policy.match("room:vip:1") is big
    assert policy.match("room:a:b") is small  # "*" crosses ":"
    assert policy.match("feed7") is small
    assert policy.match("Room:a") is None  # case-sensitive on every platform
    assert policy.match("feedx") is None
    assert policy.match("lobby") is None
    assert HistoryPolicy([("room:*", small)]) == HistoryPolicy({"room:*": small})
    assert HistoryPolicy.coerce(None) is None
    assert HistoryPolicy.coerce({}) is None
    assert HistoryPolicy.coerce(policy) is policy
    coerced = HistoryPolicy.coerce({"a*": small})
    assert coerced is not None and coerced.match("ab") is small
    with pytest.raises(TypeError, match="History"):
        HistoryPolicy({"a": 5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="patterns"):
        HistoryPolicy({"": small})
    with pytest.raises(TypeError, match="map topic patterns"):
        HistoryPolicy.coerce([("a", small)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_topics"):
        HistoryPolicy({"a": small}, max_topics=0)


def test_parse_since_reads_topic_epoch_offset_from_the_right() -> None:
    assert parse_since([]) == {}
    assert parse_since(["room:a@Ep0ch_-x:7", "user@host:inbox@e:0"]) == {
        "room:a": Position("Ep0ch_-x", 7),
        "user@host:inbox": Position("e", 0),  # "@" and ":" in the topic
    }
    assert parse_since(["t@e:9007199254740991"]) == {"t": Position("e", 2**53 - 1)}


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (["room"], "not TOPIC@EPOCH:OFFSET"),
        (["room:5"], "not TOPIC@EPOCH:OFFSET"),
        (["@e:5"], "not TOPIC@EPOCH:OFFSET"),
        (["room@e"], "not TOPIC@EPOCH:OFFSET"),
        (["room@:5"], "epoch"),
        (["room@e e:5"], "epoch"),
        (["room@e:"], "offset"),
        (["room@e:-1"], "offset"),
        (["room@e:+1"], "offset"),
        (["room@e:1.0"], "offset"),
        (["room@e:١"], "offset"),  # noqa: RUF001 - an Arabic-Indic digit: not ASCII
        (["room@e:9007199254740992"], "at most"),
        (["room@e:" + "9" * 40], "offset"),
        (["t@e:1", "t@f:2"], "already given"),
        (["t" * 600 + "@e:1"], "longer than"),
        ([f"t{i}@e:1" for i in range(101)], "at most 100"),
    ],
)
def test_parse_since_rejects_bad_values_with_a_message_for_a_400(
    values: list[str], error: str
) -> None:
    with pytest.raises(ValueError, match=error) as caught:
        parse_since(values)
    assert "9" * 40 not in str(caught.value)  # the value is not echoed
    assert "t" * 600 not in str(caught.value)


@given(
    topic=st.text(min_size=1, max_size=100).filter(lambda t: "\x00" not in t),
    epoch=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    offset=st.integers(0, 2**53 - 1),
)
def test_format_since_round_trips_through_parse_since(topic: str, epoch: str, offset: int) -> None:
    position = Position(epoch, offset)
    assert parse_since([format_since(topic, position)]) == {topic: position}


# -- publishing with positions -------------------------------------------------------------


async def test_publications_on_history_topics_carry_topic_offset_and_epoch() -> None:
    broker = MemoryBroker(history=ROOMS)
    room, lobby = Recorder(), Recorder()
    await broker.subscribe("room:a", room)
    await broker.subscribe("lobby", lobby)
    for n in range(1, 4):
        assert await broker.publish("room:a", said(n)) == 1
        await broker.publish("lobby", said(n))
    await broker.publish("room:a", Frame(b"\x00\x01", binary=True))
    await broker.publish("room:a", Frame(b"not json"))
    await broker.publish("room:a", said(4))

    assert room.offsets == [1, 2, 3, 4]  # binary and non-object frames are not numbered
    assert room.numbers == [1, 2, 3, 4]
    assert {m["topic"] for m in room.messages} == {"room:a"}
    epochs = {m["epoch"] for m in room.messages}
    assert len(epochs) == 1
    assert room.binary == [b"\x00\x01"]  # delivered live all the same
    assert room.texts == [b"not json"]
    # A topic without history: the envelope as it was.
    assert lobby.messages == [{"type": "said", "data": {"n": n, "text": ""}} for n in (1, 2, 3)]
    with pytest.raises(ValueError, match="JSON"):
        await broker.publish("room:\ud800", said(1))  # not valid Unicode
    # Another topic with history: its own offsets and its own epoch.
    other = Recorder()
    await broker.subscribe("room:b", other)
    await broker.publish("room:b", said(1))
    assert other.offsets == [1]
    assert other.messages[0]["epoch"] not in epochs


async def test_no_history_without_a_policy_and_the_policy_is_set_once() -> None:
    broker = MemoryBroker()
    recorder = Recorder()
    await broker.subscribe("room:a", recorder)
    await broker.publish("room:a", said(1))
    assert "offset" not in recorder.messages[0]
    assert await broker.subscribe("room:a", Recorder(), since=Position("e", 0)) == NOT_RECOVERED
    with pytest.raises(ValueError, match="no history"):
        await broker.history("room:a")

    policy = HistoryPolicy(ROOMS)
    broker.configure_history(policy)
    broker.configure_history(HistoryPolicy(ROOMS))  # an equal one: nothing to do
    assert broker.history_policy == policy
    with pytest.raises(RuntimeError, match="already configured"):
        broker.configure_history(HistoryPolicy({"*": History(1)}))
    await broker.publish("room:a", said(2))
    assert recorder.messages[1]["offset"] == 1


# -- recovery ------------------------------------------------------------------------------


async def test_subscribe_since_delivers_exactly_the_missed_then_the_live_ones() -> None:
    broker = MemoryBroker(history=ROOMS)
    first = Recorder()
    first.topics.add("room:a")  # as a connection lists it
    await broker.subscribe("room:a", first)
    for n in range(1, 4):
        await broker.publish("room:a", said(n))
    seen = first.last()  # the client's last position: offset 3
    await broker.unsubscribe_all(first)  # it disconnects...
    for n in range(4, 7):
        await broker.publish("room:a", said(n))  # ...and misses 4, 5, 6

    again = Recorder()
    assert await broker.subscribe("room:a", again, since=seen) == Recovery(True, 3)
    assert again.offsets == [4, 5, 6]
    assert again.numbers == [4, 5, 6]
    await broker.publish("room:a", said(7))
    assert again.offsets == [4, 5, 6, 7]
    assert first.offsets == [1, 2, 3]  # gone since unsubscribe_all

    # Up to date: recovered, nothing missed.
    current = Recorder()
    assert await broker.subscribe("room:a", current, since=again.last()) == Recovery(True, 0)
    assert current.messages == []
    # Offset 0 of the epoch: everything, when the history still holds offset 1.
    fresh = MemoryBroker(history=ROOMS)
    await fresh.publish("room:z", said(1))
    page = await fresh.history("room:z")
    everything = Recorder()
    since = Position(page.position.epoch, 0)
    assert await fresh.subscribe("room:z", everything, since=since) == Recovery(True, 1)
    assert everything.offsets == [1]


async def test_wrong_epoch_or_too_old_offset_gives_recovered_false_and_nothing_old() -> None:
    broker = MemoryBroker(history=ROOMS)  # size 5
    witness = Recorder()
    await broker.subscribe("room:a", witness)
    for n in range(1, 9):
        await broker.publish("room:a", said(n))  # keeps 4..8
    epoch = witness.messages[0]["epoch"]
    for since in (
        Position("another", 8),  # another epoch (a restarted process)
        Position(epoch, 2),  # 3 is gone: the history does not reach back
        Position(epoch, 1000),  # beyond the last offset
    ):
        late = Recorder()
        assert await broker.subscribe("room:a", late, since=since) == NOT_RECOVERED
        assert late.messages == []
        await broker.publish("room:a", said(100))  # but it is subscribed, live
        assert late.numbers == [100]
    # The oldest kept one is still reachable.
    edge = Recorder()
    assert await broker.subscribe("room:a", edge, since=Position(epoch, 6)) == Recovery(True, 5)
    assert edge.offsets == [7, 8, 9, 10, 11]
    # A topic that has no history (yet) in this process.
    unknown = Recorder()
    assert await broker.subscribe("room:new", unknown, since=Position(epoch, 1)) == NOT_RECOVERED


async def test_already_subscribed_gets_nothing_twice() -> None:
    broker = MemoryBroker(history=ROOMS)
    recorder = Recorder()
    await broker.subscribe("room:a", recorder)
    await broker.publish("room:a", said(1))
    await broker.publish("room:a", said(2))
    since = Position(recorder.messages[0]["epoch"], 0)
    assert await broker.subscribe("room:a", recorder, since=since) == NOT_RECOVERED
    assert recorder.offsets == [1, 2]
    assert broker.subscriber_count("room:a") == 1


async def test_a_publisher_hammering_during_recovery_gives_a_contiguous_sequence() -> None:
    policy = HistoryPolicy({"room:*": History(size=100_000)}, max_recovery=100_000)
    broker = MemoryBroker(history=policy)
    witness = Recorder()
    await broker.subscribe("room:a", witness)
    total = 3000
    since_holder: list[Position] = []
    recovering = Recorder()
    results: list[Recovery] = []

    async def publisher() -> None:
        for n in range(1, total + 1):
            await broker.publish("room:a", said(n))
            if n == 500:
                since_holder.append(witness.last())

    async def subscriber() -> None:
        while not since_holder:  # the publisher sets it
            await trio.lowlevel.checkpoint()
        for _ in range(30):
            await trio.lowlevel.checkpoint()  # publishes go on meanwhile (16 a yield)
        results.append(await broker.subscribe("room:a", recovering, since=since_holder[0]))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            nursery.start_soon(subscriber)
    assert results[0].recovered
    assert 0 < results[0].missed < total - 500  # live publications followed the recovery
    assert recovering.offsets == list(range(501, total + 1))  # no gap, no duplicate
    assert recovering.numbers == list(range(501, total + 1))


async def test_an_evicted_subscriber_reconnects_and_recovers_what_it_lost() -> None:
    broker = MemoryBroker(history=ROOMS)
    slow = Recorder(capacity=2)  # "evicted with 1013" after two frames
    await broker.subscribe("room:a", slow)
    for n in range(1, 5):
        await broker.publish("room:a", said(n))
    assert slow.offsets == [1, 2]
    assert broker.subscriber_count("room:a") == 0  # the broker dropped it
    # The client reconnects with its last position and gets 3 and 4.
    back = Recorder()
    assert await broker.subscribe("room:a", back, since=slow.last()) == Recovery(True, 2)
    assert back.numbers == [3, 4]

    # Gone in the middle of its own recovery: not subscribed, nothing more.
    gone = Recorder(capacity=1)
    since = Position(slow.last().epoch, 0)
    assert await broker.subscribe("room:a", gone, since=since) == NOT_RECOVERED
    assert gone.offsets == [1]
    assert broker.subscriber_count("room:a") == 1  # only ``back``


async def test_ttl_drops_old_publications(autojump_clock: trio.testing.MockClock) -> None:
    broker = MemoryBroker(history={"room:*": History(size=10, ttl=60.0)})
    witness = Recorder()
    await broker.subscribe("room:a", witness)
    await broker.publish("room:a", said(1))
    await broker.publish("room:a", said(2))
    await trio.sleep(61)
    await broker.publish("room:a", said(3))
    page = await broker.history("room:a")
    assert [p.position.offset for p in page.publications] == [3]
    epoch = witness.messages[0]["epoch"]
    assert await broker.subscribe("room:a", Recorder(), since=Position(epoch, 0)) == NOT_RECOVERED
    late = Recorder()
    assert await broker.subscribe("room:a", late, since=Position(epoch, 2)) == Recovery(True, 1)
    await trio.sleep(61)
    # Nothing kept, but a client that saw the last one is up to date.
    assert (await broker.history("room:a")).publications == ()
    assert await broker.subscribe("room:a", Recorder(), since=Position(epoch, 3)) == Recovery(
        True, 0
    )


# -- reading the history ---------------------------------------------------------------------


async def test_history_returns_publications_and_the_current_position() -> None:
    broker = MemoryBroker(history=ROOMS)
    empty = await broker.history("room:a")
    assert empty.publications == ()
    assert empty.position.offset == 0
    assert not empty.recovered  # no history yet: reading it created none
    assert broker.history_topics() == 0
    witness = Recorder()
    await broker.subscribe("room:a", witness)
    await broker.publish("room:a", said(1))
    epoch = witness.messages[0]["epoch"]
    assert (await broker.history("room:a")).recovered
    for n in range(2, 8):
        await broker.publish("room:a", said(n))

    page = await broker.history("room:a")
    assert page.position == Position(epoch, 7)
    assert [p.position.offset for p in page.publications] == [3, 4, 5, 6, 7]
    assert [orjson.loads(p.payload) for p in page.publications] == witness.messages[2:]
    assert page.publications[0].frame().payload == page.publications[0].payload
    assert orjson.loads(page.publications[0].text)["offset"] == 3

    latest = await broker.history("room:a", limit=2)
    assert [p.position.offset for p in latest.publications] == [6, 7]
    assert (await broker.history("room:a", limit=0)).publications == ()
    assert len((await broker.history("room:a", limit=50)).publications) == 5

    after = await broker.history("room:a", since=Position(epoch, 3), limit=2)
    assert [p.position.offset for p in after.publications] == [4, 5]  # page forward
    assert after.recovered
    following = await broker.history("room:a", since=after.publications[-1].position)
    assert [p.position.offset for p in following.publications] == [6, 7]

    for since in (Position(epoch, 1), Position("other", 5)):
        lost = await broker.history("room:a", since=since)
        assert lost == HistoryPage("room:a", Position(epoch, 7), (), recovered=False)
    with pytest.raises(ValueError, match="limit"):
        await broker.history("room:a", limit=-1)
    with pytest.raises(ValueError, match="no history"):
        await broker.history("lobby")
    assert isinstance(page.publications[0], Publication)


# -- bounded memory --------------------------------------------------------------------------


async def test_history_is_bounded_by_size_and_by_max_topics() -> None:
    policy = HistoryPolicy({"room:*": History(size=3)}, max_topics=4)
    broker = MemoryBroker(history=policy)
    first = Recorder()
    await broker.subscribe("room:0", first)
    for n in range(100):
        await broker.publish("room:0", said(n, "x" * 100))
    assert len((await broker.history("room:0")).publications) == 3

    for index in range(1, 10):
        await broker.publish(f"room:{index}", said(index))
        assert broker.history_topics() <= 4
    assert broker.history_topics() == 4
    # room:0, published to least recently, was evicted: its history starts a new epoch.
    await broker.publish("room:0", said(100))
    assert first.offsets[-1] == 1
    assert first.messages[-1]["epoch"] != first.messages[0]["epoch"]
    old = Position(first.messages[0]["epoch"], 100)
    assert await broker.subscribe("room:0", Recorder(), since=old) == NOT_RECOVERED
    # Recently published topics are kept.
    assert (await broker.history("room:9")).position.offset == 1
