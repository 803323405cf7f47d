"""``RedisBroker``: topics shared by every process and host through Redis pub/sub.

::

    server = WebSocketServer([chat], broker=RedisBroker("redis://127.0.0.1:6379/0"))

Each process keeps its own subscribers in a :class:`~trio_wsroutes.MemoryBroker` core and
holds two Redis connections: one subscribed to the channels of the topics that have a
local subscriber, one that publishes. A publish is delivered to local subscribers at once
(encoded once, slow-consumer policy) and queued for Redis; every other process receives it
from Redis and fans it out to its own subscribers. Delivery across processes is at most
once: nothing is retried, a gap is counted, nothing is duplicated.

Wire format of a message on the Redis channel ``<channel_prefix><topic>``::

    wsr1 <kind> <origin> <seq>\\n<payload>

``kind`` is ``t`` (a WebSocket text frame; ``payload`` is UTF-8) or ``b`` (binary);
``origin`` identifies the publishing broker (``-`` for none); ``seq`` numbers the origin's
messages on that topic from 1 (``0`` for none). ``payload`` is the frame exactly as it goes
to WebSocket clients. A message that does not start with ``wsr1 `` is delivered as a text
frame, so ``PUBLISH wsroutes:room:1 '{"type":"message","data":{...}}'`` works from any
Redis client.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Self, cast
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from .._messages import Frame, encode_message
from ._base import Subscriber
from .memory import MemoryBroker

if TYPE_CHECKING:
    from coredis.connection import BaseConnection

__all__ = ["RedisBroker", "RedisBrokerStats", "WireMessage", "decode_wire", "encode_wire"]

logger = logging.getLogger("trio_wsroutes.redis")

MiB: Final = 1024 * 1024

WIRE_MAGIC: Final = b"wsr1 "
"""The first bytes of every message this broker publishes (format version 1)."""
_MAX_HEADER: Final = 256
_FAN_OUT_SLICE: Final = 0.005
"""Seconds of local fan-out between two yields to the scheduler."""
_PUBLISH_BATCH: Final = 256
_SUBSCRIBE_CHUNK: Final = 1000
_MAX_TOPIC_COUNTERS: Final = 100_000
_MAX_ORIGINS_PER_TOPIC: Final = 64

State = Literal["stopped", "connecting", "connected", "disconnected"]


# -- wire format ---------------------------------------------------------------------------


class WireMessage(NamedTuple):
    """A message read from a Redis channel."""

    binary: bool
    origin: bytes | None
    seq: int
    payload: bytes


def encode_wire(frame: Frame, origin: bytes = b"-", seq: int = 0) -> bytes:
    """The bytes published on Redis for ``frame``: header line, then the payload."""
    kind = b"b" if frame.binary else b"t"
    return b"%s%s %s %d\n%s" % (WIRE_MAGIC, kind, origin, seq, frame.payload)


def decode_wire(data: bytes) -> WireMessage | None:
    """Parse a message read from Redis; ``None`` if it is malformed.

    Data without the ``wsr1`` header is a text frame as it stands (valid UTF-8 only).
    """
    if not data.startswith(WIRE_MAGIC):
        try:
            data.decode()
        except UnicodeDecodeError:
            return None
        return WireMessage(False, None, 0, data)
    end = data.find(b"\n", len(WIRE_MAGIC), _MAX_HEADER)
    if end < 0:
        return None
    fields = data[len(WIRE_MAGIC) : end].split(b" ")
    if len(fields) != 3:
        return None
    kind, origin, seq_text = fields
    if kind not in (b"t", b"b") or not origin or not seq_text.isdigit():
        return None
    payload = data[end + 1 :]
    binary = kind == b"b"
    if not binary:
        try:
            payload.decode()
        except UnicodeDecodeError:
            return None
    return WireMessage(binary, None if origin == b"-" else origin, int(seq_text), payload)


# -- counters ------------------------------------------------------------------------------


@attrs.define
class RedisBrokerStats:
    """Running totals of one :class:`RedisBroker` (``broker.stats``), since it was created.

    Delivery between processes is at most once. What did not arrive is counted here:
    ``publish_lost`` on the publishing side, ``missed`` and ``receive_dropped`` on the
    receiving side. ``duplicates`` stays 0 unless something replays messages into Redis.
    """

    connects: int = 0
    """Successful connections to Redis (the first and every reconnection)."""
    disconnects: int = 0
    """Connections lost after they were up (Redis restarted or went away, the network
    failed, a health check timed out, Redis closed a subscriber over its
    ``client-output-buffer-limit pubsub``)."""
    published: int = 0
    """Messages handed to Redis and acknowledged."""
    publish_lost: int = 0
    """Messages not carried to other processes: published while disconnected, over the
    outbound queue's limit, or unacknowledged when the connection failed."""
    received: int = 0
    """Messages received from other processes."""
    receive_dropped: int = 0
    """Received messages dropped because the local fan-out queue was full."""
    missed: int = 0
    """Messages other processes published on a subscribed topic that never arrived
    (gaps in their sequence numbers)."""
    duplicates: int = 0
    """Received messages dropped as repeats of one already delivered."""
    malformed: int = 0
    """Received messages ignored: not in the wire format."""
    inbound_queue_peak_bytes: int = 0
    """The most payload bytes ever waiting for local fan-out at once."""


