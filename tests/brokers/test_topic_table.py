"""``TopicTable`` alone: membership, fan-out, dropping a subscriber that is gone, and when
publications yield to the scheduler (both brokers fan out through it)."""

from __future__ import annotations

import trio

from trio_wsroutes import Frame
from trio_wsroutes._broker._topics import YIELD_EVERY, YIELD_EVERY_DELIVERIES, TopicTable

FRAME = Frame(b'{"type":"tick"}')


class Member:
    """Lists its topics itself; ``gone`` once it should take no more frames."""

    def __init__(self, *topics: str) -> None:
        self.topics: set[str] = set(topics)
        self.frames: list[Frame] = []
        self.gone = False

    def deliver(self, frame: Frame) -> bool:
        if self.gone:
            return False
        self.frames.append(frame)
        return True


def joined(table: TopicTable, *topics: str) -> Member:
    member = Member(*topics)
    for topic in topics:
        table.add(topic, member)
    return member


def test_membership_and_on_empty() -> None:
    emptied: list[str] = []
    table = TopicTable(emptied.append)
    first = joined(table, "a", "b")
    second = joined(table, "a")
    table.add("a", second)  # again: nothing changes
    assert (table.subscriber_count("a"), table.subscriber_count("b")) == (2, 1)
    assert table.is_subscribed("b", first) and not table.is_subscribed("b", second)
    assert sorted(table.active_topics()) == ["a", "b"]
    assert "a" in table and "nothing" not in table

    table.discard("a", second)
    table.discard("a", second)  # not subscribed: nothing happens
    table.discard("nothing", second)
    assert emptied == []
    table.discard("b", first)
    assert emptied == ["b"]  # its last subscriber left
    assert "b" not in table and table.subscriber_count("b") == 0


def test_discard_all_drops_the_topics_the_subscriber_lists() -> None:
    emptied: list[str] = []
    table = TopicTable(emptied.append)
    member = joined(table, "a", "b", "c")
    other = joined(table, "a")
    table.discard_all(member)
    assert sorted(emptied) == ["b", "c"]
    assert table.subscriber_count("a") == 1 and table.is_subscribed("a", other)
    # The subscriber is the one owner of its topics: one it does not list is not read.
    unlisted = Member()
    table.add("d", unlisted)
    table.discard_all(unlisted)
    assert table.subscriber_count("d") == 1


def test_fan_out_skips_exclude_and_skip_and_counts_deliveries() -> None:
    table = TopicTable()
    members = [joined(table, "t") for _ in range(5)]
    assert table.fan_out("t", FRAME) == 5
    assert table.fan_out("t", FRAME, members[0]) == 4
    assert table.fan_out("t", FRAME, members[0], {members[1], members[2]}) == 2
    assert table.fan_out("t", FRAME, Member()) == 5  # excluding a non-subscriber
    assert table.fan_out("nobody", FRAME) == 0
    assert [len(m.frames) for m in members] == [2, 3, 3, 4, 4]
    assert all(frame is FRAME for m in members for frame in m.frames)  # the same frame


def test_a_subscriber_gone_during_a_fan_out_leaves_every_topic_at_once() -> None:
    emptied: list[str] = []
    table = TopicTable(emptied.append)
    gone = joined(table, "a", "b", "c")
    stays = joined(table, "a", "b")
    gone.gone = True
    assert table.fan_out("a", FRAME) == 1
    assert [table.subscriber_count(t) for t in ("a", "b", "c")] == [1, 1, 0]
    assert emptied == ["c"]
    assert len(stays.frames) == 1
    # One gone while it is not listed on the topic fanned out still leaves that topic.
    stray = Member()
    table.add("a", stray)
    stray.gone = True
    for skip in (None, {stays}):
        table.add("a", stray)
        table.fan_out("a", FRAME, None, skip)
        assert not table.is_subscribed("a", stray)


class Steps(trio.abc.Instrument):
    """Counts the steps the current task takes: a step ends where the task yields to
    the scheduler, so the count tells a scheduling point from a bare cancellation
    point, whatever order Trio runs the other tasks in."""

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def test_back_to_back_publications_do_not_yield_and_a_loop_of_them_does() -> None:
    # Publications made together stay together (a connection holds what is published to
    # it until the publisher yields, and writes it in one go), yet a loop of them lets
    # other tasks run: a scheduling point every YIELD_EVERY publications.
    table = TopicTable()
    member = joined(table, "t")
    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        yields: list[int] = []
        for n in range(1, 4 * YIELD_EVERY + 1):
            before = steps.count
            await table.checkpoint()
            table.fan_out("t", FRAME)
            if steps.count != before:
                yields.append(n)
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert yields == [YIELD_EVERY, 2 * YIELD_EVERY, 3 * YIELD_EVERY, 4 * YIELD_EVERY]
    assert len(member.frames) == 4 * YIELD_EVERY


async def test_a_fan_out_to_many_lets_other_tasks_run_before_the_next() -> None:
    table = TopicTable()
    many = YIELD_EVERY_DELIVERIES + 1
    for _ in range(many):
        joined(table, "crowd")
    few = joined(table, "few")
    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        await table.checkpoint()
        assert table.fan_out("crowd", FRAME) == many
        before = steps.count
        await table.checkpoint()  # past the deliveries' bound: the others' turn now
        assert steps.count == before + 1
        table.fan_out("few", FRAME)
        await table.checkpoint()  # a small one: no turn
        assert steps.count == before + 1
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert len(few.frames) == 1


async def test_checkpoint_is_a_cancellation_point_every_time() -> None:
    table = TopicTable()
    for _ in range(3):
        with trio.CancelScope() as scope:
            scope.cancel()
            await table.checkpoint()
            raise AssertionError("not cancelled")  # pragma: no cover
        assert scope.cancelled_caught
