"""Counters a server keeps, for dashboards and alerts (``server.stats``)."""

from __future__ import annotations

import attrs

__all__ = ["ServerStats"]


@attrs.define
class ServerStats:
    """Running totals since the server was created. Read them; the server updates them.

    ``messages_dropped`` and ``slow_consumer_closes`` tell how often the slow-consumer
    policy had to act: a steady rise means clients (or their networks) cannot keep up
    with what is published to them.
    """

    connections_accepted: int = 0
    """Upgrades accepted."""
    connections_denied: int = 0
    """Upgrades refused (404, 401, 403...)."""
    connections_closed: int = 0
    """Accepted connections that have ended, for any reason."""
    messages_dropped: int = 0
    """Published frames not queued for a subscriber over its limit (policy ``"drop"``)."""
    slow_consumer_closes: int = 0
    """Subscribers closed with 1013 over their limit (policy ``"close"``)."""
    handler_errors: int = 0
    """Unexpected handler exceptions (each closed its connection with 1011)."""
    publishes: int = 0
    """Publications made in this process (``server.publish``, ``ws.publish``)."""
    recoveries: int = 0
    """Subscriptions that named a position and got everything after it."""
    recoveries_failed: int = 0
    """Subscriptions that named a position and could not recover (another epoch, a
    history that no longer reaches back, more than ``max_recovery`` missed)."""
    recoveries_limited: int = 0
    """Positions ignored because the client's address was over ``recovery_rate``."""
    recovered_messages: int = 0
    """Publications sent by recoveries."""

    @property
    def connections_open(self) -> int:
        """Connections accepted and not yet closed."""
        return self.connections_accepted - self.connections_closed
