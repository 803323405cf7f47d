"""Test your routes without sockets: an in-memory client for either transport.

::

    from trio_wsroutes.testing import TestClient

    async def test_ping():
        async with TestClient(server) as client, client.connect("/chat/general") as ws:
            reply = await ws.request("ping", {"timestamp": 1.0})
            assert reply["type"] == "pong"

``TestClient(server)`` speaks ASGI to the server exactly as hypercorn does (same scope,
same events, including the ``websocket.http.response`` extension for denials).
``TestClient(server, transport="native")`` runs the native transport instead, over an
in-memory byte stream with a bounded buffer each way (like a socket's): the real
handshake, frames, close codes, pings, 1009 before a payload is read, and backpressure
when the client stops reading. Either way everything above the socket is exercised.

The typed client of :mod:`trio_wsroutes.client` runs in memory too, over the native
transport: ``async with client.client(route, path) as typed`` gives the same ``Client``
as ``connect(url, route)``. A :class:`ClientFactory` opens such clients in memory
(:meth:`TestClient.client`) or live (:func:`live_clients`), so a test moves from one to
the other by changing one fixture. With pytest-trio, the fixtures ``ws_client``,
``ws_live_server``, ``ws_typed_client`` and ``ws_typed_live_client`` (from the plugin this
package registers) need only a ``ws_server`` fixture of yours.
"""

# TestClient drives its connections' private sides.
# pyright: reportPrivateUsage=false

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Literal, Protocol, TypedDict, TypeVar, Unpack
from urllib.parse import urlencode

import trio

from ._history import Position
from ._lifespan import LifespanDriver
from ._routes import WebSocketRoute
from ._server import BoundAddress, WebSocketServer, native_endpoints
from ._testing_asgi import ASGIConnection, asgi_scope
from ._testing_connection import RequestTimeout as RequestTimeout
from ._testing_connection import TestConnection as TestConnection
from ._testing_native import NativeConnection
from ._transports._memory import MemoryStream, memory_stream_pair
from ._transports.native import serve_stream
from ._types import ASGIApp
from .client import Backoff, Client, RecoveryInfo, connect, open_streams_with

# The client's exceptions, raised by the test connections too: a test catches the same
# classes in memory and live.
from .client import ConnectionDenied as ConnectionDenied
from .client import WebSocketClosed as WebSocketClosed

__all__ = [
    "ClientFactory",
    "ClientOptions",
    "ConnectionDenied",
    "RequestTimeout",
    "TestClient",
    "TestConnection",
    "TransportName",
    "WebSocketClosed",
    "live_clients",
]

ServerT = TypeVar("ServerT")
ClientT = TypeVar("ClientT")

TransportName = Literal["asgi", "native"]
"""Which transport a :class:`TestClient` drives."""


@asynccontextmanager
async def _task_host() -> AsyncGenerator[trio.Nursery, None]:
    """A nursery for the app's tasks that lets the body's own exception through as it is.

    A plain nursery would wrap an exception raised in the ``async with`` body (say an
    assertion, or ``ConnectionDenied``) in an ``ExceptionGroup``; tests want the original.
    """
    manager = trio.open_nursery()
    nursery = await manager.__aenter__()
    try:
        yield nursery
    except BaseException:
        nursery.cancel_scope.cancel()
        await manager.__aexit__(None, None, None)
        raise
    await manager.__aexit__(None, None, None)


