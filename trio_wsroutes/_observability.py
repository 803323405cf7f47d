"""What a server tells about itself: its metrics (a :class:`Snapshot` of every number,
for the Prometheus exporter and the admin page), ``server.route_stats``, and the access
log's records.

:class:`Observability` is the server's one place for this. The engine counts into the
:class:`~trio_wsroutes._metrics.RouteCounters` it is handed; this module adds up the
totals of ended connections and the counts of open ones when someone reads them, so a
scrape costs work proportional to the open connections and a message costs a few
integer additions.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._access_log import UserId, access_logger, default_user_id, log_connection, log_denied
from ._http_endpoints import answer_with
from ._metric_catalog import METRICS
from ._metrics import Histogram, RouteCounters, RouteStats, ServerCounters, Snapshot
from ._metrics_sharing import (
    SHARE_INTERVAL,
    WORKERS_METRICS_DIR,
    alive,
    merge_snapshots,
    read_snapshots,
    write_snapshot,
)
from ._request import Request, TrustedProxies

if TYPE_CHECKING:
    from ._broker import Broker
    from ._broker.redis._common import RedisBrokerStats
    from ._engine.connection import Connection
    from ._flow import MemoryBudget
    from ._registry import ConnectionRegistry
    from ._spec import RouteSpec
    from ._stats import ServerStats
    from ._types import Receive, Scope, Send

logger = logging.getLogger("trio_wsroutes")

HTTPAnswer = tuple[int, Sequence[tuple[str, str]], bytes]

__all__ = ["Metrics", "Observability"]


@attrs.frozen
class Metrics:
    """The ``metrics`` option of :class:`~trio_wsroutes.WebSocketServer`: serve the
    server's numbers in the Prometheus text format (needs ``prometheus-client``, the
    ``metrics`` extra: ``pip install 'trio-wsroutes[metrics]'``).

    ``metrics=True`` is ``Metrics()``.
    """

    path: str = "/metrics"
    """Where they are served, on the server's own port (both transports). The ASGI app
    :attr:`WebSocketServer.metrics_app <trio_wsroutes.WebSocketServer.metrics_app>`
    serves them wherever it is mounted."""
    authorize: Callable[[Request], bool | Awaitable[bool]] | None = None
    """Who may read them: called with the HTTP request (its headers, client address);
    a false answer gets 403. ``None``: anyone who can reach the port (put the path
    behind the proxy's own rules, or listen on a private address)."""
    multiprocess_dir: str | os.PathLike[str] | None = None
    """A directory the processes of one deployment share (hypercorn ``--workers``):
    each writes its numbers there every second and a scrape of any of them adds them
    all up. Default: the ``PROMETHEUS_MULTIPROC_DIR`` environment variable, as
    ``prometheus-client``'s multiprocess mode uses it; unset, the workers of
    ``trio-wsroutes serve --native --workers N`` share one their supervisor makes (and
    removes when it stops), and any other process reports only its own."""
    process_metrics: bool = True
    """Also serve ``prometheus-client``'s default registry: the process' CPU and
    memory, the interpreter's, and the application's own metrics."""

    @staticmethod
    def coerce(value: bool | Metrics | None) -> Metrics | None:
        """``True`` -> ``Metrics()``, ``False``/``None`` -> ``None``."""
        if value is None or value is False:
            return None
        if value is True:
            return Metrics()
        if isinstance(value, Metrics):
            return value
        raise TypeError("metrics takes True, False or a Metrics(...)")

    def shared_dir(self) -> Path | None:
        """The directory the processes share their numbers in, if any."""
        chosen = self.multiprocess_dir
        if chosen is None:
            chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if chosen is None:
            # Set by the native workers' supervisor, for its workers only.
            chosen = os.environ.get(WORKERS_METRICS_DIR) or None
        return None if chosen is None else Path(chosen)


class Observability:
    """A server's counters, the numbers read from them, and the access log."""

    def __init__(
        self,
        *,
        registry: ConnectionRegistry,
        stats: ServerStats,
        memory: MemoryBudget,
        broker: Broker | None = None,
        metrics: Metrics | None = None,
        user_id: UserId | None = None,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        if metrics is not None:
            from ._prometheus import check_available

            check_available()
        self._registry = registry
        self._stats = stats
        self._memory = memory
        self._broker = broker
        self._metrics = metrics
        self._shared = None if metrics is None else metrics.shared_dir()
        self._trusted_proxies = trusted_proxies
        self._user_id: UserId = user_id if user_id is not None else default_user_id
        self.server = ServerCounters()
        self.routes: dict[str, RouteCounters] = {}
        """Counters by route pattern."""

    def add_routes(self, specs: Iterable[RouteSpec]) -> None:
        """Make the counters of the server's routes (once, when it first serves)."""
        for spec in specs:
            self.routes[spec.path] = RouteCounters(spec.path, spec.handlers)

    # -- events ------------------------------------------------------------------------

    def denied(self, status: int, code: str, request: Request, route: str | None) -> None:
        """An upgrade was refused."""
        self.server.deny(status, code)
        if access_logger.isEnabledFor(20):
            log_denied(route=route, request=request, status=status, code=code)

    def accepted(self, counters: RouteCounters, started: float) -> None:
        """An upgrade that began at ``started`` (``time.perf_counter()``) was accepted."""
        counters.open += 1
        counters.opened += 1
        counters.handshake.observe(time.perf_counter() - started)

    def ended(self, connection: Connection[Any], counters: RouteCounters) -> None:
        """``connection`` has ended: add its counts to its route's, log it."""
        from ._engine.connection import connection_counts

        counts = connection_counts(connection)
        counters.ended(counts)
        if access_logger.isEnabledFor(20):
            context = connection.context
            log_connection(
                route=counters.path,
                request=context.request,
                connection_id=connection.id,
                user_id=self._user_id(context.user),
                duration=time.time() - context.connected_at.timestamp(),
                counts=counts,
                reason=connection.close_reason,
            )

    # -- reading -----------------------------------------------------------------------

    def route_stats(self) -> dict[str, RouteStats]:
        """Every route's numbers, open connections included."""
        from ._engine.connection import connection_counts
        from ._messages import message_type

        live: dict[str, list[int]] = {path: [0, 0, 0, 0, 0] for path in self.routes}
        for connection in self._registry.all():
            totals = live.get(connection.path)
            if totals is None:
                continue
            counts = connection_counts(connection)
            totals[0] += counts.messages_in
            totals[1] += counts.bytes_in
            totals[2] += counts.messages_out
            totals[3] += counts.direct_out
            totals[4] += counts.bytes_out
        out: dict[str, RouteStats] = {}
        for path, c in self.routes.items():
            messages_in, bytes_in, messages_out, direct_out, bytes_out = live[path]
            messages_in += c.messages_in
            messages_out += c.messages_out
            direct_out += c.direct_out
            received = {t: h.received for t, h in c.handlers.items()}
            received["_other"] = max(0, messages_in - sum(received.values()))
            sent: dict[str, int] = {}
            for cls, count in c.sent.items():
                wire = message_type(cls) or cls.__qualname__
                sent[wire] = sent.get(wire, 0) + count
            sent["_published"] = max(0, messages_out - direct_out)
            sent["_other"] = max(0, direct_out - sum(c.sent.values()))
            out[path] = RouteStats(
                path=path,
                connections_open=c.open,
                connections_opened=c.opened,
                closes=dict(c.closed),
                messages_in=messages_in,
                bytes_in=bytes_in + c.bytes_in,
                messages_out=messages_out,
                bytes_out=bytes_out + c.bytes_out,
                received=received,
                sent=sent,
                errors=dict(c.errors),
                handler_timeouts={t: h.timeouts for t, h in c.handlers.items()},
                handler_seconds={t: h.duration for t, h in c.handlers.items()},
                handshake_seconds=c.handshake,
            )
        return out

    def snapshot(self) -> Snapshot:
        """Every metric of :data:`METRICS`, as plain data (see
        :data:`~trio_wsroutes._metrics.Snapshot`)."""
        stats = self._stats
        samples: dict[str, list[list[Any]]] = {spec.name: [] for spec in METRICS}

        def add(name: str, *values: Any) -> None:
            samples[name].append(list(values))

        deliveries = 0
        for path, route in self.route_stats().items():
            deliveries += route.sent["_published"]
            add("connections_open", path, route.connections_open)
            add("connections_opened_total", path, route.connections_opened)
            for close_code, count in sorted(route.closes.items()):
                add("connections_closed_total", path, str(close_code), count)
            add("upgrade_duration_seconds", path, _histogram(route.handshake_seconds))
            for kind, count in route.received.items():
                add("messages_received_total", path, kind, count)
            for kind, count in route.sent.items():
                add("messages_sent_total", path, kind, count)
            add("received_bytes_total", path, route.bytes_in)
            add("sent_bytes_total", path, route.bytes_out)
            for error_code, count in sorted(route.errors.items()):
                add("error_replies_total", path, error_code, count)
            for kind, histogram in route.handler_seconds.items():
                add("handler_duration_seconds", path, kind, _histogram(histogram))
                add("handler_timeouts_total", path, kind, route.handler_timeouts[kind])
        for (status, code), count in sorted(self.server.denied.items()):
            add("upgrades_denied_total", str(status), code, count)
        connections = self._registry.all()
        topics: set[str] = set()
        subscriptions = 0
        queued = 0
        for connection in connections:
            mine = connection.topics
            subscriptions += len(mine)
            topics |= mine
            queued += connection.buffered_amount
        add("publishes_total", stats.publishes)
        add("deliveries_total", deliveries)
        add("deliveries_dropped_total", stats.messages_dropped)
        add("slow_consumer_evictions_total", stats.slow_consumer_closes)
        add("subscriptions", subscriptions)
        add("topics", len(topics))
        add("outbound_queued_bytes", queued)
        add("memory_budget_used_bytes", self._memory.used)
        add("memory_budget_limit_bytes", self._memory.limit or 0)
        broker = self._broker
        capped = _count(broker, "recoveries_capped")
        add("recoveries_total", "recovered", stats.recoveries)
        add("recoveries_total", "not_recovered", max(0, stats.recoveries_failed - capped))
        add("recoveries_total", "capped", capped)
        add("recoveries_total", "limited", stats.recoveries_limited)
        add("recovered_messages_total", stats.recovered_messages)
        if hasattr(broker, "history_publications"):
            read_topics = getattr(broker, "history_topics", None)
            add("history_topics", read_topics() if callable(read_topics) else 0)
            add("history_publications", _count(broker, "history_publications"))
            add("history_bytes", _count(broker, "history_bytes"))
        redis = _redis_stats(broker)
        if redis is not None:
            add("broker_connected", 1 if redis.connects > redis.disconnects else 0)
            add("broker_reconnects_total", max(0, redis.connects - 1))
            add("broker_published_total", redis.published)
            add("broker_publish_lost_total", redis.publish_lost)
            add("broker_received_total", redis.received)
            add("broker_receive_dropped_total", redis.receive_dropped)
            add("broker_missed_total", redis.missed)
            add("broker_history_resumes_total", redis.history_resumes)
            add("broker_rejected_total", "malformed", redis.malformed)
            add("broker_rejected_total", "oversized", redis.oversized)
            add("broker_rejected_total", "unauthenticated", redis.unauthenticated)
            add("broker_rejected_total", "duplicate", redis.duplicates)
            add("broker_lag_seconds", _histogram(redis.lag))
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "metrics": {
                spec.name: {
                    "kind": spec.kind,
                    "help": spec.help,
                    "labels": list(spec.labels),
                    "samples": samples[spec.name],
                }
                for spec in METRICS
            },
        }

    def broker_metrics(self) -> Snapshot:
        """The broker's own metrics (``broker.metrics()``, if it has that method)."""
        read = getattr(self._broker, "metrics", None)
        return {} if read is None else read()

    # -- serving -----------------------------------------------------------------------

    def scrape(self) -> Snapshot:
        """This process' snapshot, or with a shared directory every process' added up
        (this one's written first, so it is never a second behind)."""
        mine = self.snapshot()
        shared = self._shared
        if shared is None:
            return mine
        write_snapshot(shared, mine)
        return merge_snapshots(read_snapshots(shared), alive)

    async def start_sharing(self, nursery: trio.Nursery) -> None:
        """Startup hook: write this process' numbers to the shared directory every
        :data:`SHARE_INTERVAL` seconds until the server stops."""
        shared = self._shared
        assert shared is not None
        shared.mkdir(parents=True, exist_ok=True)

        async def share() -> None:
            try:
                while True:
                    snapshot = self.snapshot()
                    await trio.to_thread.run_sync(write_snapshot, shared, snapshot)
                    await trio.sleep(SHARE_INTERVAL)
            finally:
                # A process that stops cleanly keeps its counters in the total and
                # drops its gauges at once (its connections are gone).
                with contextlib.suppress(OSError):
                    write_snapshot(shared, self.snapshot(), ended=True)

        nursery.start_soon(share)

    async def http_answer(self, request: Request) -> HTTPAnswer:
        """The answer to a request for the metrics: 200 with the text exposition, or
        403 if ``Metrics.authorize`` says no."""
        from ._prometheus import render

        metrics = self._metrics
        assert metrics is not None
        if self._trusted_proxies is not None:
            self._trusted_proxies.apply(request)
        authorize = metrics.authorize
        if authorize is not None:
            try:
                allowed = authorize(request)
                if inspect.isawaitable(allowed):
                    allowed = await allowed
            except Exception:
                logger.exception("Metrics.authorize failed; refusing the scrape")
                allowed = False
            if not allowed:
                return 403, [("content-type", "text/plain; charset=utf-8")], b"Forbidden"
        body, content_type = render(self.scrape(), process_metrics=metrics.process_metrics)
        return 200, [("content-type", content_type), ("cache-control", "no-store")], body

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The metrics as an ASGI app (``server.metrics_app``)."""
        await answer_with(self.http_answer, scope, send)


def _count(broker: object, name: str) -> int:
    found = getattr(broker, name, 0)
    return found if isinstance(found, int) else 0


def _redis_stats(broker: object) -> RedisBrokerStats | None:
    if "trio_wsroutes._broker.redis._common" not in sys.modules:
        return None  # not loaded: the broker cannot be a RedisBroker
    from ._broker.redis._common import RedisBrokerStats

    stats = getattr(broker, "stats", None)
    return stats if isinstance(stats, RedisBrokerStats) else None


def _histogram(histogram: Histogram) -> dict[str, Any]:
    return {
        "bounds": list(histogram.bounds),
        "counts": list(histogram.counts),
        "sum": histogram.total,
    }
