"""The messages of the admin page's live route (``Admin.path + "/live"``).

The server sends :class:`AdminHello` once, then an :class:`AdminSnapshot` every
``Admin.interval`` seconds; the page sends :class:`RefreshSnapshot` (answered with a
snapshot) and :class:`CloseConnection` (answered with an ack, or an error envelope
``UNKNOWN_CONNECTION``). Plain typed messages, as any route's.
"""

from __future__ import annotations

import attrs

from ._messages import message

__all__ = [
    "AdminHello",
    "AdminSnapshot",
    "CloseConnection",
    "ConnectionRow",
    "HandlerRow",
    "RefreshSnapshot",
    "RouteRow",
    "TopicRow",
    "Totals",
]


@attrs.frozen
class Totals:
    """The whole server (this process) at the time of a snapshot."""

    connections: int
    """Connections open on the application's routes (the admin page's not counted)."""
    messages_in_per_second: float
    """Messages from clients, per second since the previous snapshot."""
    messages_out_per_second: float
    """Messages to clients (sent, replies and deliveries), per second."""
    deliveries_per_second: float
    """Publications queued for subscribers, per second."""
    publishes_per_second: float
    """``publish`` calls, per second."""
    memory_used: int
    """Bytes held in the memory budget (``server.memory.used``)."""
    memory_limit: int | None
    """The ``memory_budget`` (``None``: no limit)."""
    queued_bytes: int
    """Bytes waiting to go out, all connections together."""
    topics: int
    """Topics with at least one subscriber here."""
    subscriptions: int
    """Subscriptions, all connections together."""


@attrs.frozen
class RouteRow:
    """One route of the application."""

    route: str
    """The route's pattern (``/chat/:room``)."""
    connections: int
    messages_in: int
    """Since the server started."""
    messages_out: int
    deliveries: int
    """Publications delivered to the route's connections, since the server started."""
    errors: int
    """Error envelopes sent, since the server started."""
    messages_in_per_second: float
    messages_out_per_second: float
    deliveries_per_second: float


@attrs.frozen
class HandlerRow:
    """One message type of one route: its handler's run time since the server started
    (estimated from the duration histogram's buckets)."""

    route: str
    type: str
    count: int
    p50: float | None
    """Seconds; ``None`` before the first message."""
    p99: float | None
    timeouts: int


@attrs.frozen
class TopicRow:
    """One topic with subscribers."""

    topic: str
    subscribers: int
    history: int | None
    """Publications kept, for a topic that keeps history, counted up to 1000 (1000
    means at least that many); ``None`` for a topic that keeps none, or when the broker
    did not answer in time."""


@attrs.frozen
class ConnectionRow:
    """One connection, among those with the most bytes queued."""

    id: str
    route: str
    """The route's pattern."""
    path: str
    """The path the client asked for (``/chat/general``)."""
    user: str | None
    """The user's id (the server's ``user_id`` option), if any."""
    queued_bytes: int
    connected_seconds: float
    topics: int


@message("admin_hello")
@attrs.frozen
class AdminHello:
    """Sent once when the page connects."""

    user: str | None
    """The administrator's id, as the server's ``user_id`` option gives it."""
    interval: float
    """Seconds between two snapshots."""
    version: str
    """The library's version."""


@message("admin_snapshot")
@attrs.frozen
class AdminSnapshot:
    """What the page shows, every ``interval`` seconds (and in reply to
    :class:`RefreshSnapshot`)."""

    time: float
    """Unix time of the snapshot."""
    totals: Totals
    routes: list[RouteRow]
    handlers: list[HandlerRow]
    topics: list[TopicRow]
    """The topics with the most subscribers (at most ``Admin.max_rows``)."""
    connections: list[ConnectionRow]
    """The connections with the most bytes queued, oldest first among equals (at most
    ``Admin.max_rows``)."""


@attrs.frozen
class RefreshSnapshot:
    """``refresh_snapshot``: answered with an :class:`AdminSnapshot` at once."""


@attrs.frozen
class CloseConnection:
    """``close_connection``: close the connection ``id`` (code 1008, reason
    ``"closed by an administrator"``); ``reason`` goes to the server's log."""

    id: str
    reason: str = ""
