"""The connection engine: one Trio nursery per connection, three tasks, two queues.

::

    transport.receive() -> [reader] -> inbound channel -> [dispatcher] -> handlers
                                                           |
    transport.send()    <- [writer] <- outbox (bytes) <----+-- ws.send / publish / replies

* The **reader** is the only task that receives. It applies the size limit, the rate
  limit and the idle timeout, and hands messages on through a bounded memory channel,
  so a slow handler stops the reader and the peer's TCP window closes. Refusals (too
  big, rate limited) travel through the same channel, so what came before them is
  answered first, in order.
* The **dispatcher** (the connection's own task) decodes, validates and calls handlers
  one message at a time, in arrival order.
* The **writer** is the only task that sends. The outbox is bounded in bytes: ``send``
  waits while it is over ``backpressure_limit``; a publish never waits, and a subscriber
  whose outbox is full is evicted with close code 1013.

When nothing is queued, ``send`` and ``deliver`` first offer the frame to the transport's
``try_send_nowait``: the native transport writes it to the socket at once (a publish to
many connections then costs one non-blocking write each, of bytes framed once), and only
what the socket did not take waits. An urgent close (eviction, server shutdown, heartbeat
timeout) drops what is queued and cancels the send in progress, so the close frame goes
out next; transports keep a cancelled send whole.

The engine talks to the network only through :class:`~trio_wsroutes._transports.Transport`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import attrs
import orjson
import trio

from ._context import Context
from ._errors import (
    HANDLER_TIMEOUT,
    INTERNAL_ERROR,
    RATE_LIMITED,
    UNKNOWN_TYPE,
    MessageError,
    ProtocolError,
    ValidationError,
)
from ._messages import Envelope, Frame, encode_error, encode_message, parse_envelope
from ._stats import ServerStats
from ._transports import Disconnect, Transport, TransportClosed, Violation
from ._validation import validation_details

if TYPE_CHECKING:
    from ._broker import Broker
    from ._routes import Heartbeat, RateLimit, WebSocketRoute

__all__ = ["CloseCode", "Connection", "ConnectionClosed", "EngineOptions"]

logger = logging.getLogger("trio_wsroutes")

ServerT_contra = TypeVar("ServerT_contra", contravariant=True)

SlowConsumerPolicy = Literal["close", "drop"]
"""What a publish does for a subscriber whose outbox would pass ``backpressure_limit``:
``"close"`` it with 1013, or ``"drop"`` the message for it alone."""


class CloseCode:
    """WebSocket close codes the framework uses."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001
    """Server shutdown."""
    UNSUPPORTED_DATA: Final = 1003
    """A binary frame on a route without ``on_binary``."""
    NO_STATUS: Final = 1005
    ABNORMAL: Final = 1006
    """The connection was lost without a close frame."""
    POLICY_VIOLATION: Final = 1008
    """Origin refused, or the rate limit when configured to close."""
    MESSAGE_TOO_BIG: Final = 1009
    """A message over ``max_payload_length``."""
    INTERNAL_ERROR: Final = 1011
    """A handler crashed, or the peer missed a heartbeat (reason ``"heartbeat timeout"``)."""
    TRY_AGAIN_LATER: Final = 1013
    """Evicted as a slow consumer: the outbox went over ``backpressure_limit``."""


class ConnectionClosed(Exception):
    """Raised by ``send`` and friends on a connection that has closed."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed with code {code}")
        self.code: int = code
        self.reason: str = reason


@attrs.frozen
class EngineOptions:
    """Per-connection limits, set from :class:`~trio_wsroutes.WebSocketServer` options."""

    max_payload_length: int = 16 * 1024 * 1024
    idle_timeout: float | None = 120.0
    backpressure_limit: int = 16 * 1024 * 1024
    max_queued_messages: int = 16
    close_timeout: float = 5.0
    slow_consumer_policy: SlowConsumerPolicy = "close"
    rate_limit: RateLimit | None = None
    """The server's default rate limit, for routes without their own."""
    handler_timeout: float | None = None
    """Seconds a message handler may run (routes may set their own)."""
    max_topics_per_connection: int = 1000
    max_topic_length: int = 256


