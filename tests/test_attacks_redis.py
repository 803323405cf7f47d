"""Attacks on the history a ``RedisBroker`` keeps in Redis, and what stops them.

Someone who can talk to the Redis that the workers share (but who does not hold the
broker's ``secret``) deletes, copies, enlarges or replays history entries and messages;
a client connecting to random room names reads history that does not exist; a client far
behind asks for a huge recovery. What users rely on:

* reading history creates nothing in Redis; only publishing does;
* each topic's history is bounded in bytes (``History.max_bytes``), not only in count;
* a recovery that would send more than ``max_recovery`` publications sends nothing;
* a recovery sends every publication after the position or nothing: an entry deleted,
  duplicated or copied to another offset is never a silent gap or a repeat;
* with a ``secret``, a copied or replayed publication is not delivered again, even after
  the topic's last local subscriber left;
* an oversized entry is refused inside Redis: the server never reads it, and every read
  returns a bounded number of bytes;
* two processes signing their publications on one topic give every subscriber one
  contiguous order, each publisher's publications in its order.

Each test runs its own ``redis-server`` (tests/_redis.py) on 127.0.0.1, with small sizes.
"""

from __future__ import annotations

import secrets
import socket
import time
import tracemalloc
from typing import Any

import attrs
import pytest
import trio

import trio_wsroutes._broker.redis._recovery as recovery_module
from tests._redis import RedisServer
from tests.conftest import wait_until
from tests.test_history import Recorder
from trio_wsroutes import RedisBroker, message
from trio_wsroutes._broker.redis._scripts import READ_BUDGET
from trio_wsroutes._history import NOT_RECOVERED, History, HistoryPolicy, Position, Recovery

TIMEOUT = 30
SECRET = b"a shared secret, 32 bytes long!!"
KiB = 1024
MiB = 1024 * 1024


@message("said")
@attrs.frozen
class Said:
    text: str
    n: int


def broker(redis: RedisServer, history: Any, **options: Any) -> RedisBroker:
    return RedisBroker(redis.url, history=history, reconnect_delay=0.05, **options)


# -- plain RESP, for what an attacker does in Redis ------------------------------------------


def resp(redis: RedisServer, *args: bytes | str | int) -> Any:
    """One command on a fresh connection; the decoded reply (bytes, int, list, None)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as sock:
        sock.sendall(b"".join(parts))
        reader = sock.makefile("rb")
        return _read_reply(reader)


def _read_reply(reader: Any) -> Any:
    line = reader.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise AssertionError(f"Redis error: {rest!r}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    raise AssertionError(f"unexpected reply {line!r}")


def keys_of(topic: str) -> tuple[str, str]:
    return f"wsroutes:h:{{{topic}}}:m", f"wsroutes:h:{{{topic}}}:l"


def entries(redis: RedisServer, topic: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The stream entries of ``topic``: (id, fields)."""
    reply = resp(redis, "XRANGE", keys_of(topic)[1], "-", "+")
    return [(entry_id, dict(zip(f[::2], f[1::2], strict=True))) for entry_id, f in reply]


def now_ms() -> str:
    return str(int(time.time() * 1000))


ROOMS = HistoryPolicy({"room:*": History(size=1000)})


# -- 1. reading history creates nothing ------------------------------------------------------


