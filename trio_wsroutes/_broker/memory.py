"""The in-process broker, the default."""

from __future__ import annotations

import trio

from .._messages import Frame
from ._base import Subscriber

__all__ = ["MemoryBroker"]


class MemoryBroker:
    """Topics within one process: a dict of topic to subscribers, and its reverse.

    All methods are safe to call from any task of the server's Trio run. Publishing is
    a loop over the topic's subscribers handing each the same frame.
    """

    def __init__(self) -> None:
        self._topics: dict[str, dict[Subscriber, None]] = {}
        self._by_subscriber: dict[Subscriber, set[str]] = {}

    async def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Add ``subscriber`` to ``topic`` (idempotent)."""
        await trio.lowlevel.checkpoint()
        self.add(topic, subscriber)

    async def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``topic`` (idempotent)."""
        await trio.lowlevel.checkpoint()
        self.discard(topic, subscriber)

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove every subscription of ``subscriber``."""
        self.discard_all(subscriber)
        await trio.lowlevel.checkpoint()

    async def publish(self, topic: str, frame: Frame, *, exclude: Subscriber | None = None) -> int:
        """Queue ``frame`` for the subscribers of ``topic`` but ``exclude``; returns how
        many it was queued for."""
        await trio.lowlevel.checkpoint()
        return self.fan_out(topic, frame, exclude=exclude)

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has."""
        subscribers = self._topics.get(topic)
        return len(subscribers) if subscribers else 0

    # Synchronous core, also used by brokers that carry publishes between processes.

    def add(self, topic: str, subscriber: Subscriber) -> bool:
        """Subscribe; return ``True`` if ``topic`` had no subscriber before."""
        subscribers = self._topics.get(topic)
        first = subscribers is None
        if subscribers is None:
            subscribers = self._topics[topic] = {}
        subscribers[subscriber] = None
        self._by_subscriber.setdefault(subscriber, set()).add(topic)
        return first

    def discard(self, topic: str, subscriber: Subscriber) -> bool:
        """Unsubscribe; return ``True`` if ``topic`` has no subscriber left."""
        subscribers = self._topics.get(topic)
        if subscribers is None:
            return False
        subscribers.pop(subscriber, None)
        topics = self._by_subscriber.get(subscriber)
        if topics is not None:
            topics.discard(topic)
            if not topics:
                del self._by_subscriber[subscriber]
        if not subscribers:
            del self._topics[topic]
            return True
        return False

    def discard_all(self, subscriber: Subscriber) -> list[str]:
        """Drop every subscription of ``subscriber``; return the topics left empty."""
        emptied: list[str] = []
        for topic in self._by_subscriber.pop(subscriber, ()):
            subscribers = self._topics.get(topic)
            if subscribers is None:
                continue
            subscribers.pop(subscriber, None)
            if not subscribers:
                del self._topics[topic]
                emptied.append(topic)
        return emptied

    def topics_of(self, subscriber: Subscriber) -> frozenset[str]:
        """The topics ``subscriber`` is subscribed to."""
        return frozenset(self._by_subscriber.get(subscriber, ()))

    def fan_out(self, topic: str, frame: Frame, *, exclude: Subscriber | None = None) -> int:
        """Queue ``frame`` for every local subscriber of ``topic`` but ``exclude``."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return 0
        delivered = 0
        gone: list[Subscriber] = []
        # deliver() never touches the broker, so the dict cannot change under the loop.
        for subscriber in subscribers:
            if subscriber is exclude:
                continue
            if subscriber.deliver(frame):
                delivered += 1
            else:
                gone.append(subscriber)
        for subscriber in gone:
            self.discard_all(subscriber)
        return delivered