class _Closing:
    """Outbox marker: send a close frame, then end the connection."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _RateLimited:
    """Inbound marker: a message refused by the rate limit (answered in order)."""

    __slots__ = ("id",)

    def __init__(self, request_id: str | int | None) -> None:
        self.id = request_id


_Inbound = str | bytes | _Closing | _RateLimited
"""What the reader hands the dispatcher: frames, or refusals to answer in order."""


def _request_id_of(message: str | bytes) -> str | int | None:
    # Only on the refusal path: the id lets the client match the error to its request.
    if type(message) is not str:
        return None
    try:
        return parse_envelope(message).id
    except ProtocolError as error:
        return error.request_id


class _Outbox:
    """A FIFO of frames bounded in bytes; the writer is its only consumer."""

    __slots__ = ("_has_items", "_has_space", "frames", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.frames: deque[Frame | _Closing] = deque()
        self.size = 0
        self.limit = limit
        self._has_items = trio.lowlevel.ParkingLot()
        self._has_space = trio.lowlevel.ParkingLot()

    def put_nowait(self, item: Frame | _Closing) -> None:
        self.frames.append(item)
        if type(item) is Frame:
            self.size += item.size
        self._has_items.unpark()

    async def wait_for_space(self) -> None:
        while self.size >= self.limit:
            await self._has_space.park()

    async def get(self) -> Frame | _Closing:
        while not self.frames:
            await self._has_items.park()
        item = self.frames.popleft()
        if type(item) is Frame:
            self.size -= item.size
            if self.size < self.limit and self._has_space:
                self._has_space.unpark_all()
        return item

    def clear(self) -> None:
        self.frames.clear()
        self.size = 0
        self._has_space.unpark_all()


class _TokenBucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.tokens = float(capacity)
        self.stamp = trio.current_time()

    def take(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if they are there."""
        now = trio.current_time()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def spend(self, cost: float) -> bool:
        """Spend ``cost`` unless the allowance is used up; it may go into debt, so a
        message bigger than the bucket passes when the bucket is full."""
        now = trio.current_time()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens > 0:
            self.tokens -= cost
            return True
        return False


def _byte_length(message: str | bytes) -> int:
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode())


_PING = b'{"type":"ping"}'


