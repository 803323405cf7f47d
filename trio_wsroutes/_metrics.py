"""What a server counts about its routes, as plain numbers the engine adds to.

The engine runs in one Trio thread, so counting is ``+= 1`` on slotted objects: no lock,
no label lookup per message. A connection counts its own messages and bytes and adds
them to its route's totals when it ends; the totals of connections still open are read
when someone asks (:meth:`MetricsSource.snapshot`, which the Prometheus exporter, the
admin page and ``server.route_stats`` use). Handler durations go into fixed-bucket
histograms, one per route and message type, made when the route is resolved.

Nothing here imports ``prometheus_client``: the exporter (``_prometheus.py``) turns a
:class:`Snapshot` into Prometheus metric families at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

__all__ = [
    "DURATION_BUCKETS",
    "LAG_BUCKETS",
    "ConnectionCounts",
    "HandlerCounters",
    "Histogram",
    "RouteCounters",
    "RouteStats",
    "ServerCounters",
    "Snapshot",
]

DURATION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the duration histograms: handlers and upgrades."""

LAG_BUCKETS: Final = DURATION_BUCKETS[:-1]
"""Upper bounds (seconds) of the publish-to-delivery lag between processes."""


class Histogram:
    """Counts of observations per bucket (``le`` upper bounds, then ``+Inf``) and their
    sum: what a Prometheus histogram exports."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds: tuple[float, ...] = bounds
        """The buckets' upper bounds, in seconds."""
        self.counts: list[int] = [0] * (len(bounds) + 1)
        """Observations per bucket, not cumulative; the last is over every bound."""
        self.total: float = 0.0
        """The sum of the observations."""

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """How many observations."""
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile (0 to 1), interpolated within its bucket as
        Prometheus' ``histogram_quantile`` does; ``None`` without observations."""
        return quantile(self.bounds, self.counts, q)

    def merged(self, other: Histogram) -> Histogram:
        """A histogram with both sets of observations (same bounds)."""
        merged = Histogram(self.bounds)
        merged.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        merged.total = self.total + other.total
        return merged


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of bucketed observations (see :meth:`Histogram.quantile`)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(bounds):
                return bounds[-1]  # over the last bound: the best known answer
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


class HandlerCounters:
    """One message type of one route: how often it came, how long its handler took,
    how often the handler ran out of time."""

    __slots__ = ("duration", "received", "timeouts")

    def __init__(self) -> None:
        self.received: int = 0
        self.timeouts: int = 0
        self.duration: Histogram = Histogram()


class RouteCounters:
    """One route's running totals. Connections add their own counts when they end;
    everything else is counted where it happens."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "closed",
        "direct_out",
        "errors",
        "handlers",
        "handshake",
        "messages_in",
        "messages_out",
        "open",
        "opened",
        "path",
        "sent",
    )

    def __init__(self, path: str, message_types: Iterable[str] = ()) -> None:
        self.path: str = path
        self.open: int = 0
        self.opened: int = 0
        self.closed: dict[int, int] = {}
        """Connections ended, by close code."""
        self.messages_in: int = 0
        self.bytes_in: int = 0
        self.messages_out: int = 0
        self.direct_out: int = 0
        self.bytes_out: int = 0
        self.handlers: dict[str, HandlerCounters] = {t: HandlerCounters() for t in message_types}
        self.sent: dict[type[Any], int] = {}
        """Messages sent with ``ws.send`` or returned as replies, by class."""
        self.errors: dict[str, int] = {}
        """Error envelopes sent, by code (``VALIDATION_ERROR``, ``RATE_LIMITED``...)."""
        self.handshake: Histogram = Histogram()
        """Seconds from the upgrade request to the accepted connection."""

    def error(self, code: str) -> None:
        """Count an error envelope sent with ``code``."""
        errors = self.errors
        errors[code] = errors.get(code, 0) + 1

    def sent_message(self, cls: type[Any]) -> None:
        """Count a message of class ``cls`` sent directly (not published)."""
        sent = self.sent
        sent[cls] = sent.get(cls, 0) + 1

    def ended(self, counts: ConnectionCounts) -> None:
        """A connection ended: add its counts."""
        self.open -= 1
        code = counts.code if counts.code is not None else 1006
        self.closed[code] = self.closed.get(code, 0) + 1
        self.messages_in += counts.messages_in
        self.bytes_in += counts.bytes_in
        self.messages_out += counts.messages_out
        self.direct_out += counts.direct_out
        self.bytes_out += counts.bytes_out


@attrs.frozen
class ConnectionCounts:
    """What went through one connection so far (for the metrics and the access log)."""

    messages_in: int
    bytes_in: int
    messages_out: int
    """Messages handed over for the client: sent, replies and published ones."""
    direct_out: int
    """Of ``messages_out``, those sent rather than published (``ws.send``, replies,
    errors, pings)."""
    bytes_out: int
    """Bytes of every frame handed over."""
    code: int | None
    """The close code, once closing."""
    closed_by: str
    """``"server"``, ``"client"`` or ``"network"`` once closing, else ``""``."""


class ServerCounters:
    """The server-wide counts besides its routes'."""

    __slots__ = ("denied", "publishes")

    def __init__(self) -> None:
        self.denied: dict[tuple[int, str], int] = {}
        """Upgrades refused, by HTTP status and error code."""
        self.publishes: int = 0
        """``publish`` calls (``server.publish``, ``ws.publish``)."""

    def deny(self, status: int, code: str) -> None:
        """Count a refused upgrade."""
        key = (status, code)
        self.denied[key] = self.denied.get(key, 0) + 1


@attrs.frozen
class RouteStats:
    """One route's numbers, for dashboards (``server.route_stats``): totals since the
    server started, connections still open included."""

    path: str
    """The route's pattern (``/chat/:room``), never a concrete path."""
    connections_open: int
    """Connections open now."""
    connections_opened: int
    """Upgrades accepted."""
    closes: Mapping[int, int]
    """Connections ended, by close code."""
    messages_in: int
    """Messages from clients."""
    bytes_in: int
    """Bytes of messages from clients."""
    messages_out: int
    """Messages handed over for the client: sent, replies and published deliveries."""
    bytes_out: int
    """Bytes of messages to clients."""
    received: Mapping[str, int]
    """Messages from clients, by declared type (``_other``: raw text, binary, invalid or
    unknown types, heartbeat envelopes)."""
    sent: Mapping[str, int]
    """Messages to clients, by type: those sent with ``ws.send`` or as replies by their
    own type, ``_published`` for deliveries of publications, ``_other`` for acks,
    errors, pongs and raw frames."""
    errors: Mapping[str, int]
    """Error envelopes sent, by code."""
    handler_timeouts: Mapping[str, int]
    """Handlers that ran out of ``handler_timeout``, by message type."""
    handler_seconds: Mapping[str, Histogram]
    """Handler durations, by message type."""
    handshake_seconds: Histogram
    """Upgrade durations (admission, ``authenticate``, accept)."""


Snapshot = dict[str, Any]
"""Every metric as plain JSON data: ``{"pid": ..., "time": ..., "metrics": {name: {"kind":
..., "help": ..., "labels": [...], "samples": [[label values..., value]]}}}``, histograms
with ``{"bounds": [...], "counts": [...], "sum": ...}`` as value. Snapshots of several
processes add up (:func:`merge_snapshots`)."""
