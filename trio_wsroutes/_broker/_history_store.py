"""History kept in memory: each topic's last publications, bounded in count, bytes and age.

:class:`HistoryStore` is the in-process history of :class:`~trio_wsroutes.MemoryBroker`:
per topic an epoch, the last offset and the kept publications; across topics the bounds
of the :class:`~trio_wsroutes.HistoryPolicy` (topics, bytes), and the server's memory
budget, which every kept byte counts against. It does no I/O and never waits, so a
broker can number, keep and deliver a publication with no checkpoint in between.

Everything kept costs its payload once: a kept publication is a :meth:`Frame.kept
<trio_wsroutes.Frame.kept>` frame, which caches no wire or compressed copy (the live
frame handed to subscribers caches those and is freed once sent), and a recovery hands
the same kept frame to every connection that recovers it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import islice
from typing import Final

import orjson

from .._flow import MemoryBudget
from .._history import (
    History,
    HistoryPage,
    HistoryPolicy,
    Position,
    Publication,
    envelope_head,
    new_epoch,
    position_tail,
    topic_json,
)
from .._messages import Frame

__all__ = ["SWEEP_INTERVAL", "HistoryStore", "TopicHistory"]

SWEEP_INTERVAL: Final = 1.0
"""Seconds between two sweeps of expired history."""
_SWEEP_TOPICS: Final = 1000
"""Topics one sweep looks at, at most: the work of a sweep is bounded, and a full pass
over ``max_topics`` topics takes ``max_topics / 1000`` sweeps."""


class TopicHistory:
    """One topic's history: its epoch, its last offset, and the kept publications
    ``(offset, time, frame)``, oldest first: contiguous offsets ending at the last one
    (or none)."""

    __slots__ = ("bytes", "entries", "epoch", "epoch_json", "history", "offset", "topic_json")

    def __init__(self, topic: str, history: History) -> None:
        self.topic_json = topic_json(topic)
        self.epoch = new_epoch()
        self.epoch_json = orjson.dumps(self.epoch)
        self.offset = 0
        self.history = history
        self.bytes = 0  # payload bytes of the kept entries
        self.entries: deque[tuple[int, float, Frame]] = deque()

    def position(self) -> Position:
        """The latest position: the last publication's, or offset 0."""
        return Position(self.epoch, self.offset)

    def after(self, since: Position) -> list[Frame] | None:
        """Every kept publication after ``since``; ``None`` if the epoch differs or the
        history does not reach back to it (expired entries must be pruned first)."""
        if since.epoch != self.epoch or since.offset > self.offset:
            return None
        if since.offset == self.offset:
            return []
        entries = self.entries
        if not entries or entries[0][0] > since.offset + 1:
            return None
        return [frame for _, _, frame in islice(entries, since.offset + 1 - entries[0][0], None)]