class Connection(Generic[ServerT_contra]):
    """One WebSocket connection, as handlers see it.

    ``Connection[ServerMessage]`` accepts only ``ServerMessage`` in :meth:`send` and
    :meth:`publish`. Methods that may wait are async.
    """

    __slots__ = (
        "_broker",
        "_cancel_scope",
        "_close_code",
        "_close_reason",
        "_closing",
        "_handlers_done",
        "_last_received",
        "_on_gone",
        "_options",
        "_outbox",
        "_route",
        "_send_scope",
        "_stats",
        "_topics",
        "_transport",
        "context",
        "dropped_messages",
        "id",
        "subprotocol",
    )

    def __init__(
        self,
        *,
        transport: Transport,
        route: WebSocketRoute[Any, Any],
        context: Context[Any],
        broker: Broker,
        options: EngineOptions,
        stats: ServerStats | None = None,
        subprotocol: str | None = None,
        on_gone: Callable[[Connection[Any]], None] = lambda _: None,
    ) -> None:
        self.id: str = context.connection_id
        """The connection's unique id (same as ``ctx.connection_id``)."""
        self.context: Context[Any] = context
        """The connection's :class:`~trio_wsroutes.Context` (user, params, data)."""
        self._transport = transport
        self._route = route
        self._broker = broker
        self._options = options
        self._on_gone = on_gone
        self._stats = stats if stats is not None else ServerStats()
        self.subprotocol: str | None = subprotocol
        """The subprotocol selected at the upgrade, if the route declares any."""
        self.dropped_messages: int = 0
        """Published messages dropped for this connection (slow-consumer policy ``"drop"``)."""
        self._outbox = _Outbox(options.backpressure_limit)
        self._topics: set[str] = set()
        self._closing = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._cancel_scope: trio.CancelScope | None = None
        self._send_scope: trio.CancelScope | None = None
        self._handlers_done = False
        self._last_received = trio.current_time()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<Connection {self.id} {self._route.path!r} {state}>"

    # -- public API --------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The route path this connection came in on (the pattern, e.g. ``/chat/:room``)."""
        return self._route.path

    @property
    def user(self) -> Any:
        """Shortcut for ``ws.context.user``."""
        return self.context.user

    @property
    def buffered_amount(self) -> int:
        """Bytes queued for this client and not yet handed to the transport."""
        return self._outbox.size

    @property
    def topics(self) -> frozenset[str]:
        """The topics this connection is subscribed to."""
        return frozenset(self._topics)

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed; sends then raise."""
        return self._closing

    @property
    def close_code(self) -> int | None:
        """The close code, once the connection has closed."""
        return self._close_code

    async def send(self, message: ServerT_contra) -> None:
        """Send a server message to this client.

        Waits while more than ``backpressure_limit`` bytes are queued for this client.
        Raises :class:`ConnectionClosed` if the connection has closed.
        """
        await self._send_frame(encode_message(message))

    async def send_binary(self, data: bytes) -> None:
        """Send a binary frame; waits like :meth:`send`."""
        await self._send_frame(Frame(bytes(data), binary=True))

    async def send_text(self, text: str) -> None:
        """Send a raw text frame, not an envelope (for clients that speak another
        protocol; see ``on_text``); waits like :meth:`send`."""
        if not isinstance(text, str):
            raise TypeError("send_text takes a str")
        await self._send_frame(Frame(text.encode()))

    async def publish(
        self, topic: str, message: ServerT_contra, *, include_self: bool = False
    ) -> int:
        """Publish to every subscriber of ``topic``, skipping this connection unless
        ``include_self``. The message is encoded once. Returns the local recipient count.
        """
        return await self._broker.publish(
            topic, encode_message(message), exclude=None if include_self else self
        )

    async def publish_binary(self, topic: str, data: bytes, *, include_self: bool = False) -> int:
        """Publish a binary frame to ``topic``; see :meth:`publish`."""
        return await self._broker.publish(
            topic, Frame(bytes(data), binary=True), exclude=None if include_self else self
        )

    async def subscribe(self, topic: str) -> None:
        """Subscribe to ``topic``; subscriptions end when the connection closes.

        Raises :class:`MessageError` (``INVALID_TOPIC``, ``TOO_MANY_TOPICS``) past the
        server's ``max_topic_length`` and ``max_topics_per_connection``; raised in a
        handler, it reaches the client as an error envelope.
        """
        if not isinstance(topic, str):
            raise TypeError("topic must be a string")
        if self._closing:
            raise ConnectionClosed(self._close_code or CloseCode.NORMAL, self._close_reason)
        options = self._options
        if not 0 < len(topic) <= options.max_topic_length:
            raise MessageError(
                f"Topic names are 1 to {options.max_topic_length} characters", "INVALID_TOPIC"
            )
        if topic not in self._topics and len(self._topics) >= options.max_topics_per_connection:
            raise MessageError(
                f"At most {options.max_topics_per_connection} subscriptions per connection",
                "TOO_MANY_TOPICS",
            )
        self._topics.add(topic)
        await self._broker.subscribe(topic, self)

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe from ``topic`` (no error if not subscribed)."""
        self._topics.discard(topic)
        await self._broker.unsubscribe(topic, self)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection after the frames already queued are sent.

        Handlers of this connection are cancelled once the close frame is out.
        """
        self._begin_close(code, reason)
        await trio.lowlevel.checkpoint()

    # -- used by brokers and the registry ----------------------------------------------

    def deliver(self, frame: Frame) -> bool:
        """Queue a published frame without waiting (the broker's entry point).

        If the frame would take the outbox over ``backpressure_limit``, the server's
        slow-consumer policy applies: ``"close"`` evicts the connection with 1013,
        ``"drop"`` drops this frame for it (counted in ``dropped_messages``). Returns
        ``False`` when the connection no longer takes frames.
        """
        if self._closing:
            return False
        outbox = self._outbox
        if not outbox.frames and self._transport.try_send_nowait(frame):
            return True
        if outbox.size + frame.size > outbox.limit and outbox.size > 0:
            if self._options.slow_consumer_policy == "drop":
                self.dropped_messages += 1
                self._stats.messages_dropped += 1
                return True
            self._stats.slow_consumer_closes += 1
            self._evict()
            return False
        outbox.put_nowait(frame)
        return True

    # -- internals ---------------------------------------------------------------------

    async def _send_frame(self, frame: Frame) -> None:
        if self._closing:
            raise ConnectionClosed(self._close_code or CloseCode.NORMAL, self._close_reason)
        outbox = self._outbox
        if outbox.size >= outbox.limit:
            await outbox.wait_for_space()
            if self._closing:
                raise ConnectionClosed(self._close_code or CloseCode.NORMAL, self._close_reason)
        else:
            # Not a full checkpoint: a yield here would cost a scheduler pass per message.
            # Cancellation is still honoured, and a sender that never yields parks as soon
            # as the outbox reaches the limit.
            await trio.lowlevel.checkpoint_if_cancelled()
        if not outbox.frames and self._transport.try_send_nowait(frame):
            return
        outbox.put_nowait(frame)

    def _evict(self) -> None:
        logger.warning("evicting slow consumer %s: %d bytes queued", self.id, self._outbox.size)
        self._close_now(CloseCode.TRY_AGAIN_LATER, "slow consumer")
        self._topics.clear()
        self._on_gone(self)

    def _close_now(self, code: int, reason: str) -> None:
        """Close without waiting for what is queued: drop it, cancel the send in
        progress, and have the close frame (``code``, or the one of a close already
        begun) go out next."""
        if self._closing:
            if self._send_scope is None:
                return  # the close frame is on its way, or the writer has finished
            code, reason = self._close_code or code, self._close_reason
            self._outbox.clear()
            self._outbox.put_nowait(_Closing(code, reason))
        else:
            self._outbox.clear()
            self._begin_close(code, reason)
        if self._send_scope is not None:
            self._send_scope.cancel()

    def _begin_close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self._close_code = code
        self._close_reason = reason
        self._outbox.put_nowait(_Closing(code, reason))
        if self._cancel_scope is not None:
            # A client that stops reading must not hold the connection open.
            self._cancel_scope.deadline = min(
                self._cancel_scope.deadline, trio.current_time() + self._options.close_timeout
            )

    def _peer_gone(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            self._close_code = code
            self._close_reason = reason
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _run(self) -> None:
        """Run the connection until it closes; ``on_close`` runs exactly once."""
        route = self._route
        receive_channel: trio.MemoryReceiveChannel[_Inbound]
        send_channel, receive_channel = trio.open_memory_channel[_Inbound](
            self._options.max_queued_messages
        )
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader, send_channel)
                if route.heartbeat_config is not None:
                    nursery.start_soon(self._heartbeat, route.heartbeat_config)
                await self._dispatcher(receive_channel)
        finally:
            self._stats.connections_closed += 1
            self._closing = True
            if self._close_code is None:
                self._close_code = CloseCode.ABNORMAL
            self._outbox.clear()
            self._on_gone(self)
            with trio.CancelScope(shield=True):
                self._topics.clear()
                await self._broker.unsubscribe_all(self)
                if route.close_handler is not None:
                    with trio.move_on_after(self._options.close_timeout):
                        await self._call_hook(
                            route.close_handler,
                            self,
                            self._close_code,
                            self._close_reason,
                            self.context,
                        )

    async def _reader(self, channel: trio.MemorySendChannel[_Inbound]) -> None:
        transport = self._transport
        options = self._options
        route = self._route
        max_len = options.max_payload_length
        idle = options.idle_timeout
        limit = route.rate_limit_config or options.rate_limit
        bucket = byte_bucket = None
        close_on_limit = False
        if limit is not None:
            bucket = _TokenBucket(limit.messages_per_second, limit.capacity)
            if limit.bytes_per_second is not None:
                byte_bucket = _TokenBucket(limit.bytes_per_second, limit.bytes_per_second)
            close_on_limit = limit.action == "close"
        accepts_binary = route.binary_handler is not None
        deadline = math.inf if idle is None else trio.current_time() + idle
        async with channel:
            while True:
                with trio.CancelScope(deadline=deadline) as idle_scope:
                    bumped = trio.current_time()
                    while True:
                        try:
                            message = await transport.receive()
                        except TransportClosed:
                            self._peer_gone(CloseCode.ABNORMAL, "")
                            return
                        now = self._last_received = trio.current_time()
                        if idle is not None and now - bumped >= 1.0:
                            # Move the deadline at most once a second: the timeout fires
                            # between idle and idle + 1 s, and the hot path stays cheap.
                            idle_scope.deadline = now + idle
                            bumped = now
                        # Refusals travel through the inbound queue like messages, so
                        # that what the client sent before them is still handled, in order.
                        item: _Inbound
                        if type(message) is str:
                            item = message
                            if len(message) * 4 > max_len and len(message.encode()) > max_len:
                                item = _Closing(CloseCode.MESSAGE_TOO_BIG, "message too big")
                        elif type(message) is bytes:
                            item = message
                            if not accepts_binary:
                                item = _Closing(CloseCode.UNSUPPORTED_DATA, "binary not accepted")
                            elif len(message) > max_len:
                                item = _Closing(CloseCode.MESSAGE_TOO_BIG, "message too big")
                        elif isinstance(message, Violation):
                            item = _Closing(message.code, message.reason)
                        else:
                            assert isinstance(message, Disconnect)
                            self._peer_gone(message.code, message.reason)
                            return
                        if (
                            bucket is not None
                            and type(item) is not _Closing
                            and not (
                                bucket.take()
                                and (
                                    byte_bucket is None or byte_bucket.spend(_byte_length(message))  # type: ignore[arg-type]
                                )
                            )
                        ):
                            if close_on_limit:
                                item = _Closing(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                            else:
                                item = _RateLimited(_request_id_of(message))  # type: ignore[arg-type]
                        try:
                            channel.send_nowait(item)
                        except trio.WouldBlock:
                            await channel.send(item)  # the dispatcher is behind: wait
                        if type(item) is _Closing:
                            return
                # Only an idle timeout gets here. Frames the engine does not see (pongs)
                # count as activity too, where the transport can tell.
                assert idle is not None
                activity = transport.last_activity
                if activity is not None and activity + idle > trio.current_time():
                    deadline = activity + idle
                    continue
                await channel.send(_Closing(CloseCode.NORMAL, "idle timeout"))
                return

    async def _writer(self) -> None:
        outbox = self._outbox
        transport = self._transport
        closing: _Closing | None = None
        try:
            while closing is None:
                # _close_now cancels this scope to interrupt a send to a client that
                # does not read; the outbox then holds only the close.
                with trio.CancelScope() as self._send_scope:
                    while True:
                        item = await outbox.get()
                        if type(item) is Frame:
                            await transport.send(item)
                        else:
                            assert isinstance(item, _Closing)
                            closing = item
                            break
            self._send_scope = None
            await transport.close(closing.code, closing.reason)
        except TransportClosed:
            self._send_scope = None
            self._peer_gone(CloseCode.ABNORMAL, "")
            return
        assert self._cancel_scope is not None
        self._cancel_scope.cancel()

    async def _heartbeat(self, config: Heartbeat) -> None:
        ping = Frame(_PING)
        transport = self._transport
        interval, timeout = config.interval, config.timeout
        next_ping = trio.current_time() + interval
        sent_at: float | None = None
        while not self._closing:
            wake = next_ping if sent_at is None else min(next_ping, sent_at + timeout)
            await trio.sleep_until(wake)
            if self._closing:
                return
            now = trio.current_time()
            if sent_at is not None:
                activity = transport.last_activity
                if self._last_received >= sent_at or (activity or -math.inf) >= sent_at:
                    sent_at = None  # answered (any message counts)
                elif now >= sent_at + timeout:
                    logger.info("closing %s: no answer to the heartbeat", self.id)
                    self._close_now(CloseCode.INTERNAL_ERROR, "heartbeat timeout")
                    return
            if now >= next_ping:
                if sent_at is None:
                    # Tiny, and it must reach even a client that is behind: past the limit.
                    if self._outbox.frames or not transport.try_send_nowait(ping):
                        self._outbox.put_nowait(ping)
                    sent_at = now
                next_ping = now + interval

    async def _dispatcher(self, channel: trio.MemoryReceiveChannel[_Inbound]) -> None:
        route = self._route
        context = self.context
        if route.connect_handler is not None and not await self._guard(
            route.connect_handler(self, context), None
        ):
            return
        async with channel:
            while True:
                try:
                    message = channel.receive_nowait()
                except trio.WouldBlock:
                    try:
                        message = await channel.receive()
                    except trio.EndOfChannel:
                        break
                except trio.EndOfChannel:
                    break
                if self._closing:
                    break
                if type(message) is str:
                    await self._dispatch_text(message)
                elif type(message) is bytes:
                    assert route.binary_handler is not None
                    await self._guard(route.binary_handler(self, message, context), None)
                elif type(message) is _RateLimited:
                    await self._reply(
                        encode_error(RATE_LIMITED, "Too many messages; slow down", message.id)
                    )
                else:
                    assert type(message) is _Closing
                    self._begin_close(message.code, message.reason)
                if self._closing:
                    break

    async def _dispatch_text(self, text: str) -> None:
        route = self._route
        try:
            envelope = parse_envelope(text)
        except ProtocolError as error:
            if route.text_handler is not None:
                await self._guard(route.text_handler(self, text, self.context), None)
                return
            await self._bad_input(error, error.request_id)
            return
        spec = route.handlers.get(envelope.type)
        if spec is None:
            if route.heartbeat_config is not None and envelope.type in ("ping", "pong"):
                if envelope.type == "ping":
                    body: dict[str, Any] = {"type": "pong"}
                    if envelope.id is not None:
                        body["id"] = envelope.id
                    await self._reply(Frame(orjson.dumps(body)))
                return  # a pong: the reader has already counted it as activity
            wire = envelope.type if len(envelope.type) <= 64 else envelope.type[:64] + "..."
            await self._bad_input(
                ProtocolError(f"Unknown message type: {wire!r}", UNKNOWN_TYPE), envelope.id
            )
            return
        try:
            data = spec.structure(envelope.data, spec.schema)
        except Exception as exc:
            await self._bad_input(ValidationError(validation_details(exc)), envelope.id)
            return
        await self._call_handler(spec.handler, data, envelope)

    async def _call_handler(
        self, handler: Callable[..., Awaitable[Any]], data: Any, envelope: Envelope
    ) -> None:
        timeout = self._route.handler_timeout_seconds or self._options.handler_timeout
        result: Any = None
        try:
            if timeout is None:
                result = await handler(self, data, self.context)
            else:
                with trio.move_on_after(timeout) as scope:
                    result = await handler(self, data, self.context)
                if scope.cancelled_caught:
                    await self._bad_input(
                        MessageError(f"Handler took longer than {timeout:g} s", HANDLER_TIMEOUT),
                        envelope.id,
                    )
                    return
        except MessageError as error:
            await self._reply(encode_error(error.code, error.message, envelope.id, error.details))
            return
        except ConnectionClosed:
            return
        except Exception as exc:
            await self._crash(exc, envelope.id)
            return
        if result is not None:
            try:
                frame = encode_message(result, envelope.id)
            except Exception as exc:
                await self._crash(exc, envelope.id)
                return
            await self._reply(frame)

    async def _guard(self, call: Awaitable[Any], request_id: str | int | None) -> bool:
        """Await a hook; on an unexpected exception crash the connection (returns False)."""
        try:
            await call
        except ConnectionClosed:
            return False
        except Exception as exc:
            await self._crash(exc, request_id)
            return False
        return True

    async def _reply(self, frame: Frame) -> None:
        try:
            await self._send_frame(frame)
        except ConnectionClosed:
            pass

    async def _bad_input(self, error: MessageError, request_id: str | int | None) -> None:
        await self._reply(encode_error(error.code, error.message, request_id, error.details))
        if self._route.error_handler is not None:
            await self._call_hook(self._route.error_handler, self, error, self.context)

    async def _crash(self, exc: Exception, request_id: str | int | None) -> None:
        self._stats.handler_errors += 1
        logger.error(
            "handler error on %s (connection %s)", self._route.path, self.id, exc_info=exc
        )
        if self._route.error_handler is not None:
            await self._call_hook(self._route.error_handler, self, exc, self.context)
        if not self._closing:
            self._outbox.put_nowait(
                encode_error(INTERNAL_ERROR, "Internal server error", request_id)
            )
        self._begin_close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _call_hook(self, hook: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await hook(*args)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("error in %s hook of %s", hook.__name__, self._route.path)


def new_context(connection_id: str, user: Any, request: Any) -> Context[Any]:
    """A fresh context for an accepted connection."""
    return Context(
        connection_id=connection_id,
        connected_at=datetime.now(UTC),
        user=user,
        request=request,
    )
