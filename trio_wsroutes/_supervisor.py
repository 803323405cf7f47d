"""The supervisor of the native transport's worker processes: it starts them, forwards
shutdown to them, restarts one that dies and replaces them all on SIGHUP.

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

import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import Any, cast

import attrs
import trio

from ._metrics_sharing import WORKERS_METRICS_DIR
from ._serving import BoundAddress, StartupError
from ._worker_sockets import reserve, reuse_port_balances

__all__ = ["WorkerPlan", "WorkerStartFailed", "supervise"]

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


class WorkerStartFailed(RuntimeError):
    """A worker exited before it started serving, for another reason than the address
    (its traceback, if any, is on stderr)."""


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