class TestClient:
    """An in-memory client for a :class:`~trio_wsroutes.WebSocketServer` (or, with the
    ASGI transport, any ASGI app).

    ``transport="asgi"`` (default) drives the app as hypercorn does;
    ``transport="native"`` runs the server's native transport over an in-memory stream.
    Use it as ``async with TestClient(server) as client`` to run the app's lifespan
    startup and shutdown around the test; ``client.connect()`` also works without.
    """

    __test__ = False

    def __init__(
        self,
        app: ASGIApp,
        *,
        transport: TransportName = "asgi",
        client: tuple[str, int] = ("127.0.0.1", 50000),
        timeout: float = 5.0,
        compression: bool = False,
    ) -> None:
        if transport not in ("asgi", "native"):
            raise ValueError('transport is "asgi" or "native"')
        if transport == "native" and not isinstance(app, WebSocketServer):
            raise TypeError("the native transport serves a WebSocketServer")
        self.app = app
        self.transport: TransportName = transport
        """The transport this client drives."""
        self.client_address = client
        self.timeout = timeout
        self.compression = compression
        """Whether native connections offer permessage-deflate (the ASGI side never
        sees compression)."""
        self._exit_stack = AsyncExitStack()
        self._lifespan: LifespanDriver | None = None

    async def __aenter__(self) -> TestClient:
        nursery = await self._exit_stack.enter_async_context(_task_host())
        self._lifespan = LifespanDriver(self.app, timeout=self.timeout)
        await self._lifespan.startup(nursery)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if exc is None and self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            result: bool | None = await self._exit_stack.__aexit__(exc_type, exc, tb)
        return result

    @asynccontextmanager
    async def connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        query: Mapping[str, str] | str | None = None,
        subprotocols: Sequence[str] = (),
        origin: str | None = None,
    ) -> AsyncGenerator[TestConnection, None]:
        """Open a WebSocket to ``path``; raises :class:`ConnectionDenied` if refused.

        On exit the client closes with 1000 (if still open) and waits for the server's
        handlers, ``on_close`` included, to finish.
        """
        if "?" in path and query is None:
            path, query = path.split("?", 1)
        query_string = urlencode(query) if isinstance(query, Mapping) else (query or "")
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if origin is not None:
            items.append(("origin", origin))
        connection: TestConnection
        async with _task_host() as nursery:
            if self.transport == "asgi":
                asgi = ASGIConnection(self.timeout)
                scope = asgi_scope(path, query_string, items, subprotocols, self.client_address)
                nursery.start_soon(asgi._run, self.app, scope)
                connection = asgi
            else:
                resource = path + (f"?{query_string}" if query_string else "")
                native = NativeConnection(
                    self.timeout,
                    resource=resource,
                    headers=items,
                    subprotocols=subprotocols,
                    peer=self.client_address,
                    compression=self.compression,
                )
                assert isinstance(self.app, WebSocketServer)
                nursery.start_soon(native._run_server, self.app, self.client_address)
                nursery.start_soon(native._run_client)
                connection = native
            with trio.fail_after(self.timeout):
                await connection._handshake.wait()
            if connection.denied is not None:
                with trio.fail_after(self.timeout):
                    await connection._app_done.wait()
                raise connection.denied
            try:
                yield connection
            finally:
                with trio.CancelScope(shield=True):
                    await connection.close()
                    if self.transport == "native":
                        nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def client(
        self,
        route: WebSocketRoute[Any, ServerT, ClientT],
        path: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> AsyncGenerator[Client[ServerT, ClientT], None]:
        """A typed :class:`trio_wsroutes.client.Client` for ``route``, connected in
        memory: ``async with test_client.client(route, path) as client``.

        The client is the one :func:`~trio_wsroutes.client.connect` makes (``send``,
        ``request(msg, ReplyClass)``, ``receive``, ``async for``, reconnection, positions),
        with the same ``options`` (all but ``ssl_context`` and ``proxy``), so a test moves
        to a live server by changing one fixture (see :class:`ClientFactory`). ``path``
        defaults to the route's path, which must then have no parameters.

        Its connections always run the server's native transport over an in-memory byte
        stream, whatever this ``TestClient``'s ``transport`` (the client speaks WebSocket
        bytes): the real handshake (a denial raises
        :class:`trio_wsroutes.client.ConnectionDenied`), frames, compression, close codes.
        Each reconnection opens a new in-memory connection. ``request_timeout``,
        ``open_timeout`` and ``close_timeout`` default to this ``TestClient``'s
        ``timeout``. On exit the client closes, and the server's handlers, ``on_close``
        included, get up to ``timeout`` seconds to finish.
        """
        server = self.app
        if not isinstance(server, WebSocketServer):
            raise TypeError("TestClient.client() needs a WebSocketServer (its native transport)")
        url = "ws://testserver" + _route_path(route, path)
        _default_timeouts(options, self.timeout)
        endpoints = native_endpoints(server)
        peer = self.client_address
        serving = 0
        idle = trio.Event()
        idle.set()
        stopped = False

        async def serve(stream: MemoryStream) -> None:
            nonlocal serving, idle
            try:
                await serve_stream(stream, *endpoints, peer=peer)
            finally:
                serving -= 1
                if not serving:
                    idle.set()

        async with _task_host() as nursery:

            async def open_stream() -> trio.abc.Stream:
                nonlocal serving, idle
                await trio.lowlevel.checkpoint()
                if stopped:
                    raise ConnectionRefusedError("the in-memory server has stopped")
                client_end, server_end = memory_stream_pair(peer)
                if not serving:
                    idle = trio.Event()
                serving += 1
                nursery.start_soon(serve, server_end)
                return client_end

            client = open_streams_with(connect(url, route, proxy=False, **options), open_stream)
            try:
                async with client:
                    yield client
            finally:
                stopped = True
                with trio.CancelScope(shield=True), trio.move_on_after(self.timeout):
                    await idle.wait()
                nursery.cancel_scope.cancel()


def _route_path(route: WebSocketRoute[Any, Any], path: str | None) -> str:
    """The path to connect to for ``route``: ``path``, or the route's own if it has no
    parameters."""
    if path is None:
        names = route.pattern.param_names
        if names:
            raise ValueError(
                f"route {route.path!r} has path parameters ({', '.join(names)}): "
                "pass the path to connect to"
            )
        return route.path
    if not path.startswith("/"):
        raise ValueError(f"the path must start with '/': {path!r}")
    return path


def _default_timeouts(options: ClientOptions, timeout: float) -> None:
    options.setdefault("request_timeout", timeout)
    options.setdefault("open_timeout", timeout)
    options.setdefault("close_timeout", timeout)


class ClientOptions(TypedDict, total=False):
    """The keyword options of :func:`trio_wsroutes.client.connect` that mean the same
    in memory and over a network, as a :class:`ClientFactory` takes them: ``token``,
    ``headers``, ``subprotocols``, ``origin``, ``reconnect``, ``on_reconnect``,
    ``on_recovery``, ``since``, ``request_timeout``, ``open_timeout``, ``close_timeout``,
    ``ping_interval``, ``ping_timeout``, ``compression``, ``max_message_size``,
    ``max_queue``, ``max_queue_bytes`` (all but ``ssl_context`` and ``proxy``), with
    ``connect``'s types and meanings."""

    token: str | Callable[[], str | Awaitable[str]] | None
    headers: Mapping[str, str] | Iterable[tuple[str, str]]
    subprotocols: Sequence[str] | None
    origin: str | None
    reconnect: bool | Backoff
    on_reconnect: Callable[[], Awaitable[None]] | None
    on_recovery: Callable[[RecoveryInfo], Awaitable[None]] | None
    since: Mapping[str, Position] | None
    request_timeout: float
    open_timeout: float
    close_timeout: float
    ping_interval: float | None
    ping_timeout: float | None
    compression: bool
    max_message_size: int | None
    max_queue: int
    max_queue_bytes: int


class ClientFactory(Protocol):
    """Opens typed clients to the routes of one server: ``async with
    open_client(route, path, **options) as client`` gives a
    :class:`trio_wsroutes.client.Client`, in memory (:meth:`TestClient.client`, the
    ``ws_typed_client`` fixture) or over a real socket (:func:`live_clients`, the
    ``ws_typed_live_client`` fixture). A test written against it moves from one to the
    other by changing its fixture.
    """

    def __call__(
        self,
        route: WebSocketRoute[Any, ServerT, ClientT],
        path: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> AbstractAsyncContextManager[Client[ServerT, ClientT]]:
        """A client for ``route`` at ``path`` (default: the route's path, which must
        then have no parameters), with :func:`~trio_wsroutes.client.connect`'s
        ``options``."""
        ...


class _LiveClients:
    """Typed clients over real sockets to the server at ``base_url``."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"live_clients({self.base_url!r})"

    def __call__(
        self,
        route: WebSocketRoute[Any, ServerT, ClientT],
        path: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> Client[ServerT, ClientT]:
        url = self.base_url + _route_path(route, path)
        _default_timeouts(options, self.timeout)
        return connect(url, route, proxy=False, **options)


def live_clients(address: BoundAddress | str, *, timeout: float = 5.0) -> ClientFactory:
    """Open typed clients to a running server: ``open_client = live_clients(address)``,
    then ``async with open_client(route, path) as client``.

    ``address`` is a :class:`~trio_wsroutes.BoundAddress` (what ``serve`` and the
    ``ws_live_server`` fixture report) or a base URL such as ``"ws://127.0.0.1:8000"``.
    The clients take no proxy, and their ``request_timeout``, ``open_timeout`` and
    ``close_timeout`` default to ``timeout`` (as :meth:`TestClient.client`'s do), so a
    test behaves the same in memory and live.
    """
    base = address.ws_url if isinstance(address, BoundAddress) else address
    return _LiveClients(base, timeout)
