"""``WebSocketServer``: the ASGI application, route table, options, publish and registry."""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeVar, cast, overload
from urllib.parse import urlsplit

import attrs
import orjson
import trio

from ._auth import Reject
from ._broker import Broker, MemoryBroker
from ._connection import CloseCode, Connection, EngineOptions, new_context
from ._errors import AUTH_ERROR, UNAUTHORIZED
from ._messages import Frame, encode_message
from ._registry import ConnectionRegistry
from ._request import Request
from ._routes import Router, WebSocketRoute
from ._transports import ASGITransport, TransportClosed

__all__ = ["ASGIApp", "BoundAddress", "WebSocketServer"]

logger = logging.getLogger("trio_wsroutes")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""Any ASGI 3 application (Starlette, Quart, a plain function...)."""

ServerT = TypeVar("ServerT")

MiB = 1024 * 1024
_JSON = ("content-type", "application/json")


@attrs.frozen
class BoundAddress:
    """An address the server listens on, reported by :meth:`WebSocketServer.serve`."""

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

    Serve it with ``hypercorn --worker-class trio module:server`` or
    ``await server.serve(host, port)``. WebSocket requests go to the matching route (an
    unknown path is denied with HTTP 404 before the upgrade); HTTP and lifespan
    events go to ``http_app`` (or get a 404).

    Options:

    * ``max_payload_length``: largest inbound message in bytes (16 MiB); bigger closes
      with 1009.
    * ``idle_timeout``: seconds without an inbound message before the connection is
      closed (120; ``None`` for never).
    * ``backpressure_limit``: bytes queued for one client before ``ws.send`` waits and
      publishes evict it with 1013 (16 MiB).
    * ``compression``: permessage-deflate. Under hypercorn it is always negotiated when
      the client offers it; the option is kept for transports that can refuse it.
    * ``heartbeat_interval``: seconds between server pings (``serve()`` only).
    * ``allowed_origins``: accepted ``Origin`` values (``"*"`` for any); a disallowed
      origin is denied with 403. ``None`` (default) checks nothing.
    * ``broker``: the topic broker (:class:`MemoryBroker` by default).
    * ``max_queued_messages``: inbound messages queued per connection before the
      server stops reading from it (16).
    * ``close_timeout``: seconds a closing connection may take to flush, and
      ``on_close`` may take to run (5).
    """

    def __init__(
        self,
        routes: Iterable[WebSocketRoute[Any, Any]] = (),
        http_app: ASGIApp | None = None,
        *,
        max_payload_length: int = 16 * MiB,
        idle_timeout: float | None = 120.0,
        compression: bool = True,
        backpressure_limit: int = 16 * MiB,
        heartbeat_interval: float | None = None,
        allowed_origins: Iterable[str] | None = None,
        broker: Broker | None = None,
        max_queued_messages: int = 16,
        close_timeout: float = 5.0,
    ) -> None:
        if max_payload_length < 1 or backpressure_limit < 1 or max_queued_messages < 1:
            raise ValueError("size limits must be positive")
        self.router: Router = Router(route.build() for route in routes)
        self.http_app: ASGIApp | None = http_app
        self.compression: bool = compression
        self.heartbeat_interval: float | None = heartbeat_interval
        self.allowed_origins: frozenset[str] | None = (
            None if allowed_origins is None else frozenset(allowed_origins)
        )
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self.registry: ConnectionRegistry = ConnectionRegistry()
        """Every open connection: ``all()``, ``filter()``, ``get()``, ``broadcast()``."""
        self.options: EngineOptions = EngineOptions(
            max_payload_length=max_payload_length,
            idle_timeout=idle_timeout,
            backpressure_limit=backpressure_limit,
            max_queued_messages=max_queued_messages,
            close_timeout=close_timeout,
        )

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
        """How many connections are subscribed to ``topic``."""
        return self.broker.subscriber_count(topic)

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif self.http_app is not None:
            await self.http_app(scope, receive, send)
        elif kind == "http":
            await _not_found(send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = ASGITransport(scope, receive, send)
        match = self.router.match(scope.get("path", "/"))
        if match is None:
            await _deny(transport, 404, "Not Found", "NOT_FOUND")
            return
        route = match.route
        request = Request.from_scope(scope, match.params)
        if self.allowed_origins is not None and not self._origin_allowed(request.origin):
            await _deny(transport, 403, "Origin not allowed", "FORBIDDEN_ORIGIN")
            return
        user: Any = None
        if route.authenticate_fn is not None:
            try:
                user = route.authenticate_fn(request)
                if inspect.isawaitable(user):
                    user = await user
            except Reject as reject:
                await _deny(transport, reject.status, reject.message, reject.code, reject.headers)
                return
            except Exception:
                logger.exception("authenticate failed on %s", route.path)
                await _deny(transport, 401, "Authentication failed", AUTH_ERROR)
                return
            if user is None:
                await _deny(transport, 401, "Unauthorized", UNAUTHORIZED)
                return
        try:
            await transport.accept(None, ())
        except TransportClosed:
            return
        context = new_context(uuid.uuid4().hex, user, request)
        connection: Connection[Any] = Connection(
            transport=transport,
            route=route,
            context=context,
            broker=self.broker,
            options=self.options,
            on_gone=self.registry.discard,
        )
        self.registry.add(connection)
        await connection._run()  # pyright: ignore[reportPrivateUsage]

    def _origin_allowed(self, origin: str | None) -> bool:
        allowed = self.allowed_origins
        if allowed is None or "*" in allowed:
            return True
        return origin is not None and origin in allowed

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

    async def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Close every open connection and wait (up to ``close_timeout``) until they end."""
        for connection in self.registry.all():
            await connection.close(code, reason)
        with trio.move_on_after(self.options.close_timeout):
            await self.registry.wait_empty()


async def _deny(
    transport: ASGITransport,
    status: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
) -> None:
    body = orjson.dumps({"message": message, "code": code})
    extra = [(k.lower(), v) for k, v in (headers or {}).items() if k.lower() != "content-type"]
    try:
        await transport.deny(status, body, [_JSON, *extra])
    except TransportClosed:
        pass


async def _not_found(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": b"Not Found"})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
