"""The in-process broker, the default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import trio

from .._flow import MemoryBudget
from .._history import (
    NOT_RECOVERED,
    History,
    HistoryPage,
    HistoryPolicy,
    Position,
    Recovery,
    adopt_policy,
)
from .._messages import Frame
from ._base import Subscriber
from ._history_store import SWEEP_INTERVAL, HistoryStore

__all__ = ["MemoryBroker"]


# A publish yields to the scheduler once this many publishes, or deliveries, have been
# made since the last yield: publishes made together are written together (Coalescer),
# and what is held for the first subscribers waits for a bounded amount of work.
_YIELD_EVERY: Final = 16
_YIELD_EVERY_DELIVERIES: Final = 4096


class MemoryBroker:
    """Topics within one process: a dict of topic to subscribers, and its reverse.

    All methods are safe to call from any task of the server's Trio run. Publishing is
    a loop over the topic's subscribers handing each the same frame.

    **History** (``MemoryBroker(history={"room:*": History(100)})``, or the server's
    ``history`` option through :meth:`configure_history`): each topic that the policy
    matches gets a random epoch with its first publication and keeps its last text
    publications, bounded by the topic's :class:`~trio_wsroutes.History` (``size``,
    ``max_bytes``, ``ttl``) and by the policy's ``max_topics`` and ``max_bytes`` for all
    topics together (see :class:`~trio_wsroutes.HistoryPolicy`). Expired publications
    are dropped when the topic is published to or read, and by a sweep every second
    while the broker runs (:meth:`run`, which the server starts). The kept bytes count
    against the server's ``memory_budget``. Publishing, reading the history, delivering
    what a subscriber missed and registering it happen with no checkpoint between them,
    so recovery has no gap and no duplicate. Reading the history of a topic creates
    nothing. The history lives and dies with the process.
    """

    def __init__(self, *, history: HistoryPolicy | Mapping[str, History] | None = None) -> None:
        self._topics: dict[str, dict[Subscriber, None]] = {}
        self._by_subscriber: dict[Subscriber, set[str]] = {}
        self._store: HistoryStore | None = None
        self._budget: MemoryBudget | None = None
        self._unyielded = 0  # publishes since the last one that yielded
        self._unyielded_deliveries = 0  # and deliveries
        policy = HistoryPolicy.coerce(history)
        if policy is not None:
            self.configure_history(policy)

    @property
    def history_policy(self) -> HistoryPolicy | None:
        """The history policy, or ``None`` when no topic keeps history."""
        store = self._store
        return None if store is None else store.policy

    def configure_history(self, policy: HistoryPolicy) -> None:
        """Keep history for the topics ``policy`` matches (once; an equal policy again
        is a no-op, another one a :class:`RuntimeError`)."""
        adopted = adopt_policy(self.history_policy, policy)
        if self._store is None:
            self._store = HistoryStore(adopted, self._budget)

    def configure_memory(self, budget: MemoryBudget) -> None:
        """Count the bytes of the kept history in ``budget`` (the server's
        ``memory_budget``; the server calls it)."""
        self._budget = budget
        if self._store is not None:
            self._store.use_budget(budget)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep expired history every second until cancelled (the server runs it during
        its lifespan). Without it, expired history is dropped only when its topic is
        published to or read."""
        task_status.started()
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            if self._store is not None:
                self._store.sweep(trio.current_time())

    async def subscribe(
        self, topic: str, subscriber: Subscriber, *, since: Position | None = None
    ) -> Recovery:
        """Add ``subscriber`` to ``topic`` (idempotent); with ``since``, first deliver
        what it missed (see :meth:`Broker.subscribe <trio_wsroutes.Broker.subscribe>`)."""
        await trio.lowlevel.checkpoint()
        return self.add_since(topic, subscriber, since)

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
        many it was queued for. On a topic with history, a text frame is first given
        its position and kept."""
        # A cancellation point every time, a scheduling point only every 16th publish
        # (or 4096th delivery): see _YIELD_EVERY.
        self._unyielded += 1
        if (
            self._unyielded >= _YIELD_EVERY
            or self._unyielded_deliveries >= _YIELD_EVERY_DELIVERIES
        ):
            self._unyielded = self._unyielded_deliveries = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        if self._store is not None and not frame.binary:
            frame = self.record(topic, frame)
        delivered = self.fan_out(topic, frame, exclude=exclude)
        self._unyielded_deliveries += delivered
        return delivered

    async def history(
        self, topic: str, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read ``topic``'s history (see :meth:`Broker.history
        <trio_wsroutes.Broker.history>`)."""
        await trio.lowlevel.checkpoint()
        return self.read_history(topic, since=since, limit=limit)

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has."""
        subscribers = self._topics.get(topic)
        return len(subscribers) if subscribers else 0

    # Synchronous core, also used by brokers that carry publishes between processes.

    def add_since(self, topic: str, subscriber: Subscriber, since: Position | None) -> Recovery:
        """Subscribe, first delivering what ``subscriber`` missed since ``since`` (at most
        the policy's ``max_recovery`` publications: past it, nothing old)."""
        store = self._store
        if since is None or store is None or self.is_subscribed(topic, subscriber):
            self.add(topic, subscriber)
            return NOT_RECOVERED
        missed = store.missed(topic, since, trio.current_time())
        if missed is None or len(missed) > store.policy.max_recovery:
            self.add(topic, subscriber)
            return NOT_RECOVERED
        for frame in missed:
            if not subscriber.deliver(frame):
                self.discard_all(subscriber)  # gone (e.g. evicted as a slow consumer)
                return NOT_RECOVERED
        self.add(topic, subscriber)
        return Recovery(recovered=True, missed=len(missed))

    def record(self, topic: str, frame: Frame) -> Frame:
        """Number and keep a text publication on ``topic`` if it has history; returns the
        frame to send (with its position), or ``frame`` itself."""
        store = self._store
        history = store.policy.match(topic) if store is not None else None
        if history is None:
            return frame
        assert store is not None
        positioned = store.record(topic, history, frame.payload, trio.current_time())
        return frame if positioned is None else positioned

    def read_history(
        self, topic: str, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The synchronous core of :meth:`history`."""
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be None or an integer >= 0, not {limit!r}")
        store = self._store
        if store is None or store.policy.match(topic) is None:
            raise ValueError(f"topic {topic!r} has no history")
        return store.read(topic, since, limit, trio.current_time())

    def history_topics(self) -> int:
        """How many topics keep history now (at most ``policy.max_topics``)."""
        return 0 if self._store is None else len(self._store)

    @property
    def history_bytes(self) -> int:
        """Bytes of publications kept in history now (at most ``policy.max_bytes``)."""
        return 0 if self._store is None else self._store.bytes

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

    def is_subscribed(self, topic: str, subscriber: Subscriber) -> bool:
        """Whether ``subscriber`` is subscribed to ``topic``."""
        subscribers = self._topics.get(topic)
        return subscribers is not None and subscriber in subscribers

    def __contains__(self, topic: object) -> bool:
        """Whether ``topic`` has a subscriber."""
        return topic in self._topics

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