async def test_reading_the_history_of_unknown_topics_creates_nothing_in_redis(
    redis: RedisServer,
) -> None:
    # Before, every read (server.history, subscribe with since) created the topic's epoch
    # in Redis with a 30-day expiry: a client connecting to random room names filled
    # Redis with keys. Now only a publication creates them.
    reader = broker(redis, ROOMS)
    with trio.fail_after(TIMEOUT):
        async with reader:
            epochs = set()
            for _ in range(200):
                page = await reader.history(f"room:{secrets.token_hex(8)}")
                assert (page.position.offset, page.publications, page.recovered) == (0, (), False)
                epochs.add(page.position.epoch)
                since = Position("abc", 5)
                page = await reader.history(f"room:{secrets.token_hex(8)}", since=since)
                assert (page.publications, page.recovered) == ((), False)
                recorder = Recorder()
                topic = f"room:{secrets.token_hex(8)}"
                assert await reader.subscribe(topic, recorder, since=since) == NOT_RECOVERED
                await reader.unsubscribe(topic, recorder)
            assert len(epochs) == 200  # a fresh epoch each time: no position to resume
            assert resp(redis, "DBSIZE") == 0
            # A handle that is not running reads the same way.
            handle = RedisBroker(redis.url, history=ROOMS)
            assert not (await handle.history("room:cron", since=Position("abc", 1))).recovered
            assert resp(redis, "DBSIZE") == 0
            # Publishing creates the topic's two keys.
            await reader.publish("room:a", Said("x", 1))
            await reader.flush()
            assert resp(redis, "DBSIZE") == 2
            page = await reader.history("room:a")
            assert (page.position.offset, len(page.publications), page.recovered) == (1, 1, True)


# -- 2. history bounded in bytes -------------------------------------------------------------


async def test_history_in_redis_is_bounded_in_bytes(redis: RedisServer) -> None:
    # Before, a topic kept its last `size` publications whatever their size: 1000 large
    # publications were all kept. Now it keeps at most max_bytes of them, the oldest
    # going first, and one larger than max_bytes is delivered but not kept.
    policy = HistoryPolicy({"room:*": History(size=1000, max_bytes=8 * KiB)})
    witness = Recorder()
    with trio.fail_after(TIMEOUT):
        async with broker(redis, policy) as publisher:
            await publisher.subscribe("room:b", witness)
            for n in range(1, 51):
                await publisher.publish("room:b", Said("x" * 1000, n))
            await publisher.flush()
            await wait_until(lambda: len(witness.messages) == 50)
            kept = entries(redis, "room:b")
            assert sum(len(fields[b"p"]) for _, fields in kept) <= 8 * KiB
            assert 5 <= len(kept) < 10
            assert [e[0] for e in kept] == [b"%d-0" % n for n in range(51 - len(kept), 51)]
            page = await publisher.history("room:b")
            assert [p.position.offset for p in page.publications] == list(
                range(51 - len(kept), 51)
            )
            epoch = page.position.epoch

            # Larger than max_bytes: delivered with its position, not kept, and the ones
            # before it cannot be recovered past it.
            await publisher.publish("room:b", Said("y" * 10_000, 51))
            await wait_until(lambda: len(witness.messages) == 51)
            assert witness.offsets[-1] == 51
            assert resp(redis, "XLEN", keys_of("room:b")[1]) == 0
            lost = await publisher.history("room:b", since=Position(epoch, 49))
            assert (lost.recovered, lost.publications) == (False, ())
            assert (await publisher.history("room:b", since=Position(epoch, 51))).recovered
            await publisher.publish("room:b", Said("z", 52))
            await wait_until(lambda: len(witness.messages) == 52)
            late = Recorder()
            assert await publisher.subscribe("room:b", late, since=Position(epoch, 51)) == (
                Recovery(True, 1)
            )
            assert late.offsets == [52]


# -- 3. max_recovery -------------------------------------------------------------------------


async def test_a_recovery_over_max_recovery_sends_nothing_old(redis: RedisServer) -> None:
    # Before, a subscribe with an old position sent every kept publication after it (up
    # to `size`, 1000 here): one client could make a worker send megabytes at once. Now
    # more than the policy's max_recovery (the server's max_recovery option) sends
    # nothing old, without reading the history.
    policy = HistoryPolicy({"room:*": History(size=1000)}, max_recovery=5)
    with trio.fail_after(TIMEOUT):
        async with broker(redis, policy) as worker:
            witness = Recorder()
            await worker.subscribe("room:c", witness)
            for n in range(1, 11):
                await worker.publish("room:c", Said("x", n))
            await wait_until(lambda: len(witness.messages) == 10)
            epoch = witness.last().epoch
            far = Recorder()
            assert await worker.subscribe("room:c", far, since=Position(epoch, 2)) == (
                NOT_RECOVERED
            )
            assert far.messages == []
            assert worker.stats.recoveries_capped == 1
            near = Recorder()
            assert await worker.subscribe("room:c", near, since=Position(epoch, 5)) == (
                Recovery(True, 5)
            )
            assert near.offsets == [6, 7, 8, 9, 10]
            await worker.publish("room:c", Said("x", 11))
            await wait_until(lambda: len(far.messages) == 1)  # live from then on
            assert far.offsets == [11]
            assert worker.stats.recoveries_failed == 1


