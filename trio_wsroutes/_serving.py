"""Serving a :class:`~trio_wsroutes.WebSocketServer` until shutdown, under hypercorn or
natively: binding, reporting the bound addresses, and the shutdown on a trigger or a
signal (every connection closed with 1001 within ``close_timeout``, less on a second
Ctrl+C). The server's ``serve`` and ``serve_native`` run these."""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import attrs
import trio

from ._codes import CloseCode
from ._lifespan import LifespanDriver
from ._signals import handles_signals, shutdown_on_signals
from ._spec import EngineOptions
from ._types import Receive, Scope, Send

if TYPE_CHECKING:
    from ._transports.native import NativeOptions, PlainHTTP, ServeWebSocket

__all__ = [
    "BoundAddress",
    "Servable",
    "StartupError",
    "program_name",
    "serve_natively",
    "serve_under_hypercorn",
]


class StartupError(OSError):
    """The server could not start listening (the address is in use, the port needs
    privileges, the host is not one of this machine's); ``errno`` is the operating
    system's.

    ``serve`` and ``serve_native`` raise it, except when they are the program: run as
    ``trio.run``'s main task in the main thread (``trio.run(server.serve)``), they print
    ``prog: error: cannot listen on host:port: reason`` on one line and exit with status 2.
    Started in a nursery, they raise it, for the caller to report as it sees fit
    (``except* StartupError``)."""


def program_name() -> str:
    """How the running program was started, for one-line messages and ``--help``:
    ``python -m examples.chat``, ``trio-wsroutes``, ``app.py``."""
    main: Any = sys.modules.get("__main__")
    spec: Any = getattr(main, "__spec__", None)
    name: Any = getattr(spec, "name", None)
    if isinstance(name, str) and name:
        return "python -m " + name.removesuffix(".__main__")
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"


def _os_error_of(error: BaseException) -> OSError | None:
    """The one ``OSError`` an exception (group) carries, if that is all it carries."""
    if isinstance(error, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", error)
        leaves = [leaf for inner in group.exceptions if (leaf := _os_error_of(inner))]
        return leaves[0] if len(leaves) == 1 and len(group.exceptions) == 1 else None
    return error if isinstance(error, OSError) else None


def _is_the_program(handles_signals: bool) -> bool:
    """Whether ``serve`` is the program: it handles signals and is ``trio.run``'s main
    task, so nothing above it would report an error it raises."""
    task = trio.lowlevel.current_task()
    parent = task.parent_nursery
    return (
        handles_signals
        and parent is not None
        and parent.parent_task is trio.lowlevel.current_root_task()
    )


@contextlib.asynccontextmanager
async def _reporting_startup(
    host: str, port: int, program: bool, started: list[bool]
) -> AsyncGenerator[None]:
    """Turn a failure to listen, before the server started, into one clear error: a
    :class:`StartupError`, or (``program``) one line on stderr and exit status 2."""
    try:
        yield
    except BaseException as error:
        found = None if started else _os_error_of(error)
        if found is None or isinstance(found, ssl.SSLError):
            raise
        reason = found.strerror or str(found)
        failure = StartupError(found.errno, f"cannot listen on {host}:{port}: {reason}")
        if program:
            print(f"{program_name()}: error: {failure.strerror}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise failure from None


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
    started: list[bool] = []
    async with (
        _reporting_startup(host, port, _is_the_program(handle), started),
        shutdown_on_signals(handle) as stop,
    ):

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
            started.append(True)
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
    open_listeners: Callable[[], Awaitable[list[trio.SocketListener]]] | None = None,
    task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:meth:`WebSocketServer.serve_native <trio_wsroutes.WebSocketServer.serve_native>`,
    with the server's ``endpoints`` (see ``native_endpoints``). ``open_listeners``
    replaces ``trio.open_tcp_listeners(port, host=host)`` (a worker's listeners)."""
    from ._transports import native

    options, serve_websocket, plain_http = endpoints
    native_server = native.NativeServer(
        options, serve_websocket, plain_http, ssl_context=ssl_context
    )
    grace = server.options.close_timeout
    handle = handles_signals(handle_signals, shutdown_trigger)
    started: list[bool] = []
    async with (
        _reporting_startup(host, port, _is_the_program(handle), started),
        shutdown_on_signals(handle) as stop,
        trio.open_nursery() as outer,
    ):
        lifespan = LifespanDriver(server)
        await lifespan.startup(outer)
        if open_listeners is None:
            listeners = await trio.open_tcp_listeners(port, host=host)
        else:
            listeners = await open_listeners()
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
                started.append(True)
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
