"""``WebSocketServer``: the ASGI application, route table, options, publish and registry."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal, TypeVar, cast, overload
from urllib.parse import urlsplit

import attrs
import orjson
import trio

from ._auth import Reject
from ._broker import Broker, MemoryBroker, RunnableBroker
from ._connection import (
    CloseCode,
    Connection,
    EngineOptions,
    SlowConsumerPolicy,
    new_context,
)
from ._errors import AUTH_ERROR, UNAUTHORIZED
from ._messages import Frame, encode_message
from ._origins import OriginPolicy
from ._registry import ConnectionRegistry
from ._request import Request, TrustedProxies
from ._routes import RateLimit, Router, WebSocketRoute
from ._stats import ServerStats
from ._transports import ASGITransport, Transport, TransportClosed

__all__ = ["ASGIApp", "BoundAddress", "WebSocketServer"]

logger = logging.getLogger("trio_wsroutes")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""Any ASGI 3 application (Starlette, Quart, a plain function...)."""

ServerT = TypeVar("ServerT")

StartupHook = Callable[[trio.Nursery], Awaitable[None]]
"""``async def hook(nursery) -> None``, run at server startup."""
ShutdownHook = Callable[[], Awaitable[None]]
"""``async def hook() -> None``, run at server shutdown."""

MiB = 1024 * 1024
_JSON = ("content-type", "application/json")