# -- 4a. deleted and duplicated entries ------------------------------------------------------


@pytest.mark.parametrize("secret", [None, SECRET])
async def test_a_deleted_or_duplicated_entry_is_never_a_silent_gap(
    redis: RedisServer, secret: bytes | None
) -> None:
    # Before, after XDEL of entry 5, a recovery from 2 sent 3, 4, 6, 7, 8 and said
    # recovered=True: one publication lost without a word; an entry added again under
    # another id was sent twice. Now the offsets must be contiguous up to the last one.
    with trio.fail_after(TIMEOUT):
        async with broker(redis, ROOMS, secret=secret) as worker:
            for n in range(1, 9):
                await worker.publish("room:d", Said("x", n))
                await worker.publish("room:e", Said("x", n))
            await worker.flush()
            epoch = (await worker.history("room:d")).position.epoch
            assert resp(redis, "XDEL", keys_of("room:d")[1], "5-0") == 1
            for since in (2, 4):
                late = Recorder()
                recovery = await worker.subscribe("room:d", late, since=Position(epoch, since))
                assert recovery == NOT_RECOVERED
                assert late.messages == []
                page = await worker.history("room:d", since=Position(epoch, since))
                assert (page.recovered, page.publications) == (False, ())
            newest = await worker.history("room:d")
            assert (newest.recovered, newest.publications) == (False, ())
            # The last entry deleted: nothing newer is there to show it.
            resp(redis, "XDEL", keys_of("room:d")[1], "8-0")
            page = await worker.history("room:d", since=Position(epoch, 6))
            assert (page.recovered, page.publications) == (False, ())

            epoch_e = (await worker.history("room:e")).position.epoch
            # The stream written again with entry 3 twice (XADD only appends).
            log = keys_of("room:e")[1]
            kept = entries(redis, "room:e")
            resp(redis, "DEL", log)
            for entry_id, fields in kept:
                flat = [item for pair in fields.items() for item in pair]
                resp(redis, "XADD", log, entry_id, *flat)
                if entry_id == b"3-0":
                    resp(redis, "XADD", log, "3-1", *flat)
            twice = Recorder()
            assert await worker.subscribe("room:e", twice, since=Position(epoch_e, 1)) == (
                NOT_RECOVERED
            )
            assert twice.messages == []
            assert worker.stats.history_gaps >= 4


# -- 4b. an entry copied to another offset ---------------------------------------------------


