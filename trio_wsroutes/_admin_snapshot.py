"""What the admin page shows, read from the server: :class:`Sampler` turns the server's
numbers into an :class:`~trio_wsroutes._admin_messages.AdminSnapshot`.

Totals come from ``server.route_stats`` (the metrics' counters); rates are the
difference between two samples over the time between them. Everything is read from
this process: with several workers, each one's page shows its own.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

from ._admin_messages import AdminSnapshot, ConnectionRow, HandlerRow, RouteRow, TopicRow, Totals

if TYPE_CHECKING:
    from ._access_log import UserId
    from ._broker import Broker
    from ._engine import Connection
    from ._flow import MemoryBudget
    from ._history import HistoryPage, HistoryPolicy, Position
    from ._metrics import RouteStats
    from ._registry import ConnectionRegistry
    from ._stats import ServerStats

__all__ = ["HISTORY_COUNT_LIMIT", "Sampler", "ServerView"]

logger = logging.getLogger("trio_wsroutes")

HISTORY_COUNT_LIMIT: Final = 1000
"""Kept publications counted at most per topic and snapshot (reading them all, from
Redis, every second, would cost as much as the history is long)."""


class ServerView(Protocol):
    """What the admin page reads of a :class:`~trio_wsroutes.WebSocketServer`."""

    @property
    def registry(self) -> ConnectionRegistry: ...

    @property
    def stats(self) -> ServerStats: ...

    @property
    def memory(self) -> MemoryBudget: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def history_policy(self) -> HistoryPolicy | None: ...

    @property
    def route_stats(self) -> dict[str, RouteStats]: ...

    async def history(
        self, topic: str, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage: ...


@attrs.frozen
class _Reading:
    """The counters rates are computed from, at one time (``time.monotonic()``)."""

    at: float
    routes: Mapping[str, tuple[int, int, int]]
    """Messages in, messages out and deliveries, by route."""
    publishes: int


def _per_second(now: int, before: int, seconds: float) -> float:
    return round(max(0, now - before) / seconds, 2) if seconds > 0 else 0.0


def user_label(user_id: UserId, user: object) -> str | None:
    """``user``'s id as the page shows it (``None`` without one)."""
    try:
        found = user_id(user)
    except Exception:
        logger.exception("the server's user_id function failed")
        return None
    return None if found is None else str(found)


class Sampler:
    """Builds snapshots; keeps the previous reading to compute rates."""

    def __init__(
        self, server: ServerView, *, user_id: UserId, max_rows: int, interval: float
    ) -> None:
        self._server = server
        self._user_id = user_id
        self._max_rows = max_rows
        self._interval = interval
        self._previous: _Reading | None = None
        self._rates: dict[str, tuple[float, float, float]] = {}
        self._publish_rate = 0.0

    def _update_rates(self, reading: _Reading) -> None:
        # A sample asked for in between (a refresh) keeps the rates of the last period.
        previous = self._previous
        if previous is not None and reading.at - previous.at < self._interval / 2:
            return
        self._previous = reading
        if previous is None:
            return
        seconds = reading.at - previous.at
        self._rates = {
            path: (
                _per_second(totals[0], before[0], seconds),
                _per_second(totals[1], before[1], seconds),
                _per_second(totals[2], before[2], seconds),
            )
            for path, totals in reading.routes.items()
            if (before := previous.routes.get(path)) is not None
        }
        self._publish_rate = _per_second(reading.publishes, previous.publishes, seconds)

    async def sample(self) -> AdminSnapshot:
        """The server as it is now."""
        server = self._server
        stats = server.route_stats
        reading = _Reading(
            at=time.monotonic(),
            routes={
                path: (route.messages_in, route.messages_out, route.sent.get("_published", 0))
                for path, route in stats.items()
            },
            publishes=server.stats.publishes,
        )
        self._update_rates(reading)
        routes: list[RouteRow] = []
        handlers: list[HandlerRow] = []
        for path, route in sorted(stats.items()):
            rate_in, rate_out, rate_deliveries = self._rates.get(path, (0.0, 0.0, 0.0))
            routes.append(
                RouteRow(
                    route=path,
                    connections=route.connections_open,
                    messages_in=route.messages_in,
                    messages_out=route.messages_out,
                    deliveries=reading.routes[path][2],
                    errors=sum(route.errors.values()),
                    messages_in_per_second=rate_in,
                    messages_out_per_second=rate_out,
                    deliveries_per_second=rate_deliveries,
                )
            )
            for kind, histogram in sorted(route.handler_seconds.items()):
                handlers.append(
                    HandlerRow(
                        route=path,
                        type=kind,
                        count=histogram.count,
                        p50=_rounded(histogram.quantile(0.5)),
                        p99=_rounded(histogram.quantile(0.99)),
                        timeouts=route.handler_timeouts.get(kind, 0),
                    )
                )
        connections = server.registry.all()
        subscribed: Counter[str] = Counter()
        queued = 0
        for connection in connections:
            subscribed.update(connection.topics)
            queued += connection.buffered_amount
        totals = Totals(
            connections=len(connections),
            messages_in_per_second=round(sum(r.messages_in_per_second for r in routes), 2),
            messages_out_per_second=round(sum(r.messages_out_per_second for r in routes), 2),
            deliveries_per_second=round(sum(r.deliveries_per_second for r in routes), 2),
            publishes_per_second=self._publish_rate,
            memory_used=server.memory.used,
            memory_limit=None if math.isinf(server.memory.limit) else int(server.memory.limit),
            queued_bytes=queued,
            topics=len(subscribed),
            subscriptions=sum(subscribed.values()),
        )
        return AdminSnapshot(
            time=time.time(),
            totals=totals,
            routes=routes,
            handlers=handlers,
            topics=await self._topics(subscribed),
            connections=self._slowest(connections),
        )

    async def _topics(self, subscribed: Counter[str]) -> list[TopicRow]:
        server = self._server
        policy = server.history_policy
        busiest = heapq.nsmallest(
            self._max_rows, subscribed.items(), key=lambda item: (-item[1], item[0])
        )
        kept: dict[str, int] = {}
        if policy is not None:
            # A broker slow to answer (Redis away) costs the page its history column,
            # never its updates.
            with trio.move_on_after(self._interval):
                for topic, _ in busiest:
                    if policy.match(topic) is None:
                        continue
                    try:
                        page = await server.history(topic, limit=HISTORY_COUNT_LIMIT)
                    except Exception:
                        logger.debug("admin page: no history for %r", topic, exc_info=True)
                        continue
                    kept[topic] = len(page.publications)
        return [
            TopicRow(topic, server.broker.subscriber_count(topic), kept.get(topic))
            for topic, _ in busiest
        ]

    def _slowest(self, connections: list[Connection[Any]]) -> list[ConnectionRow]:
        now = time.time()
        chosen = heapq.nsmallest(
            self._max_rows,
            connections,
            key=lambda c: (-c.buffered_amount, c.context.connected_at.timestamp()),
        )
        return [
            ConnectionRow(
                id=c.id,
                route=c.path,
                path=c.context.request.path,
                user=user_label(self._user_id, c.context.user),
                queued_bytes=c.buffered_amount,
                connected_seconds=round(max(0.0, now - c.context.connected_at.timestamp()), 1),
                topics=len(c.topics),
            )
            for c in chosen
        ]


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)
