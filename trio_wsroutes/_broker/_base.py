"""The broker interface shared by the in-memory and Redis brokers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import trio

from .._messages import Frame

__all__ = ["Broker", "RunnableBroker", "Subscriber"]


class Subscriber(Protocol):
    """Something a broker can deliver frames to: in practice a connection."""

    def deliver(self, frame: Frame) -> bool:
        """Queue ``frame`` without waiting.

        Return ``False`` when the subscriber is gone (closed, or evicted as a slow
        consumer): the broker then drops every subscription it holds for it.
        """
        ...


class Broker(Protocol):
    """Owns topic subscriptions and carries published frames to subscribers.

    A publish hands the same encoded :class:`~trio_wsroutes._messages.Frame` to every
    subscriber; it never waits on one slow subscriber.

    A broker that needs a background task (a connection to hold, like
    :class:`~trio_wsroutes.RedisBroker`) also defines
    ``async def run(self, *, task_status=trio.TASK_STATUS_IGNORED)``: the server starts it
    with ``nursery.start`` at lifespan startup, before the ``on_startup`` hooks, and
    cancels it at shutdown, after the ``on_shutdown`` hooks.
    """

    async def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Add ``subscriber`` to ``topic`` (idempotent)."""
        ...

    async def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``topic`` (idempotent)."""
        ...

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove every subscription of ``subscriber``; called when it closes."""
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


@runtime_checkable
class RunnableBroker(Broker, Protocol):
    """A :class:`Broker` with a background task.

    :class:`~trio_wsroutes.WebSocketServer` starts ``run`` with ``nursery.start`` at
    lifespan startup, before the ``on_startup`` hooks, and cancels it at shutdown, after
    the ``on_shutdown`` hooks.
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; call ``task_status.started()`` once the broker is usable."""
        ...