async def test_an_entry_copied_to_another_offset_is_not_delivered_again(
    redis: RedisServer,
) -> None:
    # Before, the signature did not cover the position (Redis assigned it): entry 2
    # copied to offset 4, with the offset in its payload rewritten, was recovered as a
    # new publication, and so was the same message published live. Now the signature
    # covers topic, epoch, offset and payload.
    with trio.fail_after(TIMEOUT):
        async with broker(redis, ROOMS, secret=SECRET) as worker:
            witness = Recorder()
            await worker.subscribe("room:f", witness)
            for n in range(1, 4):
                await worker.publish("room:f", Said("x", n))
            await wait_until(lambda: len(witness.messages) == 3)
            epoch = witness.last().epoch
            (_, fields), *_ = [e for e in entries(redis, "room:f") if e[0] == b"2-0"]
            moved = fields[b"p"].replace(b'"offset":2,', b'"offset":4,')
            assert moved != fields[b"p"]
            meta, log = keys_of("room:f")
            resp(redis, "XADD", log, "4-0", "t", now_ms(), "p", moved, "s", fields[b"s"])
            resp(redis, "HSET", meta, "o", "4")
            late = Recorder()
            assert await worker.subscribe("room:f", late, since=Position(epoch, 3)) == (
                NOT_RECOVERED
            )
            assert late.messages == []
            assert worker.stats.unauthenticated == 1
            page = await worker.history("room:f", since=Position(epoch, 3))
            assert (page.recovered, page.publications) == (False, ())

            origin, seq, signature = fields[b"s"].split(b" ")
            header = b"wsr1 h %s %s %s 4 %s\n" % (origin, seq, signature, epoch.encode())
            resp(redis, "PUBLISH", "wsroutes:room:f", header + moved)
            await wait_until(lambda: worker.stats.unauthenticated == 3)
            assert len(witness.messages) == 3


# -- 4c. a live publication replayed ---------------------------------------------------------


async def test_a_replayed_publication_is_dropped_after_the_last_subscriber_left(
    redis: RedisServer,
) -> None:
    # Before, a captured signed publication published again on the channel was dropped
    # only while its origin was tracked: once the topic's last local subscriber had
    # left, the next subscriber got it again. Now the last delivered position per topic
    # outlives its subscribers, and a publication at or before it is a replay.
    with trio.fail_after(TIMEOUT):
        async with broker(redis, ROOMS, secret=SECRET) as publisher:
            async with broker(redis, ROOMS, secret=SECRET) as worker:
                first = Recorder()
                await worker.subscribe("room:g", first)
                for n in range(1, 4):
                    await publisher.publish("room:g", Said("x", n))
                await wait_until(lambda: len(first.messages) == 3)
                epoch = first.last().epoch
                (_, fields), *_ = [e for e in entries(redis, "room:g") if e[0] == b"2-0"]
                origin, seq, signature = fields[b"s"].split(b" ")
                captured = b"wsr1 h %s %s %s 2 %s\n%s" % (
                    origin,
                    seq,
                    signature,
                    epoch.encode(),
                    fields[b"p"],
                )
                await worker.unsubscribe("room:g", first)  # the topic's last subscriber
                second = Recorder()
                await worker.subscribe("room:g", second)
                resp(redis, "PUBLISH", "wsroutes:room:g", captured)
                await publisher.publish("room:g", Said("x", 4))
                await wait_until(lambda: len(second.messages) >= 1)
                await trio.sleep(0.1)  # anything else on its way
                assert second.offsets == [4]
                assert worker.stats.duplicates == 1
                assert worker.stats.unauthenticated == 0


# -- 4d. oversized entries, bounded replies --------------------------------------------------


async def test_oversized_entries_are_refused_inside_redis_never_read(
    redis: RedisServer,
) -> None:
    # Before, history entries were read whole into the server and only then found to be
    # over max_message_size: three 1 MiB entries cost 3 MiB (and more) per recovery,
    # whatever the limit. Now Redis refuses them before sending anything.
    policy = HistoryPolicy({"room:*": History(size=100, max_bytes=None)})
    with trio.fail_after(TIMEOUT):
        async with broker(redis, policy, max_message_size=64 * KiB) as worker:
            for n in range(1, 4):
                await worker.publish("room:h", Said("x", n))
            await worker.flush()
            epoch = (await worker.history("room:h")).position.epoch
            meta, log = keys_of("room:h")
            big = b'{"type":"said","data":{"text":"%s"}}' % (b"z" * MiB)
            for offset in (4, 5, 6):
                resp(redis, "XADD", log, f"{offset}-0", "t", now_ms(), "p", big, "s", "")
            resp(redis, "HSET", meta, "o", "6")
            late = Recorder()
            tracemalloc.start()
            try:
                recovery = await worker.subscribe("room:h", late, since=Position(epoch, 3))
                page = await worker.history("room:h", since=Position(epoch, 3))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert recovery == NOT_RECOVERED
            assert (page.recovered, page.publications) == (False, ())
            assert late.messages == []
            assert worker.stats.oversized == 2
            assert peak < 256 * KiB, peak


