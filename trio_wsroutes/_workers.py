"""Serving one port from several processes with the native transport: a supervisor that
starts the workers, forwards shutdown to them and restarts one that dies.

Each worker is a fresh interpreter (``python -m trio_wsroutes._cli serve TARGET --native
--worker FD``) that imports the application itself and runs its own Trio run, engine
and broker: a Trio server object holds a run's state (tasks, sockets, the broker's
connections) and cannot be copied into another process, by fork or otherwise, so the
workers are told where the server is (``module:attribute``), not given it.

``_worker_sockets`` says how they share the port, and ``_supervisor`` holds the
supervisor, which talks to each worker over a socket pair: the worker says ``ready``
(with its addresses) or why it could not start; the supervisor says ``stop`` and ``now``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ._serving import BoundAddress, StartupError, serve_natively
from ._supervisor import WorkerPlan, supervise
from ._targets import TargetError, load_target
from ._worker_sockets import inherited_listeners, reuse_port_listeners

if TYPE_CHECKING:
    from ._server import WebSocketServer

__all__ = [
    "check_broker",
    "needs_shared_metrics",
    "run_worker",
    "serve_native_workers",
    "worker_argv",
]

logger = logging.getLogger("trio_wsroutes.workers")


def check_broker(server: WebSocketServer, workers: int, allow: bool, option: str) -> None:
    """Refuse a ``MemoryBroker`` shared by name only between ``workers`` processes."""
    from ._broker.memory import MemoryBroker

    if workers > 1 and isinstance(server.broker, MemoryBroker) and not allow:
        raise ValueError(
            f"{workers} workers with a MemoryBroker would each keep their own topics "
            "(a publish would reach only the subscribers in its own worker): give the "
            f"server a RedisBroker, or pass {option} if no topic is shared between "
            "connections"
        )


def needs_shared_metrics(server: WebSocketServer) -> bool:
    """Whether the workers need a directory from the supervisor to add up their metrics:
    the server serves metrics and names none itself (nor does the environment)."""
    return server.metrics is not None and server.metrics.shared_dir() is None


# -- the worker --------------------------------------------------------------------------


def run_worker(
    server: WebSocketServer,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    control_fd: int,
    listener_fds: Sequence[int],
) -> int:
    """Serve as one worker of a supervisor (``serve --worker FD``); the exit status."""
    if hasattr(signal, "SIGHUP"):
        # SIGHUP is the supervisor's (a reload), also when it is sent to the whole group.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    control = socket.socket(fileno=control_fd)
    return trio.run(_worker, server, host, port, ssl_context, control, tuple(listener_fds))


async def _worker(
    server: WebSocketServer,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    control_socket: socket.socket,
    listener_fds: tuple[int, ...],
) -> int:
    from ._server import native_endpoints

    control = trio.SocketStream(trio.socket.from_stdlib_socket(control_socket))
    stop = trio.Event()

    async def stopped() -> None:
        await stop.wait()

    async def listen() -> list[trio.SocketListener]:
        if listener_fds:
            return await inherited_listeners(listener_fds)
        return await reuse_port_listeners(host, port)

    async def obey() -> None:
        buffer: bytes = b""
        while True:
            data = await control.receive_some()
            if not data:  # the supervisor is gone: stop as it would have asked
                stop.set()
                return
            lines: list[bytes] = (buffer + bytes(data)).split(b"\n")
            buffer = lines.pop()
            for line in lines:
                if line == b"stop":
                    stop.set()
                elif line == b"now":
                    stop.set()
                    for _ in range(3):  # let the shutdown start, so this is its second signal
                        await trio.lowlevel.checkpoint()
                    os.kill(os.getpid(), signal.SIGTERM)

    async def say(value: object) -> None:
        try:
            await control.send_all(json.dumps(value).encode() + b"\n")
        except trio.BrokenResourceError:
            stop.set()

    async with trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[list[BoundAddress]]) -> None:
            await serve_natively(
                server,
                native_endpoints(server),
                host,
                port,
                ssl_context=ssl_context,
                shutdown_trigger=stopped,
                handle_signals=True,
                open_listeners=listen,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()  # shut down: stop listening to the supervisor

        nursery.start_soon(obey)
        failure: list[StartupError] = []
        addresses: list[BoundAddress] = []
        try:
            addresses = await nursery.start(serve)
        except* StartupError as group:
            failure.extend(e for e in group.exceptions if isinstance(e, StartupError))
        if failure:
            await say({"error": failure[0].strerror, "errno": failure[0].errno})
            nursery.cancel_scope.cancel()
            return 2
        await say({"ready": [[a.host, a.port, a.secure] for a in addresses]})
    return 0


def worker_argv(
    target: str,
    host: str,
    port: int,
    app_dir: str,
    certfile: str | None,
    keyfile: str | None,
) -> list[str]:
    """The command line of one worker, ``--worker FD`` aside."""
    argv = [sys.executable, "-m", "trio_wsroutes._cli", "serve", target, "--native"]
    argv += ["--host", host, "--port", str(port), "--app-dir", str(Path(app_dir).resolve())]
    if certfile is not None:
        argv += ["--certfile", str(Path(certfile).resolve())]
    if keyfile is not None:
        argv += ["--keyfile", str(Path(keyfile).resolve())]
    return argv


def serve_native_workers(
    target: str,
    *,
    workers: int,
    host: str = "127.0.0.1",
    port: int = 8000,
    certfile: str | None = None,
    keyfile: str | None = None,
    app_dir: str = ".",
    allow_memory_broker: bool = False,
) -> None:
    """Serve the :class:`~trio_wsroutes.WebSocketServer` at ``target``
    (``"module:attribute"``) with the native transport from ``workers`` processes on one
    port, until SIGINT or SIGTERM; what ``trio-wsroutes serve --native --workers N``
    runs. Call it from the main thread of a program of its own (not inside ``trio.run``).

    Each worker imports ``target`` itself (with ``app_dir`` first on ``sys.path``) and
    runs its own Trio run: a server object cannot be handed to another process, so this
    takes where to find it. On Linux each worker listens with ``SO_REUSEPORT`` and the
    kernel spreads connections over them; elsewhere they share listening sockets opened
    here. ``certfile`` and ``keyfile`` (PEM) serve ``wss://``.

    The first SIGINT or SIGTERM closes every connection in every worker with 1001 within
    the server's ``close_timeout``; a second one stops them at once; then this returns.
    SIGHUP replaces the workers one at a time by processes that import ``target`` again
    (to serve new code without leaving the port unserved); a successor that cannot start
    stops the replacement there, the others keeping on. A worker that dies is restarted
    after 0.5 s, doubling up to 30 s while it keeps dying (back to 0.5 s once one served
    for a minute), and logged on the ``trio_wsroutes.workers`` logger.

    When the server serves metrics (``metrics=...``) and neither
    ``Metrics.multiprocess_dir`` nor ``PROMETHEUS_MULTIPROC_DIR`` names a directory to
    share them in, this makes one for the workers (a new temporary directory, removed
    when it returns), so that a scrape of any worker adds up all of them.

    Raises :class:`~trio_wsroutes.StartupError` when the address cannot be bound (or
    workers keep failing to), ``RuntimeError`` when a worker exits before serving for
    another reason, and ``ValueError`` when the server keeps its topics in a
    ``MemoryBroker`` and ``workers`` is more than 1: each worker would have its own
    topics. Use a ``RedisBroker``, or pass ``allow_memory_broker=True`` for an app that
    shares no topic between connections.
    """
    from ._server import WebSocketServer

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    try:
        server = load_target(target, app_dir)
    except TargetError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(server, WebSocketServer):
        raise TypeError(f"{target} is not a WebSocketServer")
    check_broker(server, workers, allow_memory_broker, "allow_memory_broker=True")
    plan = WorkerPlan(
        worker_argv(target, host, port, app_dir, certfile, keyfile),
        workers,
        host,
        port,
        server.options.close_timeout,
        share_metrics=needs_shared_metrics(server),
    )

    def announce(addresses: list[BoundAddress]) -> None:
        for address in addresses:
            logger.info("serving %s on %s (%d workers)", target, address.ws_url, workers)

    trio.run(supervise, plan, announce)
