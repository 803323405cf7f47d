"""``WebSocketServer``: the server's public face.

Routes and options, publishing and the registry, the ASGI entry point, and serving under
hypercorn or natively. The work itself lives elsewhere, one concern per module:
admission in ``_admission.py``, the connection engine in ``_engine/``, the lifespan
in ``_lifespan.py``, serving and shutdown in ``_serving.py``, the transports in
``_transports/``.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import trio

from ._access_log import UserId, default_user_id
from ._admin import Admin, AdminSite
from ._admission import Admission, Admitted, cookie_routes_without_policy
from ._broker import Broker, MemoryBroker
from ._codes import CloseCode
from ._engine import Connection, close_now, new_context, run_connection, token_refresh
from ._flow import DEFAULT_RECOVERY_RATE, MemoryBudget, RecoveryLimiter
from ._frames import Frame
from ._handlers import SubscribeCheck
from ._history import History, HistoryPage, HistoryPolicy, Position
from ._http_endpoints import HTTPEndpoints
from ._lifespan import ShutdownHook, StartupHook, run_lifespan
from ._messages import check_declared, encode_message
from ._metrics import RouteCounters, RouteStats
from ._observability import Metrics, Observability
from ._origins import OriginPolicy
from ._paths import Router
from ._presence import (
    Presence,
    PresenceBroker,
    PresenceEntry,
    PresencePolicy,
    PresenceStats,
    PresenceTracker,
)
from ._registry import ConnectionRegistry
from ._request import Request, TrustedProxies
from ._routes import ServerDefaults, WebSocketRoute, resolve_route
from ._serving import BoundAddress as BoundAddress
from ._serving import serve_natively, serve_under_hypercorn
from ._spec import EngineOptions, RateLimit, RouteSpec, SlowConsumerPolicy, TokenRefreshTiming
from ._stats import ServerStats
from ._transports import Transport, TransportClosed
from ._types import ASGIApp, Receive, Scope, Send
from ._users import Users

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from ._tracing import Tracing
    from ._transports.native import NativeOptions, PlainHTTP, ServeWebSocket

__all__ = ["ASGIApp", "BoundAddress", "WebSocketServer", "native_endpoints"]

logger = logging.getLogger("trio_wsroutes")

ServerT = TypeVar("ServerT")

MiB = 1024 * 1024


class WebSocketServer:
    """Typed WebSocket routes as one ASGI application, beside an optional HTTP app.

    ::

        server = WebSocketServer([chat], http_app=starlette_app)

    Two ways to serve it, with the same routes and handlers:

    * **under hypercorn** (the ASGI app): ``hypercorn --worker-class trio module:server``
      or ``await server.serve(host, port)``. Shares one port with ``http_app``.
    * **native**: ``await server.serve_native(host, port)``, the server's own WebSocket
      server over Trio streams (the ``websockets`` protocol; TCP or TLS). WebSocket
      only (a plain HTTP request gets 426 on a route's path, 404 elsewhere), and
      everything hypercorn cannot do: the client's close code in ``on_close``,
      ping/pong heartbeats, cancellable sends (slow consumers evicted at once, shutdown
      that never waits on a client), 1009 before a payload is read, shared compression,
      fast fan-out. See the transports guide.

    WebSocket requests go to the matching route (an unknown path is denied with HTTP
    404 before the upgrade); HTTP and lifespan events go to ``http_app`` (or get a 404).

    Options:

    * ``max_payload_length``: largest inbound message in bytes (16 MiB); bigger closes
      with 1009.
    * ``idle_timeout``: seconds without traffic before the connection is closed with 1000
      (``"idle timeout"``; 120; ``None`` for never). Traffic is a frame from the client
      (pongs included, where the transport sees them) or a message to it, so a client
      that only reads stays, and with the native heartbeat a live client stays anyway.
    * ``backpressure_limit``: bytes queued for one client before ``ws.send`` waits and
      publishes evict it with 1013 (16 MiB).
    * ``compression``: permessage-deflate when the client offers it (on by default);
      ``False`` refuses it. Native: ``True`` is ``"shared"`` (``server_no_context_takeover``:
      each message is compressed once for all its recipients); ``"context_takeover"``
      keeps a compressor per connection (better ratio, a compression per recipient and
      more memory). Under hypercorn, wsproto compresses each message on its own
      (``server_no_context_takeover``, whatever the mode), and ``False`` works on
      hypercorn 0.17 and 0.18 (a checked patch; see the guide).
    * ``heartbeat_interval``: seconds without a frame from the peer before the server
      pings it (20; ``None`` turns pings off); a peer that then sends nothing (no pong)
      for ``heartbeat_timeout`` seconds is closed (1011, ``"heartbeat timeout"``). On the
      native transport. ASGI has no pings: under hypercorn, its own
      ``websocket_ping_interval`` setting sends them (``hypercorn_config``), and the app
      never sees the pongs; use :meth:`WebSocketRoute.heartbeat` for dead-peer
      detection there.
    * ``heartbeat_timeout``: seconds to wait for an answer to a ping (20; native).
    * ``rate_limit``: a :class:`RateLimit` for routes without their own
      :meth:`WebSocketRoute.rate_limit`.
    * ``allowed_origins``: accepted ``Origin`` values: exact origins,
      ``https://*.example.com`` patterns, ``"self"`` (the server's own origin), or
      ``"*"``; a disallowed origin is denied with 403 before the upgrade. ``None``
      (default) checks nothing. Routes may override it with
      :meth:`WebSocketRoute.allowed_origins`.
    * ``require_origin``: also deny requests without ``Origin`` (non-browser clients).
    * ``trusted_proxies``: proxy addresses or networks (``"10.0.0.0/8"``, ``"*"``) whose
      ``Forwarded`` / ``X-Forwarded-For`` / ``X-Forwarded-Proto`` headers are believed for
      ``request.client`` and ``request.scheme``; ignored from anyone else. Pass a
      :class:`TrustedProxies` to name the one header your proxy writes (``header=``;
      with the default ``"auto"``, a request carrying both is believed for neither).
    * ``broker``: the topic broker (:class:`MemoryBroker` by default;
      :class:`RedisBroker` shares topics between processes and hosts). A broker with a
      ``run`` method is run during the lifespan, started before the startup hooks.
    * ``slow_consumer_policy``: ``"close"`` (default) closes a subscriber with 1013 when a
      publish would take its queue over ``backpressure_limit``; ``"drop"`` drops that
      message for it alone. Counted in :attr:`stats`.
    * ``max_queued_messages`` (16) and ``max_queued_bytes`` (1 MiB): inbound messages,
      and bytes, queued per connection for its handlers before the server stops
      reading from it (one message always fits, up to ``max_payload_length``).
    * ``memory_budget``: bytes the server may hold for all connections together in
      inbound queues, outboxes and subscriptions, and for the history the broker keeps
      in memory (256 MiB; ``None`` for no limit). A frame queued for many connections
      counts once. Over it, a publish applies the slow-consumer policy to subscribers
      that are behind, ``ws.send`` waits on connections with something queued, readers
      of connections with queued input wait, and new subscriptions are refused
      (``TOO_MANY_TOPICS``). One connection's worst case by default is
      about ``max_payload_length`` being read, plus ``max_queued_bytes`` (or one
      message) queued, plus ``backpressure_limit`` waiting to go out.
    * ``max_query_params``: query parameters accepted on an upgrade (100); more is
      denied with 400 before anything parses them.
    * ``close_timeout``: seconds a closing connection may take to flush, and
      ``on_close`` may take to run (5); also the grace period of a shutdown.
    * ``max_connections``: open connections (plus upgrades being admitted, and
      connections still closing) beyond which
      upgrades are denied with 503 ``SERVER_BUSY`` and ``Retry-After: 1`` (no limit).
    * ``max_connections_per_ip``: the same per client address (``request.client``,
      proxy-aware), denied with 429 ``TOO_MANY_CONNECTIONS`` (no limit).
    * ``handler_timeout``: seconds a message handler may run before it is cancelled and
      the client gets ``HANDLER_TIMEOUT`` (no limit; routes may set their own).
    * ``max_topics_per_connection`` (1000) and ``max_topic_length`` (256): beyond them
      ``ws.subscribe`` raises ``MessageError`` (``TOO_MANY_TOPICS``, ``INVALID_TOPIC``).
    * ``handshake_timeout``: seconds a client has to send its whole upgrade request on
      the native transport (10; hypercorn drops incomplete requests after its own
      ``keep_alive_timeout``, 5 s by default), TLS handshake included (under
      :meth:`serve` too: hypercorn's ``ssl_handshake_timeout``, unless
      ``hypercorn_config`` sets it).
    * ``max_pending_handshakes``: connections that may be in their TLS or HTTP
      handshake at once, not yet admitted (256; ``None`` for no limit). Native: past
      it the server stops accepting (new connections wait in the kernel's backlog)
      until one finishes, or drops the oldest once it has been pending for 2 s. Under
      hypercorn, it bounds the TLS handshakes in progress the same way, and four times
      as many connections may wait for their ClientHello (the oldest is dropped past
      that). Each handshake costs at most about 75 KiB (TLS state and a 16 KiB request
      head): about 20 MiB at the default, whatever ``max_connections`` is. A TLS
      client's state is made only once its ClientHello has arrived whole. A request
      line and headers over 16 KiB get 431.
    * ``forbid_unknown_keys``: refuse keys that are not fields of a client message, each
      a ``VALIDATION_ERROR`` detail on its own path (``False``: ignored, as Zod does);
      routes may set their own with :meth:`WebSocketRoute.forbid_unknown_keys`.
    * ``authorize_subscribe``: ``fn(ws, topic, ctx) -> bool`` (sync or async) deciding
      every ``ws.subscribe`` of routes without their own
      :meth:`WebSocketRoute.authorize_subscribe`; a refusal raises ``MessageError``
      (``FORBIDDEN_TOPIC``). None by default: any topic a handler subscribes to.
    * ``history``: topic patterns (``fnmatch``) mapped to :class:`History` (``{"room:*":
      History(size=100, ttl=300)}``), or a :class:`HistoryPolicy`: publications on those
      topics carry ``topic``, ``offset`` and ``epoch``, are kept, and a reconnecting
      client recovers what it missed (see :meth:`Connection.subscribe`). The broker
      keeps the history (:class:`RedisBroker`: in Redis, for every worker), bounded per
      topic (:class:`History`) and, in memory, for all topics together
      (:class:`HistoryPolicy`: 64 MiB by default, counted in ``memory_budget``).
    * ``max_recovery``: publications one recovery sends at most (300, the history
      policy's default); a client that missed more gets ``recovered=False`` and nothing
      old, so the app sends it a snapshot.
    * ``user_id``: ``fn(ctx.user)`` giving the id (``str`` or ``int``) of a connection's
      user, for the access log, presence, :meth:`disconnect` and the like (default: ``user.id``, or
      the user itself when it is a string or an integer).
    * ``refresh_before`` (30) and ``refresh_grace`` (10): for users whose credentials
      expire (``authenticate`` returned :class:`Authenticated`), seconds before the expiry
      at which the server asks the client for a new token (half the remaining lifetime
      when that is shorter), and seconds the client then has to send a valid one (at
      least until the expiry); routes may set their own with
      :meth:`WebSocketRoute.token_refresh`. See the authentication guide.
    * ``recovery_rate``: a :class:`RateLimit` on what recoveries send to one client
      address (``request.client``, proxy-aware): publications per second (with its
      ``burst``) and bytes per second. A recovery that finds the allowance spent
      recovers nothing (``recovered=False``), so a client that reconnects in a loop
      cannot multiply the server's output. Default: 2000 publications a second (burst
      4000) and 8 MiB a second per address; ``None`` for no limit. Behind a proxy, set
      ``trusted_proxies`` so that clients are told apart.
    * ``metrics``: serve the server's numbers for Prometheus at ``/metrics`` on its own
      port (both transports): ``True`` or a :class:`Metrics` (path, who may read them,
      a directory shared by worker processes). Needs the ``metrics`` extra. Off by
      default; :attr:`route_stats` counts either way.
    * ``tracing``: OpenTelemetry spans (needs ``opentelemetry-api``, the ``tracing``
      extra) of upgrades, handled messages and, with :class:`RedisBroker`, publications
      between processes: ``True`` uses the global tracer provider, or pass a
      ``TracerProvider``. Off by default (nothing imported, nothing recorded). See the
      tracing guide.
    * ``admin``: an :class:`Admin` serves a live admin page at its ``path`` (both
      transports) to those its ``authenticate`` function lets in: connections, message
      rates, handler latencies, memory, topics, the slowest consumers, and a Close
      button. Nothing is served without it (the default). See the admin page guide.
    * ``presence``: topic patterns (``fnmatch``) mapped to :class:`Presence`
      (``{"room:*": Presence(info=fn, events=True)}``), or a :class:`PresencePolicy`: a
      connection subscribed to such a topic is listed with its user id and info, for
      :meth:`presence` and :meth:`presence_stats` on every worker, and with ``events``
      the topic's subscribers get ``presence_join`` / ``presence_leave`` once per user.
      See the "Presence and users" guide.
    """

    def __init__(
        self,
        routes: Iterable[WebSocketRoute[Any, Any]] = (),
        http_app: ASGIApp | None = None,
        *,
        max_payload_length: int = 16 * MiB,
        idle_timeout: float | None = 120.0,
        compression: bool | Literal["shared", "context_takeover"] = True,
        backpressure_limit: int = 16 * MiB,
        heartbeat_interval: float | None = 20.0,
        heartbeat_timeout: float = 20.0,
        allowed_origins: Iterable[str] | None = None,
        require_origin: bool = False,
        trusted_proxies: Iterable[str] | TrustedProxies | None = None,
        broker: Broker | None = None,
        slow_consumer_policy: SlowConsumerPolicy = "close",
        max_queued_messages: int = 16,
        max_queued_bytes: int = 1 * MiB,
        memory_budget: int | None = 256 * MiB,
        max_query_params: int = 100,
        close_timeout: float = 5.0,
        rate_limit: RateLimit | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        handler_timeout: float | None = None,
        max_topics_per_connection: int = 1000,
        max_topic_length: int = 256,
        handshake_timeout: float = 10.0,
        max_pending_handshakes: int | None = 256,
        history: Mapping[str, History] | HistoryPolicy | None = None,
        max_recovery: int | None = None,
        recovery_rate: RateLimit | None = DEFAULT_RECOVERY_RATE,
        forbid_unknown_keys: bool = False,
        authorize_subscribe: SubscribeCheck[Any, Any] | None = None,
        metrics: bool | Metrics | None = None,
        user_id: UserId | None = None,
        tracing: bool | TracerProvider | None = None,
        admin: Admin | None = None,
        presence: Mapping[str, Presence] | PresencePolicy | None = None,
        refresh_before: float = 30.0,
        refresh_grace: float = 10.0,
    ) -> None:
        if any(
            limit is not None and limit < 1
            for limit in (
                max_connections,
                max_connections_per_ip,
                max_topics_per_connection,
                max_pending_handshakes,
            )
        ) or (handler_timeout is not None and not handler_timeout > 0):
            raise ValueError("connection limits and timeouts must be positive")
        if (
            max_payload_length < 1
            or backpressure_limit < 1
            or max_queued_messages < 1
            or max_queued_bytes < 1
            or (memory_budget is not None and memory_budget < 1)
        ):
            raise ValueError("size limits must be positive")
        if slow_consumer_policy not in ("close", "drop"):
            raise ValueError('slow_consumer_policy is "close" or "drop"')
        if compression not in (True, False, "shared", "context_takeover"):
            raise ValueError('compression is True, False, "shared" or "context_takeover"')
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive (or None)")
        if not heartbeat_timeout > 0:
            raise ValueError("heartbeat_timeout must be positive")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError("rate_limit takes a RateLimit(messages_per_second, ...)")
        if recovery_rate is not None and not isinstance(recovery_rate, RateLimit):
            raise TypeError("recovery_rate takes a RateLimit(messages_per_second, ...)")
        if max_recovery is not None and (type(max_recovery) is not int or max_recovery < 1):
            raise ValueError("max_recovery must be an integer >= 1 (or None)")
        if admin is not None and not isinstance(admin, Admin):
            raise TypeError("admin takes an Admin(authenticate=...)")
        self.token_refresh: TokenRefreshTiming = TokenRefreshTiming(refresh_before, refresh_grace)
        """The ``refresh_before`` and ``refresh_grace`` options."""
        self.router: Router[WebSocketRoute[Any, Any]] = Router(routes)
        """The routes by path (``router.match("/chat/general")``)."""
        self.http_app: ASGIApp | None = http_app
        self.compression: bool | Literal["shared", "context_takeover"] = compression
        self.heartbeat_interval: float | None = heartbeat_interval
        self.heartbeat_timeout: float = heartbeat_timeout
        self.origin_policy: OriginPolicy | None = (
            None
            if allowed_origins is None and not require_origin
            else OriginPolicy(allowed_origins or ("*",), require=require_origin)
        )
        self.trusted_proxies: TrustedProxies | None = (
            None if trusted_proxies is None else TrustedProxies(trusted_proxies)
        )
        self.max_query_params: int = max_query_params
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        configure_limit = getattr(self.broker, "configure_payload_limit", None)
        if configure_limit is not None:
            # What a broker carries between processes is bounded like what clients send.
            configure_limit(max_payload_length)
        self.memory: MemoryBudget = MemoryBudget(memory_budget)
        """Bytes the server holds for all connections and the history it keeps in memory
        (``memory.used``), and the ``memory_budget`` it holds them to (``memory.limit``)."""
        configure_memory = getattr(self.broker, "configure_memory", None)
        if configure_memory is not None:
            configure_memory(self.memory)  # history kept in memory counts in the budget
        self.history_policy: HistoryPolicy | None = HistoryPolicy.coerce(
            history, max_recovery=max_recovery
        )
        """Which topics keep history (the ``history`` option), or ``None``."""
        if self.history_policy is not None:
            configure = getattr(self.broker, "configure_history", None)
            if configure is None:
                raise TypeError(f"{type(self.broker).__name__} cannot keep history")
            configure(self.history_policy)
        self._recoveries = RecoveryLimiter(recovery_rate)
        self._user_id: UserId = user_id if user_id is not None else default_user_id
        self.presence_policy: PresencePolicy | None = PresencePolicy.coerce(presence)
        """Which topics list who is in them (the ``presence`` option), or ``None``."""
        self._presence: PresenceTracker | None = None
        if self.presence_policy is not None:
            configure_presence = getattr(self.broker, "configure_presence", None)
            if configure_presence is None:
                raise TypeError(f"{type(self.broker).__name__} cannot keep presence")
            configure_presence(self.presence_policy)
            presence_broker = cast("PresenceBroker", self.broker)
            self._presence = PresenceTracker(self.presence_policy, presence_broker, self._user_id)
        self.registry: ConnectionRegistry = ConnectionRegistry(user_id=self._user_id)
        """Every open connection: ``all()``, ``filter()``, ``get()``, ``by_user_id()``,
        ``broadcast()``."""
        self._users = Users(self.registry, self.broker)
        self.stats: ServerStats = ServerStats()
        """Running counters: connections, slow-consumer drops and closes, handler errors."""
        self.options: EngineOptions = EngineOptions(
            max_payload_length=max_payload_length,
            idle_timeout=idle_timeout,
            backpressure_limit=backpressure_limit,
            max_queued_messages=max_queued_messages,
            max_queued_bytes=max_queued_bytes,
            close_timeout=close_timeout,
            slow_consumer_policy=slow_consumer_policy,
            max_topics_per_connection=max_topics_per_connection,
            max_topic_length=max_topic_length,
        )
        """The per-connection limits."""
        self.rate_limit: RateLimit | None = rate_limit
        self.forbid_unknown_keys: bool = forbid_unknown_keys
        self.authorize_subscribe: SubscribeCheck[Any, Any] | None = authorize_subscribe
        self.handler_timeout: float | None = handler_timeout
        self.handshake_timeout: float = handshake_timeout
        self.max_pending_handshakes: int | None = max_pending_handshakes
        self.max_connections: int | None = max_connections
        self.max_connections_per_ip: int | None = max_connections_per_ip
        self.metrics: Metrics | None = Metrics.coerce(metrics)
        """Where and to whom the Prometheus metrics are served (the ``metrics`` option),
        or ``None``."""
        self._observability = Observability(
            registry=self.registry,
            stats=self.stats,
            memory=self.memory,
            broker=self.broker,
            metrics=self.metrics,
            user_id=self._user_id,
            trusted_proxies=self.trusted_proxies,
        )
        self._tracing: Tracing | None = None
        if tracing is not None and tracing is not False:
            from ._tracing import Tracing

            self._tracing = Tracing.of(tracing, self.broker)
        self._admission: Admission | None = None
        self._startup_hooks: list[StartupHook] = []
        if self.metrics is not None and self.metrics.shared_dir() is not None:
            self._startup_hooks.append(self._observability.start_sharing)
        self._shutdown_hooks: list[ShutdownHook] = []
        self._trio_token: trio.lowlevel.TrioToken | None = None
        # Plain HTTP the server answers itself, on both transports.
        self._http = HTTPEndpoints()
        if self.metrics is not None:
            self._http.add(self.metrics.path, self._observability.http_answer)
        self.admin: Admin | None = admin
        """Who may see the admin page, and where (the ``admin`` option), or ``None``."""
        self._admin_site: AdminSite | None = None
        if admin is not None:
            site = self._admin_site = AdminSite(
                admin,
                self,
                user_id=self._user_id,
                trusted_proxies=self.trusted_proxies,
            )
            self._http.add(admin.path, site.page)
            self._startup_hooks.append(site.run)
        _contain_hypercorn_failures()

    @property
    def routes(self) -> list[WebSocketRoute[Any, Any]]:
        """The routes, in registration order."""
        return list(self.router.routes)

    def _admitter(self) -> Admission:
        """The admission checks over the routes' specs, resolved (and the routes frozen)
        the first time the server serves anything."""
        admission = self._admission
        if admission is None:
            defaults = ServerDefaults(
                options=self.options,
                origin_policy=self.origin_policy,
                rate_limit=self.rate_limit,
                handler_timeout=self.handler_timeout,
                heartbeat_interval=self.heartbeat_interval,
                heartbeat_timeout=self.heartbeat_timeout,
                forbid_unknown_keys=self.forbid_unknown_keys,
                authorize_subscribe=self.authorize_subscribe,
                token_refresh=self.token_refresh,
            )
            specs = {route: resolve_route(route, defaults) for route in self.router.routes}
            router, admitted = self.router, specs
            site = self._admin_site
            if site is not None:  # served, but not one of the application's routes
                router = site.router(self.router.routes)
                admitted = {**specs, site.route: resolve_route(site.route, defaults)}
            for path in cookie_routes_without_policy(list(specs.values())):
                logger.warning(
                    "route %s authenticates with a cookie and has no allowed_origins: it "
                    "accepts upgrades from its own origin only (set allowed_origins to "
                    "accept others)",
                    path,
                )
            admission = self._admission = Admission(
                router,
                admitted,
                stats=self.stats,
                trusted_proxies=self.trusted_proxies,
                max_query_params=self.max_query_params,
                max_connections=self.max_connections,
                max_connections_per_ip=self.max_connections_per_ip,
                on_denied=self._observability.denied
                if self._tracing is None
                else self._tracing.on_denied(self._observability.denied),
            )
            self._observability.add_routes(specs.values())
        return admission

    # -- publishing from anywhere in the server's Trio run -----------------------------

    @overload
    async def publish(
        self, topic: str, message: ServerT, *, route: WebSocketRoute[Any, ServerT]
    ) -> int: ...

    @overload
    async def publish(self, topic: str, message: object) -> int: ...

    async def publish(
        self, topic: str, message: object, *, route: WebSocketRoute[Any, Any] | None = None
    ) -> int:
        """Publish a ``@message`` instance to every subscriber of ``topic``.

        Encoded once; never waits on a slow subscriber. Returns the local recipient count.
        A cancellation point; with the in-memory broker it yields to the scheduler only
        every 16th publish (or 4096th delivery), so that publishes made together are
        written together (see "Trade-offs" in the architecture guide). Pass ``route=`` to
        have type checkers (and a runtime check) hold ``message`` to that route's
        :meth:`~WebSocketRoute.server_messages`.
        """
        if route is not None:
            check_declared(message, route.server_message_types, route.path)
        self.stats.publishes += 1
        return await self.broker.publish(topic, encode_message(message))

    async def publish_binary(self, topic: str, data: bytes) -> int:
        """Publish a binary frame to every subscriber of ``topic``."""
        self.stats.publishes += 1
        return await self.broker.publish(topic, Frame(bytes(data), binary=True))

    async def history(
        self, topic: str, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read ``topic``'s kept publications, oldest first, with its latest position.

        Without ``since``: the last ``limit`` publications (all kept ones without
        ``limit``). With ``since``: the first ``limit`` after it, or none and
        ``recovered=False`` when the epoch differs or the history no longer reaches back.
        ``page.position`` is where the topic stands even when nothing is kept, so an app
        can send a snapshot of its own state with the position it corresponds to. Raises
        ``ValueError`` if ``topic`` keeps no history.
        """
        return await self.broker.history(topic, since=since, limit=limit)

    async def presence(self, topic: str) -> list[PresenceEntry]:
        """Who is in ``topic``, on every worker sharing the broker: one
        :class:`PresenceEntry` (connection id, user id, info) per listed connection, in
        no particular order. Raises ``ValueError`` if ``topic`` has no presence."""
        return await self._presence_tracker(topic).entries(topic)

    async def presence_stats(self, topic: str) -> PresenceStats:
        """How many connections and distinct users are in ``topic``, on every worker
        (cheap: two counters in Redis). Raises ``ValueError`` if ``topic`` has no
        presence."""
        return await self._presence_tracker(topic).stats(topic)

    def _presence_tracker(self, topic: str) -> PresenceTracker:
        tracker = self._presence
        if tracker is None:
            raise ValueError(f"topic {topic!r} has no presence (see the server's presence option)")
        return tracker

    @property
    def route_stats(self) -> dict[str, RouteStats]:
        """Each route's numbers since the server started, by route pattern: connections
        open, opened and closed (by code), messages and bytes each way, messages by type,
        error replies by code, handler durations and timeouts, upgrade durations. The
        same numbers the ``/metrics`` endpoint exports (without the ``metrics`` option
        too)."""
        self._admitter()
        return self._observability.route_stats()

    @property
    def metrics_app(self) -> ASGIApp:
        """An ASGI app that serves the Prometheus metrics at any path (``GET`` and
        ``HEAD``), for mounting in an application of one's own
        (``Mount("/metrics", server.metrics_app)`` in Starlette). Subject to
        ``Metrics.authorize``; needs the ``metrics`` option."""
        if self.metrics is None:
            raise RuntimeError("metrics_app needs WebSocketServer(metrics=True)")
        return self._observability.asgi

    # -- acting on users, in every process -------------------------------------------

    async def disconnect(
        self, *, user: str | int, code: int = CloseCode.FORBIDDEN, reason: str = ""
    ) -> int:
        """Close every connection of ``user`` (a user id: what the ``user_id`` option
        gives for ``ctx.user``), in this process and, through the broker, in every other
        (:class:`RedisBroker`); returns how many were closed here.

        The close goes out at once (what is queued for them is dropped), with ``code``:
        by default 3003 (:attr:`CloseCode.FORBIDDEN`), after which the clients of this
        package do not reconnect. ``code`` is 1000, 1001, 1008, 1011, 1012, 1013 or
        3000-4999; ``reason`` at most 123 bytes of UTF-8. To keep the user out, also
        refuse them in ``authenticate``.
        """
        return await self._users.disconnect(user, code, reason)

    async def subscribe(self, *, user: str | int, topic: str) -> int:
        """Subscribe every connection of ``user`` (a user id) to ``topic``, in this
        process and every other; returns how many were subscribed here.

        The server decides: ``authorize_subscribe`` is not asked; the limits
        (``max_topics_per_connection``, ``max_topic_length``, ``memory_budget``) apply,
        and a connection that hits one is left as it is (logged). Connections the user
        opens later are not subscribed: subscribe them in ``on_connect``.
        """
        return await self._users.subscribe(user, topic)

    async def unsubscribe(self, *, user: str | int, topic: str) -> int:
        """Unsubscribe every connection of ``user`` (a user id) from ``topic``, in this
        process and every other; returns how many were subscribed here."""
        return await self._users.unsubscribe(user, topic)

    def subscriber_count(self, topic: str) -> int:
        """How many connections of this process are subscribed to ``topic`` (with
        :class:`RedisBroker` too: not a count across processes)."""
        return self.broker.subscriber_count(topic)

    def generate_websocket_types(
        self,
        output_path: str | os.PathLike[str] | None = None,
        routes: Iterable[str] | None = None,
    ) -> str:
        """TypeScript types for this server's routes, written to ``output_path`` if given.

        ``routes`` keeps only the routes with these paths. Returns the text; see
        :func:`trio_wsroutes.generate_websocket_types`.
        """
        from ._typegen import generate_websocket_types

        return generate_websocket_types(self, output_path, routes=routes)

    def publish_from_thread(self, topic: str, message: object) -> int:
        """:meth:`publish` from a thread that is not the server's (a worker thread, a
        synchronous library's callback): blocks that thread until the message is queued.

        Uses ``trio.from_thread``; the server must be running (it learns its Trio run at
        lifespan startup, or at its first connection). Do not call it from the server's
        own Trio thread: use ``await server.publish(...)`` there.
        """
        return trio.from_thread.run(
            functools.partial(self.publish, topic, message), trio_token=self._token()
        )

    def publish_binary_from_thread(self, topic: str, data: bytes) -> int:
        """:meth:`publish_binary` from another thread; see :meth:`publish_from_thread`."""
        return trio.from_thread.run(
            functools.partial(self.publish_binary, topic, data), trio_token=self._token()
        )

    def _token(self) -> trio.lowlevel.TrioToken:
        if self._trio_token is None:
            raise RuntimeError("the server is not running yet (no lifespan startup seen)")
        return self._trio_token

    # -- lifespan and ASGI ------------------------------------------------------------

    def on_startup(self, fn: StartupHook) -> StartupHook:
        """Decorator: run ``await fn(nursery)`` at server startup (ASGI lifespan).

        ``nursery`` lives as long as the server: start background tasks in it (a
        publisher loop, a broker connection). They are cancelled at shutdown, after the
        ``on_shutdown`` hooks ran. Hooks run in registration order; one that raises
        fails the startup.
        """
        self._startup_hooks.append(fn)
        return fn

    def on_shutdown(self, fn: ShutdownHook) -> ShutdownHook:
        """Decorator: run ``await fn()`` at server shutdown, before background tasks are
        cancelled."""
        self._shutdown_hooks.append(fn)
        return fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application: WebSocket routes, the lifespan, then ``http_app``."""
        kind = scope["type"]
        if kind == "websocket":
            from ._transports.asgi import ASGITransport, request_from_scope

            transport = ASGITransport(
                scope,
                receive,
                send,
                compression=bool(self.compression),
                max_message_size=self.options.max_payload_length,
            )
            await self.serve_websocket(transport, request_from_scope(scope))
        elif kind == "lifespan":
            self._trio_token = trio.lowlevel.current_trio_token()
            _contain_hypercorn_failures()  # before hypercorn accepts a connection
            self._admitter()
            await run_lifespan(
                scope,
                receive,
                send,
                broker=self.broker,
                startup_hooks=self._startup_hooks,
                shutdown_hooks=self._shutdown_hooks,
                http_app=self.http_app,
                on_interrupt=self._interrupted,
                grace=self.options.close_timeout,
            )
        elif kind == "http" and scope.get("path") in self._http:
            await self._http.asgi(scope, receive, send)
        elif self.http_app is not None:
            await self.http_app(scope, receive, send)
        elif kind == "http":
            await _not_found(send)

    async def serve_websocket(self, transport: Transport, request: Request) -> None:
        """Admit or deny one upgrade request, run the connection to its end, and close
        the transport.

        The transport-independent entry point: connection limits, routing, origin and
        subprotocol checks, ``authenticate``, then the connection engine. Transports call
        it; applications normally do not.
        """
        if self._trio_token is None:
            self._trio_token = trio.lowlevel.current_trio_token()
        started = time.perf_counter()
        admit: AbstractAsyncContextManager[Admitted | None] = self._admitter().admit(
            transport, request
        )
        if self._tracing is not None:
            admit = self._tracing.admission(admit, request)
        async with admit as admitted:
            if admitted is None:
                return
            try:
                await transport.accept(admitted.subprotocol, ())
            except TransportClosed:
                return
            registry, counters, connection = self._accepted(transport, request, admitted, started)
            # This frame lasts as long as the connection: it keeps what the connection
            # needs, not what admission made (the headers' lookup table, say).
            request.headers._forget_lookups()  # pyright: ignore[reportPrivateUsage]
            del admitted
            registry.add(connection)
            try:
                await run_connection(connection)
            finally:
                self._observability.ended(connection, counters)
                # The connection keeps its place in the limits until its socket is closed.
                with trio.CancelScope(shield=True):
                    await transport.aclose()

    def _accepted(
        self, transport: Transport, request: Request, admitted: Admitted, started: float
    ) -> tuple[ConnectionRegistry, RouteCounters, Connection[Any]]:
        """The connection of an accepted upgrade, where it is kept and counted (a
        function of its own: its big call would size serve_websocket's frame, which
        lasts as long as the connection)."""
        registry, stats, counters = self._home(admitted.spec)
        stats.connections_accepted += 1
        self._observability.accepted(counters, started)
        connection: Connection[Any] = Connection(
            transport=transport,
            spec=admitted.spec,
            context=new_context(uuid.uuid4().hex, admitted.user, request),
            broker=self.broker,
            stats=stats,
            budget=self.memory,
            recoveries=self._recoveries,
            subprotocol=admitted.subprotocol,
            since=admitted.positions,
            on_gone=registry.discard,
            counters=counters,
            tracing=admitted.tracing,
            presence=self._presence,
            refresh=None
            if admitted.expires_at is None
            else token_refresh(
                admitted.spec, request, admitted.user, admitted.expires_at, self._user_id
            ),
        )
        return registry, counters, connection

    def _home(self, spec: RouteSpec) -> tuple[ConnectionRegistry, ServerStats, RouteCounters]:
        """Where a connection of ``spec``'s route is kept and counted: the admin page's
        live route apart from the application's."""
        site = self._admin_site
        if site is not None and site.serves(spec):
            return site.registry, site.stats, site.counters
        return self.registry, self.stats, self._observability.routes[spec.path]

    # -- serving -------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
        handle_signals: bool | None = None,
        hypercorn_config: Any = None,
        task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve under hypercorn's trio worker until shutdown.

        Shutdown comes from ``shutdown_trigger`` returning, from SIGINT or SIGTERM (when
        signals are handled), or from cancelling the task. Signals are handled by default
        when ``serve`` runs in the main thread without a ``shutdown_trigger``, that is, as
        a program of its own; ``handle_signals`` says so explicitly (``False`` when
        embedding the server in a larger program). On shutdown every connection is closed
        with 1001 (waiting up to ``close_timeout`` for the closing handshakes, less on a
        second Ctrl+C), then hypercorn stops, and ``serve`` returns normally: no
        ``KeyboardInterrupt``.

        ``port=0`` binds a free port; ``await nursery.start(server.serve, host, 0)``
        returns the bound addresses. ``ssl_context`` serves ``wss://`` (and ``https://``
        for ``http_app``). ``hypercorn_config`` is a ``hypercorn.config.Config`` for
        everything else (access logs, timeouts, ``websocket_ping_interval``); its
        ``bind`` is replaced.

        If it cannot listen (the address is in use, say), it raises
        :class:`StartupError`; run as the program itself (``trio.run``'s main task in the
        main thread, signals handled) it prints that on one line and exits with status 2.
        """
        await serve_under_hypercorn(
            self,
            host,
            port,
            ssl_context=ssl_context,
            shutdown_trigger=shutdown_trigger,
            handle_signals=handle_signals,
            hypercorn_config=hypercorn_config,
            task_status=task_status,
        )

    async def serve_native(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
        handle_signals: bool | None = None,
        task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the routes with the native transport until shutdown: ``shutdown_trigger``
        returning, SIGINT or SIGTERM (handled as :meth:`serve` does), or cancellation.

        The server's own WebSocket server over Trio streams, with the ``websockets``
        package's protocol: one process, one Trio run, no ASGI in between. ``port=0``
        binds a free port; ``await nursery.start(server.serve_native, host, 0)`` returns
        the bound addresses. ``ssl_context`` serves ``wss://``. Startup and shutdown
        hooks run as under hypercorn (and the lifespan of ``http_app``, whose HTTP routes
        are not served here: a plain HTTP request gets 426 Upgrade Required on a route's
        path and 404 elsewhere).

        On shutdown the server stops accepting, closes every connection with 1001 (queued
        frames are dropped, so the close goes out at once), waits up to ``close_timeout``
        for the closing handshakes (less on a second Ctrl+C), then drops whatever is left
        and returns normally, even if a client never reads.

        A failure to listen is reported as :meth:`serve` reports it.
        """
        await serve_natively(
            self,
            native_endpoints(self),
            host,
            port,
            ssl_context=ssl_context,
            shutdown_trigger=shutdown_trigger,
            handle_signals=handle_signals,
            task_status=task_status,
        )

    async def _interrupted(self) -> None:
        # A signal in a worker whose parent runs the shutdown (hypercorn's): the parent
        # stops the worker next; say goodbye to the clients first.
        logger.info("signal: closing every connection with 1001")
        await self.close_all(CloseCode.GOING_AWAY, "server shutdown")

    async def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close every open connection now and wait (up to ``close_timeout``) until they
        end.

        Frames still queued for a client are dropped and a send in progress is
        interrupted, so the close frame goes out next: a client that reads gets it at
        once (native; under hypercorn once its shielded send returns), and one that
        never reads cannot hold the server past ``close_timeout``.
        """
        registries = [self.registry]
        if self._admin_site is not None:
            registries.append(self._admin_site.registry)
        for registry in registries:
            for connection in registry.all():
                close_now(connection, code, reason)
        await trio.lowlevel.checkpoint()
        with trio.move_on_after(self.options.close_timeout):
            for registry in registries:
                await registry.wait_empty()


def native_endpoints(
    server: WebSocketServer,
) -> tuple[NativeOptions, ServeWebSocket, PlainHTTP]:
    """What the native transport needs from ``server``: its settings, the upgrade entry
    point and the answer to plain HTTP requests (for ``serve_native`` and ``testing``)."""
    from ._transports.native import NativeOptions

    compression = server.compression
    options = NativeOptions(
        max_payload_length=server.options.max_payload_length,
        compression=(
            None if compression is False else "shared" if compression is True else compression
        ),
        close_timeout=server.options.close_timeout,
        handshake_timeout=server.handshake_timeout,
        max_pending_handshakes=server.max_pending_handshakes,
    )

    async def plain_http(request: Request) -> tuple[int, Sequence[tuple[str, str]], bytes]:
        # The native server answers plain HTTP only with its own endpoints (the metrics,
        # the admin page) and to say where the WebSockets are.
        answer = await server._http.answer(request)  # pyright: ignore[reportPrivateUsage]
        if answer is not None:
            return answer
        return server._admitter().plain_http(request.path)  # pyright: ignore[reportPrivateUsage]

    return options, server.serve_websocket, plain_http


def _contain_hypercorn_failures() -> None:
    # Under hypercorn (its command line imports the app, then runs the lifespan, before
    # it accepts): a failure inside hypercorn ends one connection, not the server.
    from ._transports import _hypercorn

    _hypercorn.install_containment_if_loaded()


async def _not_found(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"Not Found"})
