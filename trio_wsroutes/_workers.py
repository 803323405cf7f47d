"""Serving one port from several processes with the native transport: a supervisor that
starts the workers, forwards shutdown to them and restarts one that dies.

Each worker is a fresh interpreter (``python -m trio_wsroutes._cli serve TARGET --native
--worker FD``) that imports the application itself and runs its own Trio run, engine
and broker: a Trio server object holds a run's state (tasks, sockets, the broker's
connections) and cannot be copied into another process, by fork or otherwise, so the
workers are told where the server is (``module:attribute``), not given it.

On Linux every worker opens its own listening socket with ``SO_REUSEPORT`` and the kernel
spreads new connections over them; elsewhere the supervisor opens the listening sockets
and the workers inherit them. Either way the supervisor first binds the address itself
(without ``SO_REUSEPORT``), so an address in use is one clear error, and port 0 becomes
one free port for every worker.

The supervisor talks to each worker over a socket pair: the worker says ``ready`` (with
its addresses) or why it could not start; the supervisor says ``stop`` (the first SIGINT
or SIGTERM: close every connection with 1001, within ``close_timeout``) and ``now`` (a
second one). A signal sent to the whole process group (Ctrl+C in a terminal, systemd)
reaches the workers directly as well; ``stop`` after it changes nothing. A worker whose
supervisor is gone (its end of the pair closes) shuts down the same way.

SIGHUP replaces the workers one at a time, each by a fresh interpreter that imports the
application again (new code, as a deployment wants it): the old worker closes its
connections as on ``stop``, then its successor starts; the next follows once it serves.
The other workers keep the port served meanwhile, and a successor that cannot start stops
the replacement there, the workers not yet replaced going on as they were.

A scrape of the metrics reaches whichever worker the kernel picks, so when the server
serves metrics and no directory is named for sharing them, the supervisor makes one for
its workers (and removes it when it stops): every worker's answer adds up all of them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

from ._metrics_sharing import WORKERS_METRICS_DIR
from ._serving import BoundAddress, StartupError, serve_natively
from ._targets import TargetError, load_target

if TYPE_CHECKING:
    from ._server import WebSocketServer

__all__ = [
    "WorkerPlan",
    "WorkerStartFailed",
    "check_broker",
    "needs_shared_metrics",
    "run_worker",
    "serve_native_workers",
    "supervise",
]

logger = logging.getLogger("trio_wsroutes.workers")

FIRST_DELAY = 0.5
"""Seconds before restarting a worker that died; doubled after each death in a row."""
MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0
"""A worker that ran this long before dying is restarted after ``FIRST_DELAY`` again."""
MAX_STARTUP_FAILURES = 5
"""Restarts in a row that fail before serving, after which the supervisor gives up."""
KILL_MARGIN = 5.0
"""Seconds, beyond twice ``close_timeout``, a worker has to stop before it is killed."""
START_LIMIT = 60.0
"""Seconds a worker that replaces another on SIGHUP has to start serving."""
BACKLOG = 65535  # the kernel caps it at net.core.somaxconn, as trio's listeners do


class WorkerStartFailed(RuntimeError):
    """A worker exited before it started serving, for another reason than the address
    (its traceback, if any, is on stderr)."""


def reuse_port_balances() -> bool:
    """Whether each worker can bind its own socket to the port and let the kernel spread
    connections over them (Linux's ``SO_REUSEPORT``)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


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


# -- binding -----------------------------------------------------------------------------


def _addresses(host: str, port: int) -> list[Any]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)


def _socket_for(family: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def reserve(host: str, port: int, listen: bool) -> tuple[list[socket.socket], int]:
    """Bind every address of ``host`` on ``port`` (one free port for all when 0), without
    ``SO_REUSEPORT``: an address in use, by anyone, fails here. ``listen``: these are the
    sockets the workers will share. Returns the sockets and the port."""
    sockets: list[socket.socket] = []
    try:
        try:
            infos = _addresses(host, port)
        except socket.gaierror as exc:
            raise StartupError(
                errno.EADDRNOTAVAIL, f"cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        for family, _, _, _, address in infos:
            sock = _socket_for(family, reuse_port=False)
            sockets.append(sock)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise StartupError(
                    exc.errno, f"cannot listen on {host}:{port}: {reason}"
                ) from None
            if listen:
                sock.listen(BACKLOG)
        return sockets, int(sockets[0].getsockname()[1])
    except BaseException:
        for sock in sockets:
            sock.close()
        raise


async def _reuse_port_listeners(host: str, port: int) -> list[trio.SocketListener]:
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, _, _, _, address in await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = trio.socket.from_stdlib_socket(_socket_for(family, reuse_port=True))
            sockets.append(sock)
            await sock.bind(address)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(sock) for sock in sockets]


async def _inherited_listeners(fds: Sequence[int]) -> list[trio.SocketListener]:
    return [
        trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd))) for fd in fds
    ]


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
            return await _inherited_listeners(listener_fds)
        return await _reuse_port_listeners(host, port)

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


