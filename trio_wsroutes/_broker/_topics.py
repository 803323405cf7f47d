"""``TopicTable``: who is subscribed to what in one process, and fan-out to them.

Both brokers keep their local subscribers here: :class:`~trio_wsroutes.MemoryBroker`
for everything, :class:`~trio_wsroutes.RedisBroker` for this process's share of a topic.
The table maps a topic to its subscribers and nothing else: a subscriber keeps its own
topics (:attr:`Subscriber.topics <trio_wsroutes.Subscriber.topics>`), and the table reads
them to drop every subscription of a subscriber that is gone.

**When a publication yields.** Publications, made here or received from Redis, and their
deliveries are counted (:meth:`TopicTable.pace`): a publish is a cancellation point every
time and a scheduling point only every 16th publication, or once 4096 deliveries have
been made since the last one. Publications made together are then written together (a
connection holds what is published to it until the publishing task yields, see
:class:`~trio_wsroutes._flow.Coalescer`), what the first subscribers wait for is
bounded, and a loop of publications, or a long run of messages from Redis, still lets
other tasks run. The bound is counted, not timed: it behaves the same on a loaded
machine and under a profiler, and reads no clock per publication.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final

import trio

from .._messages import Frame
from ._base import Subscriber

__all__ = ["YIELD_EVERY", "YIELD_EVERY_DELIVERIES", "TopicTable"]

YIELD_EVERY: Final = 16
"""Publications between two scheduling points, at most."""
YIELD_EVERY_DELIVERIES: Final = 4096
"""Deliveries between two scheduling points, at most (checked between fan-outs: one
fan-out is never interrupted)."""


class TopicTable:
    """Topic to subscribers, in subscription order, for one process.

    ``on_empty(topic)`` is called when a topic loses its last subscriber (an unsubscribe,
    or a subscriber found gone during a fan-out). Nothing here waits, except
    :meth:`checkpoint`.
    """

    __slots__ = ("_deliveries", "_on_empty", "_publications", "_topics")

    def __init__(self, on_empty: Callable[[str], object] | None = None) -> None:
        self._topics: dict[str, dict[Subscriber, None]] = {}
        self._on_empty = on_empty
        self._publications = 0  # since the last scheduling point
        self._deliveries = 0

    def __contains__(self, topic: object) -> bool:
        """Whether ``topic`` has a subscriber."""
        return topic in self._topics

    def active_topics(self) -> list[str]:
        """The topics that have a subscriber."""
        return list(self._topics)

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has."""
        subscribers = self._topics.get(topic)
        return len(subscribers) if subscribers else 0

    def subscribers(self, topic: str) -> list[Subscriber]:
        """The subscribers of ``topic`` (a copy), in subscription order."""
        return list(self._topics.get(topic, ()))

    def is_subscribed(self, topic: str, subscriber: Subscriber) -> bool:
        """Whether ``subscriber`` is subscribed to ``topic``."""
        subscribers = self._topics.get(topic)
        return subscribers is not None and subscriber in subscribers

    def add(self, topic: str, subscriber: Subscriber) -> None:
        """Subscribe ``subscriber`` to ``topic`` (idempotent)."""
        subscribers = self._topics.get(topic)
        if subscribers is None:
            subscribers = self._topics[topic] = {}
        subscribers[subscriber] = None

    def discard(self, topic: str, subscriber: Subscriber) -> None:
        """Unsubscribe ``subscriber`` from ``topic`` (idempotent)."""
        subscribers = self._topics.get(topic)
        if subscribers is None or subscriber not in subscribers:
            return
        del subscribers[subscriber]
        if not subscribers:
            del self._topics[topic]
            if self._on_empty is not None:
                self._on_empty(topic)

    def discard_all(self, subscriber: Subscriber) -> None:
        """Drop every subscription of ``subscriber``: the topics it lists."""
        for topic in subscriber.topics:
            self.discard(topic, subscriber)

    def fan_out(
        self,
        topic: str,
        frame: Frame,
        exclude: Subscriber | None = None,
        skip: Collection[Subscriber] | None = None,
    ) -> int:
        """Hand ``frame`` to every subscriber of ``topic`` but ``exclude`` and those in
        ``skip``; returns how many took it. A subscriber that is gone (``deliver``
        returned ``False``) is dropped from every topic at once."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return 0
        # deliver() never touches the table, so the dict cannot change under the loop.
        gone: list[Subscriber] | None = None
        if skip is None:
            for subscriber in subscribers:
                if subscriber is not exclude and not subscriber.deliver(frame):
                    if gone is None:
                        gone = []
                    gone.append(subscriber)
            # Counted from those that did not take it: no count per delivery.
            delivered = len(subscribers) - (exclude is not None and exclude in subscribers)
            if gone is not None:
                delivered -= len(gone)
        else:
            delivered = 0
            for subscriber in subscribers:
                if subscriber is exclude or subscriber in skip:
                    continue
                if subscriber.deliver(frame):
                    delivered += 1
                    continue
                if gone is None:
                    gone = []
                gone.append(subscriber)
        if gone is not None:
            for subscriber in gone:
                # This topic first: a subscriber whose own topics miss it must not stay.
                self.discard(topic, subscriber)
                self.discard_all(subscriber)
        self._deliveries += delivered
        return delivered

    def pace(self) -> bool:
        """Count a publication (one about to be fanned out, or one just fanned out);
        whether it is time to yield to the scheduler (see the module documentation)."""
        self._publications += 1
        if self._publications >= YIELD_EVERY or self._deliveries >= YIELD_EVERY_DELIVERIES:
            self._publications = self._deliveries = 0
            return True
        return False

    async def checkpoint(self) -> None:
        """Await before each publication: a cancellation point every time, a scheduling
        point when :meth:`pace` says so."""
        if self.pace():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
