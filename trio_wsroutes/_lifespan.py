"""ASGI lifespan: the server's own startup and shutdown, and one driver for running any
app's lifespan from outside (the native server runs the server's, the server runs the
wrapped ``http_app``'s, and :mod:`trio_wsroutes.testing` runs the app under test's)."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ._broker import Broker, RunnableBroker
from ._signals import interrupt_ignored, on_worker_signals
from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LifespanDriver", "LifespanError", "ShutdownHook", "StartupHook", "run_lifespan"]

logger = logging.getLogger("trio_wsroutes")

StartupHook = Callable[[trio.Nursery], Awaitable[None]]
"""``async def hook(nursery) -> None``, run at server startup."""
ShutdownHook = Callable[[], Awaitable[None]]
"""``async def hook() -> None``, run at server shutdown."""


class LifespanError(RuntimeError):
    """The app answered a lifespan event with ``...failed`` (or something unexpected)."""


class LifespanDriver:
    """Runs an ASGI app's lifespan from outside: the app runs in a task of a nursery,
    and :meth:`startup` and :meth:`shutdown` send it the events and wait for its answers.

    An app that raises on the lifespan scope, or returns without answering, does not
    speak lifespan: the driver then marks it unsupported and both calls return at once
    (ASGI lets servers go on without lifespan).
    """

    def __init__(
        self, app: ASGIApp, scope: Scope | None = None, *, timeout: float | None = None
    ) -> None:
        self._app = app
        self._scope: Scope = (
            scope
            if scope is not None
            else {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        )
        self._timeout = timeout
        self._to_app, self._app_receive = trio.open_memory_channel[Message](1)
        self._app_send, self._from_app = trio.open_memory_channel[Message](1)
        self.supported: bool = True
        """Whether the app speaks lifespan (known after :meth:`startup`)."""

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._app_receive.receive, self._app_send.send)
        except Exception:
            # ASGI: an app that does not do lifespan may raise on the scope.
            logger.debug("the app does not support lifespan", exc_info=True)
            self.supported = False
        finally:
            self._app_send.close()

    async def _exchange(self, event: str, expected: str) -> None:
        if not self.supported:
            await trio.lowlevel.checkpoint()
            return
        await self._to_app.send({"type": event})
        try:
            with trio.fail_after(math.inf if self._timeout is None else self._timeout):
                reply = await self._from_app.receive()
        except trio.EndOfChannel:
            self.supported = False  # returned without answering: no lifespan support
            return
        if reply["type"] != expected:
            raise LifespanError(str(reply.get("message") or reply["type"]))

    async def startup(self, nursery: trio.Nursery) -> None:
        """Start the app in ``nursery`` and run its startup; raises
        :class:`LifespanError` if it fails."""
        nursery.start_soon(self._run)
        await self._exchange("lifespan.startup", "lifespan.startup.complete")

    async def shutdown(self) -> None:
        """Run the app's shutdown; raises :class:`LifespanError` if it fails."""
        await self._exchange("lifespan.shutdown", "lifespan.shutdown.complete")


async def run_lifespan(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    broker: Broker,
    startup_hooks: Sequence[StartupHook],
    shutdown_hooks: Sequence[ShutdownHook],
    http_app: ASGIApp | None,
    on_interrupt: Callable[[], Awaitable[None]] | None = None,
    grace: float = 5.0,
) -> None:
    """The server's side of the ASGI lifespan protocol.

    Startup: the broker's background task (if it has one), the wrapped ``http_app``'s
    startup, then the startup hooks with a nursery that lives until shutdown. Shutdown:
    the shutdown hooks, the ``http_app``'s shutdown, then the nursery is cancelled.
    """
    async with trio.open_nursery() as nursery:
        inner = LifespanDriver(http_app, scope) if http_app is not None else None
        event = await receive()
        if event["type"] != "lifespan.startup":
            return
        try:
            if isinstance(broker, RunnableBroker):
                # Before any startup code; cancelled with the nursery, after shutdown.
                await nursery.start(broker.run)
            if inner is not None:
                await inner.startup(nursery)
            for hook in startup_hooks:
                await hook(nursery)
            if on_interrupt is not None and interrupt_ignored():
                nursery.start_soon(on_worker_signals, on_interrupt, grace)
        except Exception as exc:
            logger.exception("startup failed")
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            nursery.cancel_scope.cancel()
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        failed: str | None = None
        for shutdown_hook in shutdown_hooks:
            try:
                await shutdown_hook()
            except Exception as exc:
                logger.exception("shutdown hook failed")
                failed = repr(exc)
        if inner is not None:
            try:
                await inner.shutdown()
            except Exception as exc:
                failed = repr(exc)
        nursery.cancel_scope.cancel()
    reply: dict[str, Any] = (
        {"type": "lifespan.shutdown.complete"}
        if failed is None
        else {"type": "lifespan.shutdown.failed", "message": failed}
    )
    await send(reply)
