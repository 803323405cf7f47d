"""Holding a :class:`~trio_wsroutes.RedisBroker`'s Redis connections: connecting, with
capped exponential backoff and jitter; each session's tasks (the drain, the sender, the
health checks of both connections, the check of what a reconnection missed);
resubscribing every channel a new session needs; and what a session that ends loses."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._channels import Channels
from ._common import (
    ConnectionLost,
    Link,
    RedisBrokerStats,
    Settings,
    describe,
    is_unexpected,
    logger,
    require_coredis,
)
from ._continuity import Continuity
from ._control import Control
from ._inbound import Inbound
from ._outbound import Outbound
from ._scripts import load_scripts

if TYPE_CHECKING:
    from coredis.connection import BaseConnection

__all__ = ["Session"]


class Session:
    """Runs a broker: the fan-out task for its whole life, and one session after another
    (two connections, their tasks) until cancelled. Only this changes the :class:`Link`."""

    def __init__(
        self,
        settings: Settings,
        stats: RedisBrokerStats,
        link: Link,
        channels: Channels,
        inbound: Inbound,
        outbound: Outbound,
        wanted: Callable[[], list[str]],
        control: Control,
        continuity: Continuity,
    ) -> None:
        self._control = control
        self._continuity = continuity
        self._settings = settings
        self._stats = stats
        self._link = link
        self._channels = channels
        self._inbound = inbound
        self._outbound = outbound
        self._wanted = wanted  # the topics whose channels a new session subscribes
        self._pool: Any = None
        self._down_since: float | None = None
        self._lost_at_disconnect = 0

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """See :meth:`RedisBroker.run <trio_wsroutes.RedisBroker.run>`."""
        link = self._link
        if link.running:
            raise RuntimeError(
                "this RedisBroker is already running: give each server its own instance"
            )
        require_coredis()
        self._prepare()
        link.running = True
        link.state = "connecting"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._inbound.fan_out_loop)
                nursery.start_soon(self._control.loop)
                await nursery.start(self._connect_loop)
                task_status.started()
        finally:
            self._end()
            link.running = False
            link.state = "stopped"

    def _prepare(self) -> None:
        from coredis import ConnectionPool

        # Only to parse the URL into a connection class, location and options: the two
        # connections are made and held here, not leased from the pool.
        self._pool = ConnectionPool.from_url(
            self._settings.url, connect_timeout=self._settings.timeout
        )

    async def _connect_loop(self, *, task_status: trio.TaskStatus[None]) -> None:
        attempt = 0
        started = False
        settings, stats, link = self._settings, self._stats, self._link

        def connected() -> None:
            nonlocal attempt, started
            attempt = 0
            if not started:
                started = True
                task_status.started()

        while True:
            error: Exception | None = None
            try:
                await self._session(connected)
            except Exception as exc:
                error = exc
            was = link.state
            self._end()
            link.state = "disconnected"
            reason = describe(error)
            if was == "connected":
                stats.disconnects += 1
                self._down_since = trio.current_time()
                self._lost_at_disconnect = stats.publish_lost
                logger.warning(
                    "redis broker: lost connection to %s (%s); reconnecting, messages "
                    "published meanwhile do not reach other processes",
                    settings.safe_url,
                    reason,
                    exc_info=error if is_unexpected(error) else None,
                )
            elif was == "connecting":
                self._down_since = trio.current_time()
                self._lost_at_disconnect = stats.publish_lost
                logger.warning(
                    "redis broker: cannot connect to %s (%s); retrying in the background",
                    settings.safe_url,
                    reason,
                    exc_info=error if is_unexpected(error) else None,
                )
            if not started:
                started = True
                task_status.started()
            delay = min(settings.max_delay, settings.base_delay * 2**attempt)
            attempt = min(attempt + 1, 32)
            await trio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self, connected: Callable[[], None]) -> None:
        """Connect, resubscribe, run until a connection fails (then raise)."""
        import anyio

        settings, link = self._settings, self._link
        async with trio.open_nursery() as nursery:
            with trio.fail_after(settings.timeout):
                gate = anyio.CapacityLimiter(1)
                sub = await self._open(nursery, gate, self._inbound.attach)
                pub = await self._open(nursery, anyio.CapacityLimiter(1))
                if settings.policy is not None:
                    await load_scripts(pub, settings.timeout)
            link.sub = sub
            link.pub = pub
            self._inbound.last_received = trio.current_time()
            nursery.start_soon(self._inbound.drain, sub, gate)
            topics = self._wanted()
            waiters = self._channels.subscribe(topics)
            if self._control.handler is not None:
                waiters += self._channels.subscribe_control()
            with trio.fail_after(settings.timeout + len(topics) / 10_000):
                for event in waiters:
                    await event.wait()
            if link.sub is not sub:
                raise ConnectionLost("subscription connection lost")
            nursery.start_soon(self._outbound.sender, pub)
            nursery.start_soon(self._health_check, sub)
            nursery.start_soon(self._keepalive, pub)
            link.state = "connected"
            self._stats.connects += 1
            if self._down_since is None:
                logger.info(
                    "redis broker: connected to %s (origin %s)",
                    settings.safe_url,
                    self._outbound.origin.decode(),
                )
            else:
                logger.info(
                    "redis broker: reconnected to %s after %.1f s, %d topics resubscribed, "
                    "%d publishes lost meanwhile",
                    settings.safe_url,
                    trio.current_time() - self._down_since,
                    len(topics),
                    self._stats.publish_lost - self._lost_at_disconnect,
                )
            if self._down_since is not None:
                # Cut off until now: what did this process miss on its topics?
                nursery.start_soon(self._continuity.check)
            self._down_since = None
            connected()

    async def _open(
        self,
        nursery: trio.Nursery,
        budget: Any,
        prepare: Callable[[BaseConnection], object] | None = None,
    ) -> BaseConnection:
        # One connection of our own (not leased from the pool), so that it is never
        # shared and its push-message reader can be throttled by ``budget``.
        pool = self._pool
        kwargs = {**pool.connection_kwargs, "processing_budget": budget}
        connection: BaseConnection = pool.connection_class(pool.location, **kwargs)
        if prepare is not None:
            prepare(connection)

        async def hold(*, task_status: trio.TaskStatus[None]) -> None:
            await connection.run(task_status=task_status)
            raise ConnectionLost("connection closed by Redis")

        await nursery.start(hold)
        return connection

    def _end(self) -> None:
        """The session ended (or never began): no connection, nothing subscribed, what
        was queued for Redis lost."""
        self._link.sub = None
        self._link.pub = None
        self._channels.reset()
        self._outbound.reset()

    async def _keepalive(self, pub: BaseConnection) -> None:
        """``PING`` the publishing connection every ``health_check_interval`` seconds; no
        answer within ``timeout`` ends the session. A process that only subscribes may
        send nothing on it for long, and a silent network there (no reset, no end of
        stream) would otherwise go unnoticed while every history read, recovery and
        presence update fails after ``timeout``."""
        settings = self._settings
        while True:
            await trio.sleep(settings.health_interval)
            with trio.fail_after(settings.timeout):
                await pub.create_request(b"PING", timeout=settings.timeout)

    async def _health_check(self, sub: BaseConnection) -> None:
        interval = self._settings.health_interval
        inbound = self._inbound
        while True:
            await trio.sleep_until(inbound.last_received + interval)
            if trio.current_time() - inbound.last_received < interval:
                continue
            with trio.fail_after(self._settings.timeout):
                await sub.create_request(b"PING")
            inbound.last_received = trio.current_time()