class HistoryStore:
    """The kept publications of every topic with history, in one process.

    Bounds: per topic, the :class:`~trio_wsroutes.History` ``size``, ``max_bytes`` and
    ``ttl``; together, the policy's ``max_topics`` (the topic least recently published to
    is forgotten, epoch and all) and ``max_bytes`` (the oldest publications of the topics
    least recently published to are dropped first). Kept bytes are held in ``budget``.

    Reading never creates anything: a topic is known from its first publication on.
    """

    def __init__(self, policy: HistoryPolicy, budget: MemoryBudget | None = None) -> None:
        self.policy = policy
        self.budget: MemoryBudget = budget if budget is not None else MemoryBudget()
        # Least recently published first: the order of eviction.
        self._topics: OrderedDict[str, TopicHistory] = OrderedDict()
        self.bytes = 0
        """Payload bytes kept, all topics together."""
        self._sweep_queue: list[str] = []
        self._sweep_next = 0

    def __len__(self) -> int:
        """How many topics have history state (at most ``policy.max_topics``)."""
        return len(self._topics)

    @property
    def publications(self) -> int:
        """Publications kept, all topics together (counted when asked: a scrape's work)."""
        return sum(len(state.entries) for state in self._topics.values())

    def use_budget(self, budget: MemoryBudget) -> None:
        """Count kept bytes in ``budget`` from now on (the server's ``memory_budget``)."""
        if budget is self.budget:
            return
        for state in self._topics.values():
            for _, _, frame in state.entries:
                self.budget.let_go(frame)
                budget.hold(frame)
        self.budget = budget

    def get(self, topic: str) -> TopicHistory | None:
        """The state of ``topic``, if it has any (never creates it)."""
        return self._topics.get(topic)

    # -- writing -------------------------------------------------------------------------

    def record(self, topic: str, history: History, payload: bytes, now: float) -> Frame | None:
        """Number a text publication on ``topic`` and keep it (within the bounds); the
        frame to deliver, with its position, or ``None`` when ``payload`` is not a JSON
        object (delivered as it is, neither kept nor numbered)."""
        state = self._topics.get(topic)
        if state is None:
            # First publication: it is numbered even if its envelope cannot carry a
            # position, so creating the state first is harmless.
            state = self._create(topic, history)
        else:
            self._topics.move_to_end(topic)
        head = envelope_head(payload, state.topic_json)
        if head is None:
            return None
        state.offset += 1
        positioned = head + position_tail(state.offset, state.epoch_json)
        self._prune(state, now)
        size = len(positioned)
        limit = history.max_bytes
        if (limit is None or size <= limit) and size <= self.policy.max_bytes:
            kept = Frame.kept(positioned)
            state.entries.append((state.offset, now, kept))
            state.bytes += size
            self.bytes += size
            self.budget.hold(kept)
            self._trim(state)
            if self.bytes > self.policy.max_bytes:
                self._trim_all()
        else:
            # Too large to keep: its offset is used anyway, so a client that missed it
            # learns that it cannot recover rather than silently skipping it, and what
            # came before can no longer be recovered either (the kept entries stay
            # contiguous and end at the last offset, or there are none).
            self._drop(state, len(state.entries))
        return Frame(positioned)

    def _create(self, topic: str, history: History) -> TopicHistory:
        topics = self._topics
        while len(topics) >= self.policy.max_topics:
            _, evicted = topics.popitem(last=False)  # the least recently published
            self._drop(evicted, len(evicted.entries))
        state = topics[topic] = TopicHistory(topic, history)
        return state

    def _trim(self, state: TopicHistory) -> None:
        history = state.history
        extra = len(state.entries) - history.size
        if extra > 0:
            self._drop(state, extra)
        limit = history.max_bytes
        if limit is not None:
            while state.bytes > limit:
                self._drop(state, 1)

    def _trim_all(self) -> None:
        limit = self.policy.max_bytes
        for state in self._topics.values():  # least recently published first
            while state.entries and self.bytes > limit:
                self._drop(state, 1)
            if self.bytes <= limit:
                return

    def _drop(self, state: TopicHistory, count: int) -> None:
        """Forget the ``count`` oldest kept publications of ``state``."""
        entries = state.entries
        budget = self.budget
        for _ in range(count):
            _, _, frame = entries.popleft()
            state.bytes -= frame.size
            self.bytes -= frame.size
            budget.let_go(frame)

    def _prune(self, state: TopicHistory, now: float) -> None:
        """Drop the publications of ``state`` older than its ``ttl``."""
        ttl = state.history.ttl
        if ttl is None:
            return
        entries = state.entries
        oldest = now - ttl
        expired = 0
        for _, stamp, _ in entries:
            if stamp >= oldest:
                break
            expired += 1
        if expired:
            self._drop(state, expired)

    def sweep(self, now: float) -> int:
        """Drop expired publications of up to 1000 topics, continuing where the last
        sweep stopped; returns how many topics it looked at. A full pass takes
        ``len(store) / 1000`` sweeps: expired history is freed without a publish or read."""
        queue = self._sweep_queue
        if self._sweep_next >= len(queue):
            # A new pass over the topics with history with an age limit.
            queue[:] = [t for t, s in self._topics.items() if s.history.ttl is not None]
            self._sweep_next = 0
        start = self._sweep_next
        end = min(start + _SWEEP_TOPICS, len(queue))
        topics = self._topics
        for topic in queue[start:end]:
            state = topics.get(topic)
            if state is not None:
                self._prune(state, now)
        self._sweep_next = end
        return end - start

    # -- reading -------------------------------------------------------------------------

    def missed(self, topic: str, since: Position, now: float) -> list[Frame] | None:
        """The kept publications of ``topic`` after ``since``, oldest first; ``None`` when
        they cannot be recovered (no history, another epoch, not reaching back)."""
        state = self._topics.get(topic)
        if state is None:
            return None
        self._prune(state, now)
        return state.after(since)

    def read(
        self, topic: str, since: Position | None, limit: int | None, now: float
    ) -> HistoryPage:
        """The :class:`~trio_wsroutes.HistoryPage` of ``topic`` (see ``Broker.history``).

        A topic without history state (never published to, or forgotten) gives an empty
        page with ``recovered=False`` and offset 0 of an epoch no publication carries."""
        state = self._topics.get(topic)
        if state is None:
            return HistoryPage(topic, Position(new_epoch(), 0), (), recovered=False)
        self._prune(state, now)
        if since is None:
            entries = state.entries
            skip = 0 if limit is None else max(len(entries) - limit, 0)
            frames = [frame for _, _, frame in islice(entries, skip, None)]
            first = entries[skip][0] if frames else state.offset + 1
        else:
            found = state.after(since)
            if found is None:
                return HistoryPage(topic, state.position(), (), recovered=False)
            frames = found if limit is None else found[:limit]
            first = since.offset + 1
        epoch = state.epoch
        publications = tuple(
            Publication(Position(epoch, first + index), frame.payload)
            for index, frame in enumerate(frames)
        )
        return HistoryPage(topic, state.position(), publications, recovered=True)