async def test_a_large_recovery_is_read_in_bounded_replies(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, a recovery read everything after its position in one reply, however large.
    # Now each reply carries at most READ_BUDGET bytes of payloads, and the recovery
    # reads on until it has everything, still with no gap and no duplicate.
    policy = HistoryPolicy({"room:*": History(size=100, max_bytes=None)})
    size = 600 * KiB
    replies: list[int] = []
    async with broker(redis, policy, max_message_size=MiB) as worker:
        real = recovery_module.evalsha

        async def counted(*args: Any) -> Any:
            reply = await real(*args)
            replies.append(sum(len(item) for item in reply[4::3]))
            return reply

        monkeypatch.setattr(recovery_module, "evalsha", counted)  # history reads
        with trio.fail_after(TIMEOUT):
            for n in range(1, 11):
                await worker.publish("room:i", Said("x" * size, n))
            await worker.flush()
            late = Recorder()
            epoch = (await worker.history("room:i", limit=0)).position.epoch
            replies.clear()
            assert await worker.subscribe("room:i", late, since=Position(epoch, 0)) == (
                Recovery(True, 10)
            )
            assert late.offsets == list(range(1, 11))
            assert late.numbers == list(range(1, 11))
            assert len(replies) >= 2
            assert max(replies) <= READ_BUDGET
            replies.clear()
            page = await worker.history("room:i")
            assert [p.position.offset for p in page.publications] == list(range(1, 11))
            assert len(replies) >= 2
            assert max(replies) <= READ_BUDGET


# -- publishers proposing signed positions ---------------------------------------------------


async def received(recorders: list[Recorder], count: int) -> None:
    await wait_until(lambda: all(len(r.messages) >= count for r in recorders))


async def test_two_signing_publishers_on_one_topic_give_one_contiguous_order(
    redis: RedisServer,
) -> None:
    # With a secret each publisher proposes the position it signs; Redis commits it only
    # if it is the next one, else the publisher proposes again. Two publishers at once
    # on one topic (pipelining, so refusals happen mid-batch): every subscriber gets the
    # same contiguous offsets, each publisher's publications in its order, none lost.
    count = 150
    one, two = broker(redis, ROOMS, secret=SECRET), broker(redis, ROOMS, secret=SECRET)
    watcher = broker(redis, ROOMS, secret=SECRET)
    recorders = [Recorder(), Recorder(), Recorder()]

    async def hammer(publisher: RedisBroker, name: str) -> None:
        for n in range(1, count + 1):
            await publisher.publish("room:j", Said(name, n))  # a checkpoint each

    with trio.fail_after(TIMEOUT):
        async with one, two, watcher:
            for recorder, where in zip(recorders, (one, two, watcher), strict=True):
                await where.subscribe("room:j", recorder)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hammer, one, "one")
                nursery.start_soon(hammer, two, "two")
            await one.flush()
            await two.flush()
            await received(recorders, 2 * count)
            # A handle that is not running proposes too, from nothing known.
            handle = RedisBroker(redis.url, history=ROOMS, secret=SECRET)
            assert await handle.publish("room:j", Said("handle", 1)) == 3
            await received(recorders, 2 * count + 1)
            page = await watcher.history("room:j")

    expected = list(range(1, 2 * count + 2))
    for recorder in recorders:
        assert recorder.offsets == expected
        assert [m["data"] for m in recorder.messages] == [m["data"] for m in recorders[0].messages]
        for name in ("one", "two"):
            numbers = [m["data"]["n"] for m in recorder.messages if m["data"]["text"] == name]
            assert numbers == list(range(1, count + 1))
    assert [p.position.offset for p in page.publications] == expected
    assert one.stats.publish_lost == two.stats.publish_lost == 0
    assert watcher.stats.unauthenticated == watcher.stats.duplicates == 0
    print(f"\nconflicts: {one.stats.publish_conflicts} + {two.stats.publish_conflicts}")