@attrs.frozen
class BoundAddress:
    """An address the server listens on, reported by :meth:`WebSocketServer.serve` and
    :meth:`WebSocketServer.serve_native`."""

    host: str
    port: int

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` (IPv6 hosts bracketed)."""
        return f"ws://{self._netloc}"

    @property
    def http_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class WebSocketServer:
    """Typed WebSocket routes as one ASGI application, beside an optional HTTP app.

    ::

        server = WebSocketServer([chat], http_app=starlette_app)

    Two ways to serve it, with the same routes and handlers:

    * **under hypercorn** (the ASGI app): ``hypercorn --worker-class trio module:server``
      or ``await server.serve(host, port)``. Shares one port with ``http_app``.
    * **native**: ``await server.serve_native(host, port)``, the server's own WebSocket
      server on Trio sockets (the ``websockets`` protocol). WebSocket only (a plain HTTP
      request gets 426 on a route's path, 404 elsewhere), and everything hypercorn
      cannot do: the client's close code in ``on_close``, ping/pong heartbeats,
      cancellable sends (slow consumers evicted at once, shutdown that never waits on a
      client), 1009 before a payload is read, shared compression, fast fan-out. See the
      transports guide.

    WebSocket requests go to the matching route (an unknown path is denied with HTTP
    404 before the upgrade); HTTP and lifespan events go to ``http_app`` (or get a 404).

    Options:

    * ``max_payload_length``: largest inbound message in bytes (16 MiB); bigger closes
      with 1009.
    * ``idle_timeout``: seconds without an inbound message before the connection is
      closed (120; ``None`` for never).
    * ``backpressure_limit``: bytes queued for one client before ``ws.send`` waits and
      publishes evict it with 1013 (16 MiB).
    * ``compression``: permessage-deflate when the client offers it (on by default);
      ``False`` refuses it. Native: ``True`` is ``"shared"`` (``server_no_context_takeover``:
      each message is compressed once for all its recipients); ``"context_takeover"``
      keeps a compressor per connection (better ratio, a compression per recipient and
      more memory). Under hypercorn, ``True`` is wsproto's per-connection deflate and
      ``False`` works on hypercorn 0.17 and 0.18 (a checked patch; see the guide).
    * ``heartbeat_interval``: seconds between WebSocket pings. Native: a peer that sends
      nothing (no pong) for ``heartbeat_timeout`` seconds after a ping is closed (1011,
      ``"heartbeat timeout"``). Under hypercorn pings are sent but pongs are invisible;
      use :meth:`WebSocketRoute.heartbeat` for dead-peer detection there.
    * ``heartbeat_timeout``: seconds to wait for an answer to a ping (20; native).
    * ``rate_limit``: a :class:`RateLimit` for routes without their own
      :meth:`WebSocketRoute.rate_limit`.
    * ``allowed_origins``: accepted ``Origin`` values: exact origins,
      ``https://*.example.com`` patterns, or ``"*"``; a disallowed origin is denied with
      403 before the upgrade. ``None`` (default) checks nothing. Routes may override it
      with :meth:`WebSocketRoute.allowed_origins`.
    * ``require_origin``: also deny requests without ``Origin`` (non-browser clients).
    * ``trusted_proxies``: proxy addresses or networks (``"10.0.0.0/8"``, ``"*"``) whose
      ``Forwarded`` / ``X-Forwarded-For`` / ``X-Forwarded-Proto`` headers are believed for
      ``request.client`` and ``request.scheme``. Ignored from anyone else.
    * ``broker``: the topic broker (:class:`MemoryBroker` by default;
      :class:`RedisBroker` shares topics between processes and hosts). A broker with a
      ``run`` method is run during the lifespan, started before the startup hooks.
    * ``slow_consumer_policy``: ``"close"`` (default) closes a subscriber with 1013 when a
      publish would take its queue over ``backpressure_limit``; ``"drop"`` drops that
      message for it alone. Counted in :attr:`stats`.
    * ``max_queued_messages``: inbound messages queued per connection before the
      server stops reading from it (16).
    * ``max_query_params``: query parameters accepted on an upgrade (100); more is
      denied with 400 before anything parses them.
    * ``close_timeout``: seconds a closing connection may take to flush, and
      ``on_close`` may take to run (5); also the grace period of a shutdown.
    * ``max_connections``: open connections (plus upgrades being admitted) beyond which
      upgrades are denied with 503 ``SERVER_BUSY`` and ``Retry-After: 1`` (no limit).
    * ``max_connections_per_ip``: the same per client address (``request.client``,
      proxy-aware), denied with 429 ``TOO_MANY_CONNECTIONS`` (no limit).
    * ``handler_timeout``: seconds a message handler may run before it is cancelled and
      the client gets ``HANDLER_TIMEOUT`` (no limit; routes may set their own).
    * ``max_topics_per_connection`` (1000) and ``max_topic_length`` (256): beyond them
      ``ws.subscribe`` raises ``MessageError`` (``TOO_MANY_TOPICS``, ``INVALID_TOPIC``).
    * ``handshake_timeout``: seconds a client has to send its whole upgrade request on
      the native transport (10; hypercorn drops incomplete requests after its own
      ``keep_alive_timeout``, 5 s by default).
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
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float = 20.0,
        allowed_origins: Iterable[str] | None = None,
        require_origin: bool = False,
        trusted_proxies: Iterable[str] | None = None,
        broker: Broker | None = None,
        slow_consumer_policy: SlowConsumerPolicy = "close",
        max_queued_messages: int = 16,
        max_query_params: int = 100,
        close_timeout: float = 5.0,
        rate_limit: RateLimit | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        handler_timeout: float | None = None,
        max_topics_per_connection: int = 1000,
        max_topic_length: int = 256,
        handshake_timeout: float = 10.0,
    ) -> None:
        if any(
            limit is not None and limit < 1
            for limit in (max_connections, max_connections_per_ip, max_topics_per_connection)
        ) or (handler_timeout is not None and not handler_timeout > 0):
            raise ValueError("connection limits and timeouts must be positive")
        if max_payload_length < 1 or backpressure_limit < 1 or max_queued_messages < 1:
            raise ValueError("size limits must be positive")
        if slow_consumer_policy not in ("close", "drop"):
            raise ValueError('slow_consumer_policy is "close" or "drop"')
        self.router: Router = Router(route.build() for route in routes)
        self.http_app: ASGIApp | None = http_app
        if compression not in (True, False, "shared", "context_takeover"):
            raise ValueError('compression is True, False, "shared" or "context_takeover"')
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive (or None)")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError("rate_limit takes a RateLimit(messages_per_second, ...)")
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
        self.registry: ConnectionRegistry = ConnectionRegistry()
        """Every open connection: ``all()``, ``filter()``, ``get()``, ``broadcast()``."""
        self.stats: ServerStats = ServerStats()
        """Running counters: connections, slow-consumer drops and closes, handler errors."""
        self.options: EngineOptions = EngineOptions(
            max_payload_length=max_payload_length,
            idle_timeout=idle_timeout,
            backpressure_limit=backpressure_limit,
            max_queued_messages=max_queued_messages,
            close_timeout=close_timeout,
            slow_consumer_policy=slow_consumer_policy,
            rate_limit=rate_limit,
            handler_timeout=handler_timeout,
            max_topics_per_connection=max_topics_per_connection,
            max_topic_length=max_topic_length,
        )
        self.handshake_timeout: float = handshake_timeout
        self.max_connections: int | None = max_connections
        self.max_connections_per_ip: int | None = max_connections_per_ip
        self._admitting = 0
        self._per_ip: dict[str, int] = {}
        self._startup_hooks: list[StartupHook] = []
        self._shutdown_hooks: list[ShutdownHook] = []
        self._trio_token: trio.lowlevel.TrioToken | None = None

    @property
    def routes(self) -> list[WebSocketRoute[Any, Any]]:
        """The routes, in registration order."""
        return list(self.router.routes)

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
        Pass ``route=`` to have type checkers (and a runtime check) hold ``message`` to that
        route's :meth:`~WebSocketRoute.server_messages`.
        """
        if route is not None:
            allowed = route.server_message_types
            if allowed and type(message) not in allowed:
                names = ", ".join(cls.__qualname__ for cls in allowed)
                raise TypeError(
                    f"{type(message).__qualname__} is not a server message of route "
                    f"{route.path!r} (expected one of {names})"
                )
        return await self.broker.publish(topic, encode_message(message))

    async def publish_binary(self, topic: str, data: bytes) -> int:
        """Publish a binary frame to every subscriber of ``topic``."""
        return await self.broker.publish(topic, Frame(bytes(data), binary=True))

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

    # -- lifespan --------------------------------------------------------------------------

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

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._trio_token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            inner = await _InnerLifespan.start(self.http_app, scope, nursery)
            event = await receive()
            if event["type"] != "lifespan.startup":
                return
            try:
                if isinstance(self.broker, RunnableBroker):
                    # Before any startup code; cancelled with the nursery, after shutdown.
                    await nursery.start(self.broker.run)
                if inner is not None:
                    await inner.forward(event, "lifespan.startup.complete")
                for hook in self._startup_hooks:
                    await hook(nursery)
            except Exception as exc:
                logger.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                nursery.cancel_scope.cancel()
                return
            await send({"type": "lifespan.startup.complete"})
            event = await receive()
            failed: str | None = None
            for shutdown_hook in self._shutdown_hooks:
                try:
                    await shutdown_hook()
                except Exception as exc:
                    logger.exception("shutdown hook failed")
                    failed = repr(exc)
            if inner is not None:
                try:
                    await inner.forward(event, "lifespan.shutdown.complete")
                except Exception as exc:
                    failed = repr(exc)
            nursery.cancel_scope.cancel()
        if failed is None:
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await send({"type": "lifespan.shutdown.failed", "message": failed})

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            transport = ASGITransport(scope, receive, send, compression=bool(self.compression))
            await self._serve_scope(transport, scope)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.http_app is not None:
            await self.http_app(scope, receive, send)
        elif kind == "http":
            await _not_found(send)

    async def _serve_scope(self, transport: Transport, scope: Scope) -> None:
        if scope.get("query_string", b"").count(b"&") >= self.max_query_params:
            await self._deny(transport, 400, "Too many query parameters", "BAD_REQUEST")
            return
        request = Request.from_scope(scope, None, self.trusted_proxies)
        await self.serve_websocket(transport, request)

    async def serve_websocket(self, transport: Transport, request: Request) -> None:
        """Admit or deny one upgrade request, then run the connection to its end.

        The transport-independent entry point: connection limits, routing, origin and
        subprotocol checks, ``authenticate``, then the connection engine. Transports call
        it; applications normally do not.
        """
        if self._trio_token is None:
            self._trio_token = trio.lowlevel.current_trio_token()
        # Upgrades being admitted count against the limits too: a burst of slow
        # authentications must not let more connections in than allowed.
        if self.max_connections is not None and (
            len(self.registry) + self._admitting >= self.max_connections
        ):
            await self._deny(
                transport, 503, "Server is at capacity", "SERVER_BUSY", {"retry-after": "1"}
            )
            return
        ip = request.client[0] if request.client is not None else ""
        if self.max_connections_per_ip is not None and (
            self._per_ip.get(ip, 0) >= self.max_connections_per_ip
        ):
            await self._deny(
                transport, 429, "Too many connections from this address", "TOO_MANY_CONNECTIONS"
            )
            return
        self._admitting += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        admitting = True

        def admitted() -> None:
            nonlocal admitting
            admitting = False
            self._admitting -= 1

        try:
            await self._admit_and_run(transport, request, admitted)
        finally:
            if admitting:
                self._admitting -= 1
            remaining = self._per_ip[ip] - 1
            if remaining:
                self._per_ip[ip] = remaining
            else:
                del self._per_ip[ip]

    async def _admit_and_run(
        self, transport: Transport, request: Request, on_admitted: Callable[[], None]
    ) -> None:
        """Route, check and authenticate; run the connection if admitted."""
        match = self.router.match(request.path)
        if match is None:
            await self._deny(transport, 404, "Not Found", "NOT_FOUND")
            return
        route = match.route
        request.path_params = match.params
        policy = route.origin_policy or self.origin_policy
        if policy is not None and not policy.allows(request.origin):
            await self._deny(transport, 403, "Origin not allowed", "FORBIDDEN_ORIGIN")
            return
        subprotocol = route.select_subprotocol(request.subprotocols)
        if subprotocol is None and route.subprotocol_required:
            await self._deny(
                transport,
                400,
                "None of the offered subprotocols is supported",
                "UNSUPPORTED_SUBPROTOCOL",
                {"sec-websocket-protocol": ", ".join(route.subprotocol_choices)},
            )
            return
        user: Any = None
        if route.authenticate_fn is not None:
            try:
                user = route.authenticate_fn(request)
                if inspect.isawaitable(user):
                    user = await user
            except Reject as reject:
                await self._deny(
                    transport, reject.status, reject.message, reject.code, reject.headers
                )
                return
            except Exception:
                logger.exception("authenticate failed on %s", route.path)
                await self._deny(transport, 401, "Authentication failed", AUTH_ERROR)
                return
            if user is None:
                await self._deny(transport, 401, "Unauthorized", UNAUTHORIZED)
                return
        try:
            await transport.accept(subprotocol, ())
        except TransportClosed:
            return
        on_admitted()
        self.stats.connections_accepted += 1
        context = new_context(uuid.uuid4().hex, user, request)
        connection: Connection[Any] = Connection(
            transport=transport,
            route=route,
            context=context,
            broker=self.broker,
            options=self.options,
            stats=self.stats,
            subprotocol=subprotocol,
            on_gone=self.registry.discard,
        )
        self.registry.add(connection)
        await connection._run()  # pyright: ignore[reportPrivateUsage]

    async def _deny(
        self,
        transport: Transport,
        status: int,
        message: str,
        code: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.stats.connections_denied += 1
        body = orjson.dumps({"message": message, "code": code})
        extra = [(k.lower(), v) for k, v in (headers or {}).items() if k.lower() != "content-type"]
        with contextlib.suppress(TransportClosed):
            await transport.deny(status, body, [_JSON, *extra])

    # -- running under hypercorn from Python ---------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
        hypercorn_config: Any = None,
        task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve under hypercorn's trio worker until ``shutdown_trigger`` returns or the
        task is cancelled.

        ``port=0`` binds a free port; ``await nursery.start(server.serve, host, 0)``
        returns the bound addresses. On shutdown every connection is closed with 1001
        before hypercorn stops. ``hypercorn_config`` is a ``hypercorn.config.Config``
        for everything else (TLS, access logs); its ``bind`` is replaced.
        """
        from hypercorn.config import Config
        from hypercorn.trio import serve as _hypercorn_serve  # pyright: ignore[reportUnknownVariableType]

        hypercorn_serve = cast("Callable[..., Awaitable[None]]", _hypercorn_serve)

        config = hypercorn_config if hypercorn_config is not None else Config()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.websocket_max_message_size = self.options.max_payload_length
        if self.heartbeat_interval is not None:
            config.websocket_ping_interval = self.heartbeat_interval

        async def shutdown() -> None:
            if shutdown_trigger is None:
                await trio.sleep_forever()
            else:
                await shutdown_trigger()
            await self.close_all(CloseCode.GOING_AWAY, "server shutdown")

        async with trio.open_nursery() as nursery:
            app: Any = self  # hypercorn's own ASGI types are narrower than ours
            urls: list[str] = await nursery.start(
                functools.partial(hypercorn_serve, app, config, shutdown_trigger=shutdown)
            )
            addresses: list[BoundAddress] = []
            for url in urls:
                parts = urlsplit(url)
                addresses.append(BoundAddress(parts.hostname or host, parts.port or port))
            task_status.started(addresses)

    async def serve_native(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
        task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the routes with the native transport until ``shutdown_trigger`` returns
        or the task is cancelled.

        The server's own WebSocket server on Trio sockets, with the ``websockets``
        package's protocol: one process, one Trio run, no ASGI in between. ``port=0``
        binds a free port; ``await nursery.start(server.serve_native, host, 0)`` returns
        the bound addresses. Startup and shutdown hooks run as under hypercorn (and the
        lifespan of ``http_app``, whose HTTP routes are not served here: a plain HTTP
        request gets 426 Upgrade Required on a route's path and 404 elsewhere).

        On shutdown the server stops accepting, closes every connection with 1001 (queued
        frames are dropped, so the close goes out at once), waits up to ``close_timeout``
        for the closing handshakes, then drops whatever is left and returns, even if a
        client never reads. TLS is the reverse proxy's job (see the transports guide).
        """
        from ._transports import native

        options = native.NativeOptions(
            max_payload_length=self.options.max_payload_length,
            compression=(
                None
                if self.compression is False
                else "shared"
                if self.compression is True
                else self.compression
            ),
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout,
            close_timeout=self.options.close_timeout,
            handshake_timeout=self.handshake_timeout,
        )
        active = _ActiveCount()

        def plain_http(path: str) -> tuple[int, list[tuple[str, str]], bytes]:
            if self.router.match(path) is None:
                return 404, [_JSON], orjson.dumps({"message": "Not Found", "code": "NOT_FOUND"})
            body = orjson.dumps(
                {"message": "This path speaks WebSocket only", "code": "UPGRADE_REQUIRED"}
            )
            return 426, [_JSON, ("upgrade", "websocket"), ("connection", "Upgrade")], body

        async def handle(stream: trio.SocketStream) -> None:
            # The transport does its own non-blocking I/O on the plain socket.
            sock = socket.socket(fileno=stream.socket.detach())
            with active:
                await native.serve_connection(sock, options, self._serve_scope, plain_http)

        async with trio.open_nursery() as outer:
            shutdown_lifespan = await self._start_lifespan(outer)
            listeners = await trio.open_tcp_listeners(port, host=host)
            try:
                addresses: list[BoundAddress] = []
                for listener in listeners:
                    sockname: Any = listener.socket.getsockname()
                    addresses.append(BoundAddress(str(sockname[0]), int(sockname[1])))
                async with trio.open_nursery() as connections:

                    async def accept_loop(
                        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
                        with trio.CancelScope() as scope:
                            task_status.started(scope)
                            await trio.serve_listeners(
                                handle, listeners, handler_nursery=connections
                            )

                    accepting: trio.CancelScope = await connections.start(accept_loop)
                    task_status.started(addresses)
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    else:
                        await shutdown_trigger()
                    accepting.cancel()
                    with trio.move_on_after(self.options.close_timeout):
                        await self.close_all(CloseCode.GOING_AWAY, "server shutdown")
                        await active.wait_zero()
                    connections.cancel_scope.cancel()
            finally:
                for listener in listeners:
                    with contextlib.suppress(Exception):
                        listener.socket.close()
            with trio.move_on_after(self.options.close_timeout):
                await shutdown_lifespan()
            outer.cancel_scope.cancel()

    async def _start_lifespan(self, nursery: trio.Nursery) -> Callable[[], Awaitable[None]]:
        """Run this app's ASGI lifespan in ``nursery`` (for :meth:`serve_native`); returns
        the function that shuts it down."""
        to_app, app_receive = trio.open_memory_channel[MutableMapping[str, Any]](1)
        app_send, from_app = trio.open_memory_channel[MutableMapping[str, Any]](1)

        async def run() -> None:
            async with app_send:
                scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
                await self._lifespan(scope, app_receive.receive, app_send.send)

        nursery.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        reply = await from_app.receive()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {reply.get('message', reply['type'])}")

        async def shutdown() -> None:
            await to_app.send({"type": "lifespan.shutdown"})
            with contextlib.suppress(trio.EndOfChannel):
                reply = await from_app.receive()
                if reply["type"] != "lifespan.shutdown.complete":
                    logger.error("shutdown failed: %s", reply.get("message", reply["type"]))

        return shutdown

    async def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close every open connection now and wait (up to ``close_timeout``) until they
        end.

        Frames still queued for a client are dropped and a send in progress is
        interrupted, so the close frame goes out next: a client that reads gets it at
        once (native; under hypercorn once its shielded send returns), and one that
        never reads cannot hold the server past ``close_timeout``.
        """
        for connection in self.registry.all():
            connection._close_now(code, reason)  # pyright: ignore[reportPrivateUsage]
        await trio.lowlevel.checkpoint()
        with trio.move_on_after(self.options.close_timeout):
            await self.registry.wait_empty()


class _ActiveCount:
    """How many connections the native server is running; wait until none."""

    def __init__(self) -> None:
        self.count = 0
        self._zero = trio.Event()
        self._zero.set()

    def __enter__(self) -> None:
        self.count += 1
        if self._zero.is_set():
            self._zero = trio.Event()

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if self.count == 0:
            self._zero.set()

    async def wait_zero(self) -> None:
        await self._zero.wait()


async def _not_found(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"Not Found"})


class _InnerLifespan:
    """The wrapped ``http_app``'s lifespan, run beside ours and driven by it."""

    def __init__(self) -> None:
        self._to_app, self._app_receive = trio.open_memory_channel[MutableMapping[str, Any]](1)
        self._app_send, self._from_app = trio.open_memory_channel[MutableMapping[str, Any]](1)
        self.supported = True

    @classmethod
    async def start(
        cls, app: ASGIApp | None, scope: Scope, nursery: trio.Nursery
    ) -> _InnerLifespan | None:
        if app is None:
            return None
        inner = cls()

        async def run() -> None:
            try:
                await app(scope, inner._app_receive.receive, inner._app_send.send)
            except Exception:
                # ASGI: an app that does not do lifespan may raise on the scope.
                inner.supported = False
            finally:
                inner._app_send.close()

        nursery.start_soon(run)
        return inner

    async def forward(self, event: MutableMapping[str, Any], expected: str) -> None:
        if not self.supported:
            return
        await self._to_app.send(event)
        try:
            reply = await self._from_app.receive()
        except trio.EndOfChannel:
            self.supported = False  # returned without answering: no lifespan support
            return
        if reply["type"] != expected:
            raise RuntimeError(f"http_app lifespan: {reply.get('message', reply['type'])}")