# -- the supervisor ----------------------------------------------------------------------


@attrs.frozen
class WorkerPlan:
    """How to start the workers: the command line of one (without ``--worker FD``)."""

    argv: list[str]
    workers: int
    host: str
    port: int
    close_timeout: float
    share_metrics: bool = False
    """Make the workers a directory to add up their metrics in (see the module docs)."""


@attrs.define
class _Live:
    process: trio.Process
    control: trio.SocketStream
    serving: bool = False


@attrs.define
class _Replacement:
    """A slot whose worker SIGHUP replaces: set once its successor serves or failed."""

    done: trio.Event = attrs.field(factory=trio.Event)
    serving: bool = False


def _describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


@attrs.define
class _Supervisor:
    plan: WorkerPlan
    listener_fds: tuple[int, ...]
    announce: Callable[[list[BoundAddress]], None]
    env: dict[str, str] | None = None  # the workers' environment (None: this one's)
    stopping: trio.Event = attrs.field(factory=trio.Event)
    urgent: bool = False
    failure: BaseException | None = None
    live: dict[int, _Live] = attrs.field(factory=lambda: dict[int, _Live]())
    ready: set[int] = attrs.field(factory=lambda: set[int]())
    all_started: bool = False
    replacing: dict[int, _Replacement] = attrs.field(factory=lambda: dict[int, _Replacement]())
    reload_wanted: trio.Event = attrs.field(factory=trio.Event)

    async def tell(self, word: bytes) -> None:
        for live in list(self.live.values()):
            try:
                await live.control.send_all(word + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def stop(self, failure: BaseException | None = None) -> None:
        if failure is not None and self.failure is None:
            self.failure = failure
        if self.stopping.is_set():
            return
        self.stopping.set()
        for replacement in self.replacing.values():
            replacement.done.set()  # a reload under way gives up
        await self.tell(b"stop")

    async def watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    if not self.stopping.is_set():
                        self.reload_wanted.set()  # one more after a reload under way
                elif not self.stopping.is_set():
                    logger.info("%s: stopping the workers (again to stop at once)", name)
                    await self.stop()
                else:
                    logger.warning("%s again: stopping the workers now", name)
                    self.urgent = True
                    await self.tell(b"now")

    async def reloader(self) -> None:
        while True:
            await self.reload_wanted.wait()
            self.reload_wanted = trio.Event()
            await self.reload()

    async def reload(self) -> None:
        """Replace the workers one at a time (SIGHUP; see the module documentation)."""
        logger.info("SIGHUP: replacing the %d workers one at a time", self.plan.workers)
        for slot in range(1, self.plan.workers + 1):
            live = self.live.get(slot)
            if self.stopping.is_set():
                return
            if live is None or not live.serving:
                continue  # being restarted already: it starts with the new code
            replacement = self.replacing[slot] = _Replacement()
            try:
                await live.control.send_all(b"stop\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # it is exiting anyway; its successor starts all the same
            with trio.move_on_after(2 * self.plan.close_timeout + KILL_MARGIN):
                await live.process.wait()
            if live.process.returncode is None:
                pid = live.process.pid
                logger.warning("worker %d (pid %d) did not stop: killing it", slot, pid)
                live.process.kill()
            with trio.move_on_after(START_LIMIT):
                await replacement.done.wait()
            self.replacing.pop(slot, None)
            if self.stopping.is_set():
                return
            if not replacement.serving:
                logger.error(
                    "reload stopped: worker %d could not start again; the workers not "
                    "replaced yet keep running as they were",
                    slot,
                )
                return
            logger.info("worker %d replaced", slot)
        logger.info("reload done: every worker replaced")

    async def kill_stragglers(self) -> None:
        await self.stopping.wait()
        await trio.sleep(2 * self.plan.close_timeout + KILL_MARGIN)
        for slot, live in list(self.live.items()):
            logger.warning("worker %d (pid %d) did not stop: killing it", slot, live.process.pid)
            live.process.kill()

    async def run_once(self, slot: int) -> tuple[dict[str, Any] | None, int, float, int]:
        """Start the worker of ``slot`` and wait until it exits: what it said first
        (``None`` if nothing), its exit status, and how long it served."""
        mine, theirs = socket.socketpair()
        argv = [*self.plan.argv, "--worker", str(theirs.fileno())]
        if self.listener_fds:
            argv += ["--listen-fds", ",".join(map(str, self.listener_fds))]
        try:
            process = await trio.lowlevel.open_process(
                argv, pass_fds=(theirs.fileno(), *self.listener_fds), env=self.env
            )
        finally:
            theirs.close()
        control = trio.SocketStream(trio.socket.from_stdlib_socket(mine))
        live = self.live[slot] = _Live(process, control)
        if self.stopping.is_set():
            await self.tell(b"stop")
        try:
            said = await _read_line(control)
            served_from = trio.current_time()
            replacement = self.replacing.get(slot)
            if replacement is not None and not replacement.done.is_set():
                # The successor of a worker SIGHUP replaced: serving, or not.
                replacement.serving = said is not None and "ready" in said
                replacement.done.set()
            if said is not None and "ready" in said:
                live.serving = True
                self.ready.add(slot)
                if not self.all_started and len(self.ready) == self.plan.workers:
                    self.all_started = True
                    addresses = [
                        BoundAddress(str(h), int(p), bool(s)) for h, p, s in said["ready"]
                    ]
                    self.announce(addresses)
            status = await process.wait()
            return said, status, trio.current_time() - served_from, process.pid
        finally:
            del self.live[slot]
            await control.aclose()

    async def run_slot(self, slot: int) -> None:
        delay = FIRST_DELAY
        failures_in_a_row = 0
        reloaded = False  # this slot's worker was replaced, and none has served since
        while not self.stopping.is_set():
            said, status, served, pid = await self.run_once(slot)
            if self.stopping.is_set():
                return
            if said is None or "ready" not in said:
                failure: BaseException
                if said is not None and "error" in said:
                    failure = StartupError(int(said.get("errno") or 0), str(said["error"]))
                else:
                    failure = WorkerStartFailed(
                        f"worker {slot} {_describe_exit(status)} before it started serving"
                    )
                failures_in_a_row += 1
                if not self.all_started or (
                    failures_in_a_row >= MAX_STARTUP_FAILURES and not reloaded
                ):
                    await self.stop(failure)
                    return
                # After a reload the code may be fixed and reloaded: each retry imports
                # it again, and the workers not replaced keep serving meanwhile.
                logger.warning(
                    "worker %d could not start (%s); retrying in %g s", slot, failure, delay
                )
            else:
                failures_in_a_row = 0
                reloaded = False
                if served >= HEALTHY_AFTER:
                    delay = FIRST_DELAY
                if slot in self.replacing:
                    reloaded = True
                    delay = FIRST_DELAY
                    continue  # stopped by a reload: its successor starts at once
                logger.warning(
                    "worker %d (pid %d) %s after %.1f s of serving; restarting it in %g s",
                    slot,
                    pid,
                    _describe_exit(status),
                    served,
                    delay,
                )
            with trio.move_on_after(delay):
                await self.stopping.wait()
            delay = min(delay * 2, MAX_DELAY)


async def _read_line(stream: trio.SocketStream) -> dict[str, Any] | None:
    buffer = b""
    while b"\n" not in buffer:
        try:
            data = await stream.receive_some()
        except trio.BrokenResourceError:
            return None
        if not data:
            return None
        buffer += data
    try:
        value: object = json.loads(buffer.partition(b"\n")[0])
    except ValueError:
        return None
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


async def supervise(plan: WorkerPlan, announce: Callable[[list[BoundAddress]], None]) -> None:
    """Run ``plan.workers`` workers until SIGINT or SIGTERM (or until they cannot start:
    then raise :class:`StartupError` or :class:`WorkerStartFailed`)."""
    if sys.platform == "win32":
        raise ValueError("worker processes need a POSIX system")
    shared = not reuse_port_balances()
    sockets, port = reserve(plan.host, plan.port, listen=shared)
    plan = attrs.evolve(plan, port=port, argv=_with_port(plan.argv, port))
    metrics_dir: str | None = None
    try:
        env = None
        if plan.share_metrics:
            # Fresh for each run: nothing left from an earlier deployment counts.
            metrics_dir = tempfile.mkdtemp(prefix="trio-wsroutes-metrics-")
            env = {**os.environ, WORKERS_METRICS_DIR: metrics_dir}
        supervisor = _Supervisor(
            plan, tuple(s.fileno() for s in sockets) if shared else (), announce, env
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.watch_signals)
            nursery.start_soon(supervisor.kill_stragglers)
            nursery.start_soon(supervisor.reloader)
            async with trio.open_nursery() as slots:
                for slot in range(1, plan.workers + 1):
                    slots.start_soon(supervisor.run_slot, slot)
            nursery.cancel_scope.cancel()
    finally:
        for sock in sockets:
            sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if supervisor.failure is not None:
        raise supervisor.failure


def _with_port(argv: list[str], port: int) -> list[str]:
    index = argv.index("--port")
    return [*argv[: index + 1], str(port), *argv[index + 2 :]]


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
