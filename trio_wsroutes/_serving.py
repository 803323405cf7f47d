"""Serving a :class:`~trio_wsroutes.WebSocketServer` until shutdown, under hypercorn or
natively: binding, reporting the bound addresses, and the shutdown on a trigger or a
signal (every connection closed with 1001 within ``close_timeout``, less on a second
Ctrl+C). The server's ``serve`` and ``serve_native`` run these."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ._codes import CloseCode
from ._lifespan import LifespanDriver
from ._signals import handles_signals, shutdown_on_signals
from ._spec import EngineOptions
from ._types import Receive, Scope, Send

if TYPE_CHECKING:
    from ._transports.native import NativeOptions, PlainHTTP, ServeWebSocket

__all__ = ["BoundAddress", "Servable", "serve_natively", "serve_under_hypercorn"]


@attrs.frozen
class BoundAddress:
    """An address the server listens on, reported by :meth:`WebSocketServer.serve` and
    :meth:`WebSocketServer.serve_native`."""

    host: str
    port: int
    secure: bool = False
    """Whether it serves TLS (``wss://``)."""

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` (``wss://`` with TLS; IPv6 hosts bracketed)."""
        return f"{'wss' if self.secure else 'ws'}://{self._netloc}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS)."""
        return f"{'https' if self.secure else 'http'}://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Servable(Protocol):
    """What serving needs of a server: the ASGI application, its per-connection limits,
    and closing every connection."""

    options: EngineOptions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def close_all(self, code: int = ..., reason: str = "") -> None: ...


async def serve_under_hypercorn(
    server: Servable,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None,
    handle_signals: bool | None,
    hypercorn_config: Any,
    task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:meth:`WebSocketServer.serve <trio_wsroutes.WebSocketServer.serve>`."""
    from ._transports import _hypercorn

    handle = handles_signals(handle_signals, shutdown_trigger)
    async with shutdown_on_signals(handle) as stop:

        async def shutdown() -> None:
            await stop.wait(shutdown_trigger)
            with stop.grace(server.options.close_timeout):
                await server.close_all(CloseCode.GOING_AWAY, "server shutdown")

        async with trio.open_nursery() as nursery:

            async def run(task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
                await _hypercorn.serve(
                    server,
                    host,
                    port,
                    config=hypercorn_config,
                    ssl_context=ssl_context,
                    max_message_size=server.options.max_payload_length,
                    shutdown_trigger=shutdown,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # done: stop watching for a second signal

            async def cut_short() -> None:
                await stop.urgent.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(cut_short)
            bound: list[tuple[str, int]] = await nursery.start(run)
            secure = ssl_context is not None
            task_status.started([BoundAddress(h, p, secure) for h, p in bound])


async def serve_natively(
    server: Servable,
    endpoints: tuple[NativeOptions, ServeWebSocket, PlainHTTP],
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None,
    handle_signals: bool | None,
    task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:meth:`WebSocketServer.serve_native <trio_wsroutes.WebSocketServer.serve_native>`,
    with the server's ``endpoints`` (see ``native_endpoints``)."""
    from ._transports import native

    options, serve_websocket, plain_http = endpoints
    native_server = native.NativeServer(
        options, serve_websocket, plain_http, ssl_context=ssl_context
    )
    grace = server.options.close_timeout
    handle = handles_signals(handle_signals, shutdown_trigger)
    async with shutdown_on_signals(handle) as stop, trio.open_nursery() as outer:
        lifespan = LifespanDriver(server)
        await lifespan.startup(outer)
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            addresses: list[BoundAddress] = []
            for listener in listeners:
                sockname: Any = listener.socket.getsockname()
                addresses.append(
                    BoundAddress(str(sockname[0]), int(sockname[1]), ssl_context is not None)
                )
            async with trio.open_nursery() as connections:

                async def accept(
                    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
                ) -> None:
                    with trio.CancelScope() as scope:
                        task_status.started(scope)
                        await native_server.serve(listeners, handler_nursery=connections)

                accepting: trio.CancelScope = await connections.start(accept)
                task_status.started(addresses)
                await stop.wait(shutdown_trigger)
                accepting.cancel()
                with stop.grace(grace):
                    await server.close_all(CloseCode.GOING_AWAY, "server shutdown")
                    await native_server.wait_idle()
                connections.cancel_scope.cancel()
        finally:
            for listener in listeners:
                listener.socket.close()
        with stop.grace(grace):
            await lifespan.shutdown()
        outer.cancel_scope.cancel()
