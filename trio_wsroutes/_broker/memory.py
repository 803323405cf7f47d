"""The in-process broker, the default."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from itertools import islice
from typing import Final

import orjson
import trio

from .._history import (
    NOT_RECOVERED,
    History,
    HistoryPage,
    HistoryPolicy,
    Position,
    Publication,
    Recovery,
    adopt_policy,
    envelope_head,
    new_epoch,
    position_tail,
    topic_json,
)
from .._messages import Frame
from ._base import Subscriber

__all__ = ["MemoryBroker"]


class _TopicHistory:
    """One topic's history: its epoch, its last offset, and the kept publications
    ``(offset, time, frame)``, contiguous offsets, oldest first."""

    __slots__ = ("entries", "epoch", "epoch_json", "offset", "topic_json", "ttl")

    def __init__(self, topic: str, history: History) -> None:
        self.topic_json = topic_json(topic)
        self.epoch = new_epoch()
        self.epoch_json = orjson.dumps(self.epoch)
        self.offset = 0
        self.ttl = history.ttl
        self.entries: deque[tuple[int, float, Frame]] = deque(maxlen=history.size)

    def prune(self, now: float) -> None:
        ttl = self.ttl
        if ttl is not None:
            entries = self.entries
            oldest = now - ttl
            while entries and entries[0][1] < oldest:
                entries.popleft()

    def append(self, payload: bytes, now: float) -> Frame | None:
        head = envelope_head(payload, self.topic_json)
        if head is None:
            return None
        self.offset += 1
        frame = Frame(head + position_tail(self.offset, self.epoch_json))
        self.prune(now)
        self.entries.append((self.offset, now, frame))
        return frame

    def after(self, since: Position, now: float) -> list[tuple[int, float, Frame]] | None:
        """Every kept entry after ``since``; ``None`` if the epoch differs or the history
        does not reach back to it."""
        if since.epoch != self.epoch or since.offset > self.offset:
            return None
        self.prune(now)
        if since.offset == self.offset:
            return []
        entries = self.entries
        if not entries or entries[0][0] > since.offset + 1:
            return None
        return list(islice(entries, since.offset + 1 - entries[0][0], None))

    def position(self) -> Position:
        return Position(self.epoch, self.offset)


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
    matches gets a random epoch when its history starts and keeps its last ``size`` text
    publications in a deque, pruned of those older than ``ttl`` when the topic is
    published to or read. Publishing, reading the history, delivering what a subscriber
    missed and registering it happen with no checkpoint between them, so recovery has no
    gap and no duplicate. At most ``policy.max_topics`` topics keep history; past it,
    the history of the topic least recently published to is dropped (its next
    publication starts a new epoch). The history lives and dies with the process.
    """

    def __init__(self, *, history: HistoryPolicy | Mapping[str, History] | None = None) -> None:
        self._topics: dict[str, dict[Subscriber, None]] = {}
        self._by_subscriber: dict[Subscriber, set[str]] = {}
        self._policy: HistoryPolicy | None = None
        self._unyielded = 0  # publishes since the last one that yielded
        self._unyielded_deliveries = 0  # and deliveries
        # Least recently published first: the eviction order.
        self._histories: OrderedDict[str, _TopicHistory] = OrderedDict()
        policy = HistoryPolicy.coerce(history)
        if policy is not None:
            self.configure_history(policy)

    @property
    def history_policy(self) -> HistoryPolicy | None:
        """The history policy, or ``None`` when no topic keeps history."""
        return self._policy

    def configure_history(self, policy: HistoryPolicy) -> None:
        """Keep history for the topics ``policy`` matches (once; an equal policy again
        is a no-op, another one a :class:`RuntimeError`)."""
        self._policy = adopt_policy(self._policy, policy)

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
        if self._policy is not None and not frame.binary:
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
        """Subscribe, first delivering what ``subscriber`` missed since ``since``."""
        if since is None or self._policy is None or self.is_subscribed(topic, subscriber):
            self.add(topic, subscriber)
            return NOT_RECOVERED
        state = self._histories.get(topic)
        missed = state.after(since, trio.current_time()) if state is not None else None
        if missed is None:
            self.add(topic, subscriber)
            return NOT_RECOVERED
        for _, _, frame in missed:
            if not subscriber.deliver(frame):
                self.discard_all(subscriber)  # gone (e.g. evicted as a slow consumer)
                return NOT_RECOVERED
        self.add(topic, subscriber)
        return Recovery(recovered=True, missed=len(missed))

    def record(self, topic: str, frame: Frame) -> Frame:
        """Number and keep a text publication on ``topic`` if it has history; returns the
        frame to send (with its position), or ``frame`` itself."""
        policy = self._policy
        history = policy.match(topic) if policy is not None else None
        if history is None:
            return frame
        state = self._history_state(topic, history)
        self._histories.move_to_end(topic)
        positioned = state.append(frame.payload, trio.current_time())
        return frame if positioned is None else positioned

    def read_history(
        self, topic: str, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage:
        """The synchronous core of :meth:`history`."""
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be None or an integer >= 0, not {limit!r}")
        policy = self._policy
        history = policy.match(topic) if policy is not None else None
        if history is None:
            raise ValueError(f"topic {topic!r} has no history")
        state = self._history_state(topic, history)
        now = trio.current_time()
        state.prune(now)
        if since is None:
            entries = list(state.entries)
            if limit is not None:
                entries = entries[-limit:] if limit else []
        else:
            found = state.after(since, now)
            if found is None:
                return HistoryPage(topic, state.position(), (), recovered=False)
            entries = found if limit is None else found[:limit]
        epoch = state.epoch
        publications = tuple(
            Publication(Position(epoch, offset), frame.payload) for offset, _, frame in entries
        )
        return HistoryPage(topic, state.position(), publications, recovered=True)

    def history_topics(self) -> int:
        """How many topics keep history now (at most ``policy.max_topics``)."""
        return len(self._histories)

    def _history_state(self, topic: str, history: History) -> _TopicHistory:
        state = self._histories.get(topic)
        if state is None:
            state = _TopicHistory(topic, history)
            assert self._policy is not None
            while len(self._histories) >= self._policy.max_topics:
                self._histories.popitem(last=False)  # least recently published
            self._histories[topic] = state
        return state

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