async def test_a_binary_frame_keeps_its_place_behind_refused_proposals(
    redis: RedisServer,
) -> None:
    # A frame without a position on a topic with history waits behind the topic's
    # proposals in flight: when they are refused and proposed again, it does not
    # overtake them.
    with trio.fail_after(TIMEOUT):
        async with broker(redis, ROOMS, secret=SECRET) as other:
            await other.publish("room:k", Said("other", 0))  # the topic exists
            await other.flush()
            async with broker(redis, ROOMS, secret=SECRET) as publisher:
                recorder = Recorder()
                await publisher.subscribe("room:k", recorder)
                # Its first proposal (a fresh epoch at offset 1) is refused.
                await publisher.publish("room:k", Said("x", 1))
                await publisher.publish_binary("room:k", b"\x00between")
                await publisher.publish("room:k", Said("x", 2))
                await publisher.flush()
                await wait_until(lambda: len(recorder.order) == 3)
                assert recorder.order == [2, b"\x00between", 3]
                assert publisher.stats.publish_conflicts >= 1


def test_a_publisher_refused_for_its_position_gets_the_next_turn(redis: RedisServer) -> None:
    # One publisher keeping its pipeline full must not starve another whose proposals
    # arrive a round trip late: the one refused for its position has the topic to itself
    # for a while (a run of publications), the other's proposals are refused meanwhile
    # and told how long to wait, and after it the next refused publisher has its turn.
    from trio_wsroutes._broker.redis._positions import Pending, Proposals
    from trio_wsroutes._broker.redis._scripts import PUBLISH_SCRIPT
    from trio_wsroutes._envelope import envelope_head, topic_json

    meta, log = keys_of("room:t")
    keys = (meta.encode(), log.encode())
    head = envelope_head(b'{"type":"said","data":{}}', topic_json("room:t"))
    one, two = Proposals(SECRET, turn_ms=300), Proposals(SECRET, turn_ms=300)

    def propose(proposals: Proposals, origin: bytes, seq: int) -> list[Any]:
        assert head is not None
        pending = Pending("room:t", b"wsroutes:room:t", keys, History(100), origin, seq, head)
        command = proposals.command(pending, 60_000, 60_000)
        reply: list[Any] = resp(redis, "EVAL", PUBLISH_SCRIPT, *command[2:])
        proposals.busy.clear()
        if reply[0] == 0:
            proposals.refused("room:t", reply[1].decode(), reply[2])
        return reply

    assert propose(one, b"1-a", 1)[0] == 1  # a fresh epoch at offset 1
    epoch = resp(redis, "HGET", meta, "e")
    assert propose(two, b"2-b", 1) == [0, epoch, 1, 0]  # late: refused, its turn next
    refused = propose(one, b"1-a", 2)  # the right position, but not its turn
    assert refused[:3] == [0, epoch, 1]
    assert 0 < refused[3] <= 300  # ms to wait
    assert propose(two, b"2-b", 1)[0] == 1  # its turn: committed at offset 2...
    assert propose(two, b"2-b", 2)[0] == 1  # ...and the next one at 3
    assert propose(one, b"1-a", 2)[:3] == [0, epoch, 3]  # still its turn
    time.sleep(0.35)  # the turn is over
    assert propose(one, b"1-a", 2)[0] == 1  # at offset 4
    assert propose(two, b"2-b", 3) == [0, epoch, 4, 0]  # late now: its turn next
    assert propose(one, b"1-a", 3)[3] > 0
    committers = [fields[b"s"].split(b" ")[:2] for _, fields in entries(redis, "room:t")]
    assert committers == [[b"1-a", b"1"], [b"2-b", b"1"], [b"2-b", b"2"], [b"1-a", b"2"]]
