"""Every metric a server exports: its name, kind, help text and labels.

Names are written without the ``trio_wsroutes_`` prefix the exporter adds; counters end
in ``_total``, durations in ``_seconds``, sizes in ``_bytes`` (Prometheus' base units).
Labels take a bounded set of values: route patterns, declared message types, codes and
statuses, never a path, a user, a connection or a topic.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["METRICS", "MetricSpec"]


@attrs.frozen
class MetricSpec:
    """One exported metric: its name (without the ``trio_wsroutes_`` prefix), kind,
    help text and label names."""

    name: str
    kind: str
    """``"counter"``, ``"gauge"`` or ``"histogram"``."""
    help: str
    labels: tuple[str, ...] = ()


def _m(name: str, kind: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, kind, help, labels)


METRICS: Final[tuple[MetricSpec, ...]] = (
    # -- connections
    _m("connections_open", "gauge", "Connections open now.", "route"),
    _m("connections_opened_total", "counter", "Upgrades accepted.", "route"),
    _m(
        "connections_closed_total", "counter", "Connections ended, by close code.", "route", "code"
    ),
    _m(
        "upgrades_denied_total",
        "counter",
        "Upgrade requests refused, by HTTP status and error code.",
        "status",
        "code",
    ),
    _m(
        "upgrade_duration_seconds",
        "histogram",
        "From the upgrade request to the accepted connection (admission, authenticate, accept).",
        "route",
    ),
    # -- messages
    _m(
        "messages_received_total",
        "counter",
        "Messages from clients, by declared type (_other: raw text, binary, invalid or "
        "unknown types, heartbeat envelopes).",
        "route",
        "type",
    ),
    _m(
        "messages_sent_total",
        "counter",
        "Messages to clients, by type (_published: deliveries of publications; "
        "_other: acks, errors, pongs, raw frames).",
        "route",
        "type",
    ),
    _m("received_bytes_total", "counter", "Bytes of messages from clients.", "route"),
    _m("sent_bytes_total", "counter", "Bytes of messages to clients.", "route"),
    _m(
        "error_replies_total",
        "counter",
        "Error envelopes sent, by code (VALIDATION_ERROR, RATE_LIMITED, INTERNAL_ERROR...).",
        "route",
        "code",
    ),
    _m("handler_duration_seconds", "histogram", "Handler run time.", "route", "type"),
    _m(
        "handler_timeouts_total",
        "counter",
        "Handlers stopped by handler_timeout.",
        "route",
        "type",
    ),
    # -- publish and subscribe
    _m("publishes_total", "counter", "Publications made in this process."),
    _m(
        "deliveries_total",
        "counter",
        "Publications queued for subscribers of this process (one per subscriber).",
    ),
    _m(
        "deliveries_dropped_total",
        "counter",
        'Publications not queued for a subscriber over its limit (policy "drop").',
    ),
    _m(
        "slow_consumer_evictions_total",
        "counter",
        'Subscribers closed with 1013 over their limit (policy "close").',
    ),
    _m("subscriptions", "gauge", "Subscriptions of the open connections."),
    _m("topics", "gauge", "Topics with at least one subscriber in this process."),
    _m("outbound_queued_bytes", "gauge", "Bytes queued for clients and not yet written."),
    _m("memory_budget_used_bytes", "gauge", "Bytes held against the memory budget."),
    _m("memory_budget_limit_bytes", "gauge", "The memory budget (0: none)."),
    # -- history
    _m(
        "recoveries_total",
        "counter",
        "Subscriptions that named a position, by result (recovered; not_recovered; "
        "capped: more to send than max_recovery; limited: over recovery_rate).",
        "result",
    ),
    _m("recovered_messages_total", "counter", "Publications sent by recoveries."),
    _m(
        "history_topics",
        "gauge",
        "Topics with history kept in this process' memory (MemoryBroker).",
    ),
    _m(
        "history_publications",
        "gauge",
        "Publications kept in this process' memory (MemoryBroker).",
    ),
    _m(
        "history_bytes",
        "gauge",
        "Payload bytes of the publications kept in this process' memory (MemoryBroker).",
    ),
    # -- the broker between processes (RedisBroker)
    _m("broker_connected", "gauge", "1 while connected to Redis, else 0."),
    _m("broker_reconnects_total", "counter", "Connections to Redis made again after a loss."),
    _m("broker_published_total", "counter", "Messages handed to Redis and acknowledged."),
    _m(
        "broker_publish_lost_total",
        "counter",
        "Messages not carried to other processes (published while disconnected, over the "
        "outbound queue, unacknowledged when the connection failed).",
    ),
    _m("broker_received_total", "counter", "Messages received from other processes."),
    _m(
        "broker_receive_dropped_total",
        "counter",
        "Received messages dropped: the local fan-out queue was full.",
    ),
    _m(
        "broker_missed_total",
        "counter",
        "Messages of other processes that never arrived (gaps in their sequence).",
    ),
    _m(
        "broker_history_resumes_total",
        "counter",
        "Connections closed with 1012 to resume a topic with history: publications on it "
        "were lost on their way to this process.",
    ),
    _m(
        "broker_rejected_total",
        "counter",
        "Received messages and history entries refused, by reason (malformed, oversized, "
        "unauthenticated: failed the signature check, duplicate).",
        "reason",
    ),
    _m(
        "broker_lag_seconds",
        "histogram",
        "From the publish in another process to the delivery here (wall clocks; a negative "
        "difference counts as 0).",
    ),
)
"""Every metric the server exports, in the order of the exposition."""
