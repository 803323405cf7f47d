"""The broker interface shared by the in-memory and Redis brokers."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

import trio

from .._history import HistoryPage, HistoryPolicy, Position, Recovery
from .._messages import Frame

__all__ = ["Broker", "LossAware", "RunnableBroker", "Subscriber"]


class Subscriber(Protocol):
    """Something a broker can deliver frames to: in practice a connection.

    A subscriber keeps its own topics: it lists a topic in :attr:`topics` before it
    calls :meth:`Broker.subscribe` and takes it out after :meth:`Broker.unsubscribe`
    returns. A broker keeps only each topic's subscribers, and reads :attr:`topics` to
    drop every subscription of a subscriber (:meth:`Broker.unsubscribe_all`, or one that
    is gone).
    """

    @property
    def topics(self) -> Collection[str]:
        """The topics it is subscribed, or subscribing, to. Brokers only read it (and do
        not keep it): it may be the subscriber's own set, or a snapshot of it."""
        ...

    def deliver(self, frame: Frame) -> bool:
        """Queue ``frame`` without waiting.

        Return ``False`` when the subscriber is gone (closed, or evicted as a slow
        consumer): the broker then drops every subscription it holds for it, the topics
        in :attr:`topics` and the one it was delivering on. (So a subscriber that goes
        while delivering keeps :attr:`topics` as it is until the broker has read it.)
        """
        ...


@runtime_checkable
class LossAware(Protocol):
    """A :class:`Subscriber` that can be told it missed publications on a topic with
    history (a connection is): a broker that loses some on their way to this process
    (:class:`~trio_wsroutes.RedisBroker`, cut off from Redis) calls
    :meth:`lost_publications` rather than deliver the next ones after a gap, then drops
    every subscription it holds for it, as for a subscriber that is gone."""

    def lost_publications(self, topic: str) -> None:
        """Publications on ``topic`` after the last one delivered never reached this
        process: end the subscriber so that it resumes from its position (without
        waiting)."""
        ...


class Broker(Protocol):
    """Owns topic subscriptions and carries published frames to subscribers.

    A publish hands the same encoded :class:`~trio_wsroutes._messages.Frame` to every
    subscriber; it never waits on one slow subscriber.

    **History.** After :meth:`configure_history`, a text publication on a topic that the
    policy matches is given the topic's next position, sent with ``"topic"``,
    ``"offset"`` and ``"epoch"`` spliced into its envelope, and kept (bounded by the
    topic's :class:`~trio_wsroutes.History`). Binary frames, and text frames that are not
    a JSON object, are delivered live on such topics but neither kept nor numbered: a
    binary frame cannot carry a position, and numbering a frame the client cannot see
    would look like a gap to it.

    **Users across processes.** A broker that links processes may also define
    ``configure_control(handler)`` (the server calls it once, at construction, with
    ``async handler(command)``) and ``async publish_control(command)``: the server acts
    on a user's connections in its own process (``server.disconnect(user=...)``,
    ``server.subscribe(user=..., topic=...)``, ``server.unsubscribe(...)``), then hands
    the command to ``publish_control``; the broker carries it to the other processes and
    gives it to their ``handler``. A broker without them (``MemoryBroker``) leaves each
    process on its own.

    A broker that needs a background task (a connection to hold, like
    :class:`~trio_wsroutes.RedisBroker`) also defines
    ``async def run(self, *, task_status=trio.TASK_STATUS_IGNORED)``: the server starts it
    with ``nursery.start`` at lifespan startup, before the ``on_startup`` hooks, and
    cancels it at shutdown, after the ``on_shutdown`` hooks.
    """

    def configure_history(self, policy: HistoryPolicy) -> None:
        """Keep history for the topics ``policy`` matches.

        The server calls it once, at construction, with its ``history`` option, before
        any publish. Calling it again with an equal policy does nothing; with another
        one it raises :class:`RuntimeError` (a broker has one policy, shared by every
        process that uses the same history).
        """
        ...

    async def subscribe(
        self, topic: str, subscriber: Subscriber, *, since: Position | None = None
    ) -> Recovery:
        """Add ``subscriber`` to ``topic`` (idempotent).

        With ``since``, on a topic with history, first hand ``subscriber`` every kept
        publication after ``since`` (through ``subscriber.deliver``, in order), then the
        live ones, with no gap and no duplicate even while publishes go on, and return
        ``Recovery(True, missed)``. If the epoch differs, the history no longer reaches
        back to ``since`` or the broker cannot read it, nothing old is delivered and the
        subscriber gets the live publications from about when this returns, as without
        ``since``. Without ``since``, without history on ``topic``, or when
        ``subscriber`` is already subscribed to ``topic``: ``Recovery(False, 0)``
        (callers that ignore the result keep working).
        """
        ...

    async def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``topic`` (idempotent)."""
        ...

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove every subscription of ``subscriber`` (the topics in
        ``subscriber.topics``); called when it closes, before it forgets its topics."""
        ...

    async def publish(
        self, topic: str, frame: Frame, /, *, exclude: Subscriber | None = None
    ) -> int:
        """Deliver ``frame`` to the subscribers of ``topic`` but ``exclude``.

        Returns how many local subscribers it was queued for.
        """
        ...

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has."""
        ...

    async def history(
        self, topic: str, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read ``topic``'s kept publications, oldest first, and its latest position.

        Without ``since``: the last ``limit`` kept publications (all of them when
        ``limit`` is ``None``). With ``since``: the first ``limit`` kept publications
        after it (page on with the last one's position), or none and
        ``recovered=False`` when the epoch differs or the history no longer reaches back.
        Publications older than the topic's ``ttl`` are never returned. Raises
        :class:`ValueError` if ``topic`` has no history.
        """
        ...


@runtime_checkable
class RunnableBroker(Protocol):
    """A broker with a background task (only ``run`` is checked, so a broker written
    for an older interface is still run).

    :class:`~trio_wsroutes.WebSocketServer` starts ``run`` with ``nursery.start`` at
    lifespan startup, before the ``on_startup`` hooks, and cancels it at shutdown, after
    the ``on_shutdown`` hooks.
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; call ``task_status.started()`` once the broker is usable."""
        ...
