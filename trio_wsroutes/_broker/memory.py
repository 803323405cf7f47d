"""The in-process broker, the default."""

from __future__ import annotations

from collections.abc import Mapping

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
from .._presence import (
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    PresenceEntry,
    PresenceMember,
    PresencePolicy,
    PresenceStats,
    adopt_presence,
    event_frame,
    user_json,
)
from ._base import Subscriber
from ._history_store import SWEEP_INTERVAL, HistoryStore
from ._presence_store import PresenceStore
from ._topics import TopicTable

__all__ = ["MemoryBroker"]


class MemoryBroker:
    """Topics within one process: each topic's subscribers, and the history kept in
    memory.

    All methods are safe to call from any task of the server's Trio run. Publishing is
    a loop over the topic's subscribers handing each the same frame; it is a
    cancellation point every time and yields to the scheduler only every 16th publish
    (or 4096th delivery), so that publishes made together are written together.

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

    **Presence** (the server's ``presence`` option, through :meth:`configure_presence`):
    the entries of the connections of this process, in memory, counted in the server's
    ``memory_budget``; join and leave events are fanned out like publications.
    """

    def __init__(self, *, history: HistoryPolicy | Mapping[str, History] | None = None) -> None:
        self._table = TopicTable()
        self._store: HistoryStore | None = None
        self._budget: MemoryBudget | None = None
        self._presence: PresenceStore | None = None
        self.recoveries_capped: int = 0
        """Recoveries refused for having more than the policy's ``max_recovery``
        publications to send."""
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
        if self._presence is not None:
            self._presence.use_budget(budget)

    @property
    def presence_policy(self) -> PresencePolicy | None:
        """The presence policy, or ``None`` when no topic lists who is in it."""
        store = self._presence
        return None if store is None else store.policy

    def configure_presence(self, policy: PresencePolicy) -> None:
        """List who is in the topics ``policy`` matches (once; an equal policy again is
        a no-op, another one a :class:`RuntimeError`). The server calls it with its
        ``presence`` option."""
        adopted = adopt_presence(self.presence_policy, policy)
        if self._presence is None:
            self._presence = PresenceStore(adopted, self._budget)

    async def presence_join(self, topic: str, member: PresenceMember) -> None:
        """List ``member`` in ``topic``; with events on, tell the topic's subscribers
        when its user was not there yet."""
        store = self._require_presence()
        await trio.lowlevel.checkpoint()
        new_user = store.join(topic, member)
        member.announced = True
        presence = store.policy.match(topic)
        if new_user and presence is not None and presence.events:
            await self._presence_event(PRESENCE_JOIN, topic, member)

    async def presence_leave(self, topic: str, connection_id: str) -> None:
        """Unlist the connection from ``topic`` (idempotent); with events on, tell the
        topic's subscribers when it was its user's last connection there."""
        store = self._require_presence()
        gone = store.leave(topic, connection_id)
        presence = store.policy.match(topic)
        if gone is not None and presence is not None and presence.events:
            await self._presence_event(PRESENCE_LEAVE, topic, gone)
        else:
            await trio.lowlevel.checkpoint()

    async def presence(self, topic: str) -> list[PresenceEntry]:
        """The connections listed in ``topic``."""
        store = self._require_presence()
        await trio.lowlevel.checkpoint()
        return store.entries(topic)

    async def presence_stats(self, topic: str) -> PresenceStats:
        """Connections and distinct users in ``topic``."""
        store = self._require_presence()
        await trio.lowlevel.checkpoint()
        return store.stats(topic)

    @property
    def presence_bytes(self) -> int:
        """Bytes held by presence entries now (counted in the memory budget)."""
        return 0 if self._presence is None else self._presence.bytes

    def _require_presence(self) -> PresenceStore:
        store = self._presence
        if store is None:
            raise RuntimeError("this broker keeps no presence (see configure_presence)")
        return store

    async def _presence_event(self, kind: str, topic: str, member: PresenceMember) -> None:
        with_topic = self._store is None or self._store.policy.match(topic) is None
        frame = event_frame(
            kind, topic, user_json(member.user_key), member.info, with_topic=with_topic
        )
        # A join goes to the others: the joining connection knows.
        await self.publish(
            topic, frame, exclude=member.subscriber if kind == PRESENCE_JOIN else None
        )

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
        what it missed, at most the policy's ``max_recovery`` publications (see
        :meth:`Broker.subscribe <trio_wsroutes.Broker.subscribe>`)."""
        await trio.lowlevel.checkpoint()
        # From here until the subscriber is added, no checkpoint: nothing comes between.
        table, store = self._table, self._store
        if since is None or store is None or table.is_subscribed(topic, subscriber):
            table.add(topic, subscriber)
            return NOT_RECOVERED
        missed = store.missed(topic, since, trio.current_time())
        if missed is None or len(missed) > store.policy.max_recovery:
            if missed is not None:
                self.recoveries_capped += 1
            table.add(topic, subscriber)
            return NOT_RECOVERED
        for frame in missed:
            if not subscriber.deliver(frame):
                table.discard_all(subscriber)  # gone (e.g. evicted as a slow consumer)
                return NOT_RECOVERED
        table.add(topic, subscriber)
        return Recovery(recovered=True, missed=len(missed))

    async def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``topic`` (idempotent)."""
        await trio.lowlevel.checkpoint()
        self._table.discard(topic, subscriber)

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove every subscription of ``subscriber`` (the topics it lists)."""
        self._table.discard_all(subscriber)
        await trio.lowlevel.checkpoint()

    async def publish(self, topic: str, frame: Frame, *, exclude: Subscriber | None = None) -> int:
        """Queue ``frame`` for the subscribers of ``topic`` but ``exclude``; returns how
        many it was queued for. On a topic with history, a text frame is first given
        its position and kept."""
        table = self._table
        await table.checkpoint()
        store = self._store
        if store is not None and not frame.binary:
            history = store.policy.match(topic)
            if history is not None:
                positioned = store.record(topic, history, frame.payload, trio.current_time())
                if positioned is not None:  # else not a JSON object: live only
                    frame = positioned
        return table.fan_out(topic, frame, exclude)

    async def history(
        self, topic: str, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read ``topic``'s history (see :meth:`Broker.history
        <trio_wsroutes.Broker.history>`)."""
        await trio.lowlevel.checkpoint()
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be None or an integer >= 0, not {limit!r}")
        store = self._store
        if store is None or store.policy.match(topic) is None:
            raise ValueError(f"topic {topic!r} has no history")
        return store.read(topic, since, limit, trio.current_time())

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has."""
        return self._table.subscriber_count(topic)

    def history_topics(self) -> int:
        """How many topics keep history now (at most ``policy.max_topics``)."""
        return 0 if self._store is None else len(self._store)

    @property
    def history_bytes(self) -> int:
        """Bytes of publications kept in history now (at most ``policy.max_bytes``)."""
        return 0 if self._store is None else self._store.bytes

    @property
    def history_publications(self) -> int:
        """Publications kept in history now, all topics together."""
        return 0 if self._store is None else self._store.publications
