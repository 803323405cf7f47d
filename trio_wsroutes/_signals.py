"""Stopping on SIGINT and SIGTERM: the first signal starts a graceful shutdown, a second
one cuts its grace period short. No traceback either way."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

import trio

__all__ = [
    "Shutdown",
    "handles_signals",
    "interrupt_ignored",
    "on_worker_signals",
    "shutdown_on_signals",
]

logger = logging.getLogger("trio_wsroutes")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown:
    """When to stop: ``requested`` is set by the first signal (or the app's trigger),
    ``urgent`` by a second signal, which ends the grace period at once."""

    def __init__(self) -> None:
        self.requested = trio.Event()
        self.urgent = trio.Event()
        self._grace_scopes: list[trio.CancelScope] = []

    def stop_now(self) -> None:
        """End every grace period at once."""
        self.requested.set()
        self.urgent.set()
        for scope in self._grace_scopes:
            scope.cancel()

    async def wait(self, trigger: Callable[[], Awaitable[None]] | None) -> None:
        """Return once shutdown is requested, by a signal or by ``trigger()``."""
        if trigger is None:
            await self.requested.wait()
            return
        async with trio.open_nursery() as nursery:

            async def triggered() -> None:
                await trigger()
                self.requested.set()

            nursery.start_soon(triggered)
            await self.requested.wait()
            nursery.cancel_scope.cancel()

    @contextlib.contextmanager
    def grace(self, seconds: float) -> Generator[trio.CancelScope]:
        """A cancel scope for a grace period: it ends after ``seconds``, or at once on a
        second signal."""
        scope = trio.CancelScope(deadline=trio.current_time() + seconds)
        if self.urgent.is_set():
            scope.cancel()
        self._grace_scopes.append(scope)
        try:
            with scope:
                yield scope
        finally:
            self._grace_scopes.remove(scope)


def handles_signals(option: bool | None, trigger: object) -> bool:
    """Whether ``serve`` should handle signals: ``option``, or by default when it runs in
    the main thread (a program of its own) and the app gave no ``shutdown_trigger``."""
    if option is not None:
        return option
    return trigger is None and threading.current_thread() is threading.main_thread()


@contextlib.asynccontextmanager
async def shutdown_on_signals(enabled: bool) -> AsyncGenerator[Shutdown]:
    """Yield a :class:`Shutdown` that SIGINT and SIGTERM drive while the block runs (when
    ``enabled``; else only the app's trigger does). Inside, Ctrl+C no longer raises
    ``KeyboardInterrupt``."""
    shutdown = Shutdown()
    if not enabled:
        yield shutdown
        return
    with trio.open_signal_receiver(*SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if shutdown.requested.is_set():
                        logger.warning("%s again: stopping now", name)
                        shutdown.stop_now()
                    else:
                        logger.info("%s: shutting down (again to stop at once)", name)
                        shutdown.requested.set()

            nursery.start_soon(watch)
            try:
                yield shutdown
            finally:
                nursery.cancel_scope.cancel()


def interrupt_ignored() -> bool:
    """Whether this is a worker process whose parent handles Ctrl+C (SIGINT is ignored
    here, as in hypercorn's worker processes): the terminal's SIGINT still reaches it."""
    return (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    )


async def on_worker_signals(callback: Callable[[], Awaitable[None]], grace: float) -> None:
    """In a worker whose parent runs the shutdown: run ``callback`` when SIGINT (Ctrl+C in
    a terminal) or SIGTERM (sent to the whole process group, as systemd does) reaches
    it, so clients hear of the shutdown before the parent's own signal to the worker
    arrives. The parent's shutdown then ends this task. A SIGTERM meant for the worker
    alone still terminates it, ``grace`` seconds later."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async for signum in signals:
                await callback()
                if signum == signal.SIGTERM:
                    nursery.start_soon(_terminate_after, grace)


async def _terminate_after(grace: float) -> None:
    await trio.sleep(grace)
    logger.warning("still running %g s after SIGTERM: terminating", grace)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