# -- the broker ----------------------------------------------------------------------------


class _LocalTopics(MemoryBroker):
    """The in-process core, telling the Redis side when a topic loses its last subscriber
    (also when a slow consumer is evicted during a fan-out)."""

    def __init__(self, on_empty: Callable[[str], None]) -> None:
        super().__init__()
        self._on_empty = on_empty

    def discard(self, topic: str, subscriber: Subscriber) -> bool:
        emptied = super().discard(topic, subscriber)
        if emptied:
            self._on_empty(topic)
        return emptied

    def discard_all(self, subscriber: Subscriber) -> list[str]:
        emptied = super().discard_all(subscriber)
        for topic in emptied:
            self._on_empty(topic)
        return emptied

    def active_topics(self) -> list[str]:
        return list(self._topics)


class _ConnectionLost(Exception):
    pass


class RedisBroker:
    """A topic broker shared by processes and hosts through Redis pub/sub (coredis).

    ::

        broker = RedisBroker(os.environ["REDIS_URL"])
        server = WebSocketServer([chat], broker=broker)

    Give each server its own instance; the server runs it during its lifespan (before the
    ``on_startup`` hooks, until after the ``on_shutdown`` hooks). Outside a server, use
    ``async with RedisBroker(url) as broker:`` to keep it connected, or publish once with
    ``await RedisBroker(url).publish(topic, msg)``.

    Delivery to the local subscribers of a publish is immediate; other processes get it
    through Redis, at most once, in publish order per publisher. While Redis is
    unreachable the broker keeps serving local subscribers, reconnects with capped
    exponential backoff and jitter, resubscribes, and counts what was lost in
    :attr:`stats`. :meth:`subscriber_count` is local to this process.

    Options:

    * ``url``: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or
      ``unix:///path/to/socket``.
    * ``channel_prefix``: Redis channel of topic ``t`` is ``channel_prefix + t``.
    * ``max_queued_messages`` / ``max_queued_bytes``: the bound of each of the two queues,
      messages waiting for Redis and messages from Redis waiting for local fan-out. A
      message over the bound is dropped and counted (``publish_lost``,
      ``receive_dropped``), so a slow Redis or a busy process cannot grow memory without
      bound.
    * ``reconnect_delay`` / ``max_reconnect_delay``: backoff between connection attempts,
      doubling from the first to the second, each randomised to 50-100 %.
    * ``timeout``: seconds for connecting, for Redis to acknowledge a command, and for
      ``async with`` to flush queued publishes at exit.
    * ``health_check_interval``: seconds without traffic before the subscription
      connection is checked with a ``PING``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        channel_prefix: str = "wsroutes:",
        max_queued_messages: int = 10_000,
        max_queued_bytes: int = 16 * MiB,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        timeout: float = 5.0,
        health_check_interval: float = 10.0,
    ) -> None:
        if importlib.util.find_spec("coredis") is None:
            raise ImportError(
                "RedisBroker needs coredis: pip install 'trio-wsroutes[redis]'", name="coredis"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {url!r}")
        if max_queued_messages < 1 or max_queued_bytes < 1:
            raise ValueError("queue limits must be positive")
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ValueError("need 0 < reconnect_delay <= max_reconnect_delay")
        if timeout <= 0 or health_check_interval <= 0:
            raise ValueError("timeouts must be positive")
        self._url = url
        self._safe_url = _without_password(parts)
        self._prefix = channel_prefix
        self._max_messages = max_queued_messages
        self._max_bytes = max_queued_bytes
        self._base_delay = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._timeout = timeout
        self._health_interval = health_check_interval

        self.stats: RedisBrokerStats = RedisBrokerStats()
        """Counters: connections, messages published, received, lost, missed."""
        self._local = _LocalTopics(self._release)
        self._state: State = "stopped"
        self._running = False
        self._background: AbstractAsyncContextManager[None] | None = None
        self._pool: Any = None

        # Publishing side: origin id, per-topic sequence numbers, the queue to Redis.
        self._origin = _new_origin()
        self._own_origins: deque[bytes] = deque([self._origin], maxlen=8)
        self._seq: dict[str, int] = {}
        self._outgoing: deque[tuple[bytes, bytes]] = deque()
        self._outgoing_bytes = 0
        self._in_flight = 0
        self._outgoing_lot = trio.lowlevel.ParkingLot()
        self._sent_lot = trio.lowlevel.ParkingLot()
        self._send_overflowing = False

        # Receiving side: the connection, its channels, acks awaited, the fan-out queue.
        self._sub: BaseConnection | None = None
        self._redis_channels: set[bytes] = set()
        self._channel_topics: dict[bytes, str] = {}
        self._sub_waiters: dict[bytes, deque[trio.Event]] = {}
        self._seen: dict[str, OrderedDict[bytes, int]] = {}
        self._inbox: deque[tuple[str, Frame]] = deque()
        self._inbox_bytes = 0
        self._inbox_lot = trio.lowlevel.ParkingLot()
        self._receive_overflowing = False
        self._last_inbound = 0.0
        self._down_since: float | None = None
        self._lost_at_disconnect = 0

    def __repr__(self) -> str:
        return f"<RedisBroker {self._safe_url} {self._state}>"

    # -- state -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Redis URL, password masked."""
        return self._safe_url

    @property
    def origin(self) -> str:
        """This broker's id in the ``origin`` field of the messages it publishes."""
        return self._origin.decode()

    @property
    def state(self) -> State:
        """``"stopped"`` (not running), ``"connecting"`` (first attempt), ``"connected"``
        or ``"disconnected"`` (reconnecting)."""
        return self._state

    @property
    def connected(self) -> bool:
        """``True`` while both Redis connections are up and every topic is subscribed."""
        return self._state == "connected"

    @property
    def inbound_queue_bytes(self) -> int:
        """Payload bytes received from Redis and not yet fanned out to local subscribers."""
        return self._inbox_bytes

    # -- the Broker protocol ---------------------------------------------------------------

    async def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Add ``subscriber`` to ``topic``; the first local subscriber of a topic subscribes
        this process to its Redis channel.

        While connected, returns once Redis has acknowledged the subscription (at most
        ``timeout`` seconds), so that messages other processes publish afterwards arrive.
        """
        self._local.add(topic, subscriber)
        channel = self._channel(topic)
        if self._sub is not None and channel not in self._redis_channels:
            self._send_subscribe([topic])
        waiters = self._sub_waiters.get(channel)
        if waiters:
            with trio.move_on_after(self._timeout):
                await waiters[-1].wait()
        else:
            await trio.lowlevel.checkpoint()

    async def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``topic``; after the last local subscriber leaves,
        this process unsubscribes from the Redis channel."""
        await trio.lowlevel.checkpoint()
        self._local.discard(topic, subscriber)

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove every subscription of ``subscriber``."""
        self._local.discard_all(subscriber)
        await trio.lowlevel.checkpoint()

    async def publish(
        self, topic: str, message: object, *, exclude: Subscriber | None = None
    ) -> int:
        """Publish ``message`` (a ``@message`` instance, or a :class:`Frame`) to every
        subscriber of ``topic`` in every process but ``exclude``.

        A message is encoded as ``server.publish`` does. On a running broker, local
        subscribers get it at once and it is queued for Redis: this never waits on Redis
        and never raises for a Redis fault (a message that cannot be carried is counted
        in ``stats.publish_lost``); it returns the local recipient count. On a broker that
        is not running (a publisher-only handle), it connects, publishes, disconnects and
        returns how many server processes Redis delivered it to; it raises
        :class:`ConnectionError` if Redis cannot be reached.
        """
        frame = message if isinstance(message, Frame) else encode_message(message)
        await trio.lowlevel.checkpoint()
        delivered = self._local.fan_out(topic, frame, exclude=exclude)
        channel = self._channel(topic)
        payload = encode_wire(frame, self._origin, self._next_seq(topic))
        if self._running:
            self._enqueue(channel, payload)
            return delivered
        return await self._publish_once(channel, payload)

    async def publish_binary(
        self, topic: str, data: bytes, *, exclude: Subscriber | None = None
    ) -> int:
        """Publish a binary frame; see :meth:`publish`."""
        return await self.publish(topic, Frame(bytes(data), binary=True), exclude=exclude)

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has **in this process** (not cluster-wide)."""
        return self._local.subscriber_count(topic)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the Redis connections, reconnecting, until cancelled.

        ``await nursery.start(broker.run)`` returns after the first connection attempt,
        whether it succeeded or not (the broker keeps retrying in the background; local
        delivery works meanwhile). A server runs this in its lifespan; a broker runs once
        at a time.
        """
        if self._running:
            raise RuntimeError(
                "this RedisBroker is already running: give each server its own instance"
            )
        _coredis()
        from coredis import ConnectionPool

        # Only to parse the URL into a connection class, location and options: the two
        # connections are made and held here, not leased from the pool.
        self._pool = ConnectionPool.from_url(self._url, connect_timeout=self._timeout)
        self._running = True
        self._state = "connecting"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fan_out_loop)
                await nursery.start(self._connect_loop)
                task_status.started()
        finally:
            self._end_session()
            self._running = False
            self._state = "stopped"

    async def flush(self) -> None:
        """Wait until every queued publish has been acknowledged by Redis or counted as
        lost (at most ``timeout`` seconds)."""
        with trio.move_on_after(self._timeout):
            while (self._outgoing or self._in_flight) and self._state == "connected":
                await self._sent_lot.park()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        background = self._run_in_background()
        await background.__aenter__()
        self._background = background
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        background, self._background = self._background, None
        if background is not None:
            await background.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _run_in_background(self) -> AsyncGenerator[None]:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run)
            try:
                yield
                await self.flush()
            finally:
                nursery.cancel_scope.cancel()

    # -- connection loop --------------------------------------------------------------------

    async def _connect_loop(self, *, task_status: trio.TaskStatus[None]) -> None:
        attempt = 0
        started = False

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
            was = self._state
            self._end_session()
            self._state = "disconnected"
            reason = _describe(error)
            if was == "connected":
                self.stats.disconnects += 1
                self._down_since = trio.current_time()
                self._lost_at_disconnect = self.stats.publish_lost
                logger.warning(
                    "redis broker: lost connection to %s (%s); reconnecting, messages "
                    "published meanwhile do not reach other processes",
                    self._safe_url,
                    reason,
                    exc_info=error if _is_unexpected(error) else None,
                )
            elif was == "connecting":
                self._down_since = trio.current_time()
                self._lost_at_disconnect = self.stats.publish_lost
                logger.warning(
                    "redis broker: cannot connect to %s (%s); retrying in the background",
                    self._safe_url,
                    reason,
                    exc_info=error if _is_unexpected(error) else None,
                )
            if not started:
                started = True
                task_status.started()
            delay = min(self._max_delay, self._base_delay * 2**attempt)
            attempt = min(attempt + 1, 32)
            await trio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self, connected: Callable[[], None]) -> None:
        """Connect, resubscribe, run until a connection fails (then raise)."""
        import anyio

        pool = self._pool
        async with trio.open_nursery() as nursery:
            with trio.fail_after(self._timeout):
                gate = anyio.CapacityLimiter(1)
                sub = await self._open(nursery, pool, gate)
                pub = await self._open(nursery, pool, anyio.CapacityLimiter(1))
            self._sub = sub
            self._last_inbound = trio.current_time()
            nursery.start_soon(self._drain, sub, gate)
            topics = self._local.active_topics()
            waiters = self._send_subscribe(topics)
            with trio.fail_after(self._timeout + len(topics) / 10_000):
                for event in waiters:
                    await event.wait()
            if self._sub is not sub:
                raise _ConnectionLost("subscription connection lost")
            nursery.start_soon(self._sender, pub)
            nursery.start_soon(self._health_check, sub)
            self._state = "connected"
            self.stats.connects += 1
            if self._down_since is None:
                logger.info(
                    "redis broker: connected to %s (origin %s)", self._safe_url, self.origin
                )
            else:
                logger.info(
                    "redis broker: reconnected to %s after %.1f s, %d topics resubscribed, "
                    "%d publishes lost meanwhile",
                    self._safe_url,
                    trio.current_time() - self._down_since,
                    len(topics),
                    self.stats.publish_lost - self._lost_at_disconnect,
                )
            self._down_since = None
            connected()

    async def _open(self, nursery: trio.Nursery, pool: Any, budget: Any) -> BaseConnection:
        # One connection of our own (not leased from the pool), so that it is never
        # shared and its push-message reader can be throttled by ``budget``.
        kwargs = {**pool.connection_kwargs, "processing_budget": budget}
        connection: BaseConnection = pool.connection_class(pool.location, **kwargs)

        async def hold(*, task_status: trio.TaskStatus[None]) -> None:
            await connection.run(task_status=task_status)
            raise _ConnectionLost("connection closed by Redis")

        await nursery.start(hold)
        return connection

    def _end_session(self) -> None:
        self._sub = None
        self._redis_channels.clear()
        for waiters in self._sub_waiters.values():
            for event in waiters:
                event.set()
        self._sub_waiters.clear()
        lost = self._in_flight + len(self._outgoing)
        if lost:
            self.stats.publish_lost += lost
        self._outgoing.clear()
        self._outgoing_bytes = 0
        self._in_flight = 0
        self._send_overflowing = False
        self._sent_lot.unpark_all()

    async def _health_check(self, sub: BaseConnection) -> None:
        interval = self._health_interval
        while True:
            await trio.sleep_until(self._last_inbound + interval)
            if trio.current_time() - self._last_inbound < interval:
                continue
            with trio.fail_after(self._timeout):
                await sub.create_request(b"PING")
            self._last_inbound = trio.current_time()

    # -- receiving ---------------------------------------------------------------------------

    def _send_subscribe(self, topics: list[str]) -> list[trio.Event]:
        sub = self._sub
        events: list[trio.Event] = []
        if sub is None or not topics:
            return events
        channels: list[bytes] = []
        for topic in topics:
            channel = self._channel(topic)
            self._channel_topics[channel] = topic
            self._redis_channels.add(channel)
            event = trio.Event()
            self._sub_waiters.setdefault(channel, deque()).append(event)
            events.append(event)
            channels.append(channel)
        try:
            for start in range(0, len(channels), _SUBSCRIBE_CHUNK):
                sub.send_command(b"SUBSCRIBE", *channels[start : start + _SUBSCRIBE_CHUNK])
        except Exception:
            # The connection is failing: the session ends and the next one resubscribes.
            for event in events:
                event.set()
        return events

    def _release(self, topic: str) -> None:
        """The last local subscriber of ``topic`` left: leave its Redis channel."""
        channel = self._channel(topic)
        self._seen.pop(topic, None)
        self._channel_topics.pop(channel, None)
        sub = self._sub
        if sub is not None and channel in self._redis_channels:
            self._redis_channels.discard(channel)
            try:
                sub.send_command(b"UNSUBSCRIBE", channel)
            except Exception:
                pass  # the connection is failing; the next one subscribes only what is needed

    async def _drain(self, sub: BaseConnection, gate: Any) -> None:
        """Move what Redis pushes into the bounded fan-out queue, as fast as it arrives.

        coredis parses every chunk read from the socket into an unbounded buffer. When
        coredis exposes that buffer as we expect, it is emptied at every turn without
        yielding; otherwise each message costs a turn of the scheduler and ``gate`` (the
        connection's processing budget) stops coredis reading more until the buffer is
        empty. Either way it never holds more than a few socket reads.
        """
        messages = sub.push_messages
        take = _nowait_receiver(sub)
        on_push = self._on_push
        while True:
            on_push(await anext(messages))
            if take is not None:
                while True:
                    try:
                        push = take()
                    except Exception:
                        break  # empty (or closed: the generator raises next)
                    on_push(push)
            else:
                async with gate:
                    while sub.usable and not sub.reusable:
                        on_push(await anext(messages))

    def _on_push(self, push: object) -> None:
        self._last_inbound = trio.current_time()
        if not isinstance(push, list):
            return
        items = cast("list[object]", push)
        if len(items) < 2:
            return
        kind, channel = items[0], items[1]
        if not isinstance(channel, bytes):
            return
        if kind == b"message" and len(items) == 3:
            data = items[2]
            if isinstance(data, bytes):
                self._on_message(channel, data)
        elif kind == b"subscribe":
            waiters = self._sub_waiters.get(channel)
            if waiters:
                waiters.popleft().set()
                if not waiters:
                    del self._sub_waiters[channel]

    def _on_message(self, channel: bytes, data: bytes) -> None:
        message = decode_wire(data)
        if message is None:
            self.stats.malformed += 1
            return
        origin = message.origin
        if origin is not None and origin in self._own_origins:
            return  # ours: delivered locally when it was published
        topic = self._channel_topics.get(channel)
        if topic is None:
            return  # a channel we just left
        if origin is not None and message.seq:
            seen = self._seen.get(topic)
            if seen is None:
                seen = self._seen[topic] = OrderedDict()
            last = seen.get(origin)
            if last is not None:
                if message.seq <= last:
                    self.stats.duplicates += 1
                    return
                if message.seq > last + 1:
                    self.stats.missed += message.seq - last - 1
                seen.move_to_end(origin)
            elif len(seen) >= _MAX_ORIGINS_PER_TOPIC:
                seen.popitem(last=False)
            seen[origin] = message.seq
        self.stats.received += 1
        size = len(message.payload)
        if self._inbox and (
            len(self._inbox) >= self._max_messages or self._inbox_bytes + size > self._max_bytes
        ):
            self.stats.receive_dropped += 1
            if not self._receive_overflowing:
                self._receive_overflowing = True
                logger.warning(
                    "redis broker: local fan-out is behind (%d messages, %d bytes queued); "
                    "dropping messages from Redis until it catches up",
                    len(self._inbox),
                    self._inbox_bytes,
                )
            return
        self._inbox.append((topic, Frame(message.payload, binary=message.binary)))
        self._inbox_bytes += size
        if self._inbox_bytes > self.stats.inbound_queue_peak_bytes:
            self.stats.inbound_queue_peak_bytes = self._inbox_bytes
        self._inbox_lot.unpark()

    async def _fan_out_loop(self) -> None:
        inbox = self._inbox
        local = self._local
        while True:
            if not inbox:
                if self._receive_overflowing:
                    self._receive_overflowing = False
                    logger.info(
                        "redis broker: local fan-out caught up (%d messages dropped so far)",
                        self.stats.receive_dropped,
                    )
                await self._inbox_lot.park()
                continue
            deadline = time.perf_counter() + _FAN_OUT_SLICE
            while inbox:
                topic, frame = inbox.popleft()
                self._inbox_bytes -= frame.size
                local.fan_out(topic, frame)
                if time.perf_counter() >= deadline:
                    break
            await trio.lowlevel.checkpoint()

    # -- publishing --------------------------------------------------------------------------

    def _channel(self, topic: str) -> bytes:
        return (self._prefix + topic).encode()

    def _next_seq(self, topic: str) -> int:
        seq = self._seq.get(topic, 0) + 1
        if seq == 1 and len(self._seq) >= _MAX_TOPIC_COUNTERS:
            # Bound the counters: a new origin starts every topic afresh for receivers.
            self._origin = _new_origin()
            self._own_origins.append(self._origin)
            self._seq.clear()
        self._seq[topic] = seq
        return seq

    def _enqueue(self, channel: bytes, payload: bytes) -> None:
        if self._state != "connected":
            self.stats.publish_lost += 1
            return
        out = self._outgoing
        if out and (
            len(out) >= self._max_messages or self._outgoing_bytes + len(payload) > self._max_bytes
        ):
            self.stats.publish_lost += 1
            if not self._send_overflowing:
                self._send_overflowing = True
                logger.warning(
                    "redis broker: Redis is not keeping up with publishes (%d queued); "
                    "dropping publishes until it does",
                    len(out),
                )
            return
        out.append((channel, payload))
        self._outgoing_bytes += len(payload)
        self._outgoing_lot.unpark()

    async def _sender(self, pub: BaseConnection) -> None:
        out = self._outgoing
        while True:
            if not out:
                if self._send_overflowing:
                    self._send_overflowing = False
                    logger.info("redis broker: publishing caught up")
                self._sent_lot.unpark_all()
                await self._outgoing_lot.park()
                continue
            batch = [out.popleft() for _ in range(min(len(out), _PUBLISH_BATCH))]
            self._outgoing_bytes -= sum(len(payload) for _, payload in batch)
            self._in_flight = len(batch)
            requests = [
                pub.create_request(b"PUBLISH", channel, payload, timeout=self._timeout)
                for channel, payload in batch
            ]
            for request in requests:
                await request
                self._in_flight -= 1
                self.stats.published += 1

    async def _publish_once(self, channel: bytes, payload: bytes) -> int:
        from coredis import Redis
        from coredis.retry import NoRetryPolicy

        client = Redis.from_url(
            self._url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self._timeout,
            stream_timeout=self._timeout,
        )
        try:
            with trio.fail_after(2 * self._timeout):
                async with client:
                    return await client.publish(channel, payload)
        except Exception as exc:
            if _is_unexpected(exc):
                raise
            self.stats.publish_lost += 1
            raise ConnectionError(
                f"could not publish to Redis at {self._safe_url}: {_describe(exc)}"
            ) from exc


# -- helpers -------------------------------------------------------------------------------


def _coredis() -> None:
    try:
        import coredis  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:  # pragma: no cover - checked in __init__ already
        raise ImportError(
            "RedisBroker needs coredis: pip install 'trio-wsroutes[redis]'", name="coredis"
        ) from exc


def _new_origin() -> bytes:
    return f"{os.getpid()}-{secrets.token_hex(6)}".encode()


def _without_password(parts: Any) -> str:
    if parts.password is None:
        return str(urlunsplit(parts))
    netloc = str(parts.netloc).rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return str(urlunsplit(parts._replace(netloc=user + netloc)))


def _nowait_receiver(connection: BaseConnection) -> Callable[[], Any] | None:
    """coredis' own push-message stream, to empty without a scheduler turn per message
    (coredis 6 keeps it in an anyio memory stream); ``None`` if it is not there."""
    stream = getattr(connection, "_push_message_buffer_out", None)
    receive_nowait = getattr(stream, "receive_nowait", None)
    return cast("Callable[[], Any]", receive_nowait) if callable(receive_nowait) else None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    leaves = _leaves(exc)
    # Prefer the root cause over the follow-on errors of the other tasks.
    leaf = next((e for e in leaves if not isinstance(e, _ConnectionLost)), leaves[0])
    text = str(leaf)
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


def _is_unexpected(exc: BaseException | None) -> bool:
    """A failure that is not Redis being unreachable, slow or gone: a bug worth a traceback."""
    if exc is None:
        return False
    from coredis.exceptions import RedisError

    expected: tuple[type[BaseException], ...] = (
        RedisError,
        OSError,
        TimeoutError,
        trio.TooSlowError,
        _ConnectionLost,
    )
    try:
        import anyio

        expected += (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)
    except ImportError:  # pragma: no cover
        pass
    return not all(isinstance(leaf, expected) for leaf in _leaves(exc))
