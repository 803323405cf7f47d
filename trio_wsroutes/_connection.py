"""The connection engine: one Trio nursery per connection, three tasks, two queues.

::

    transport.receive() -> [reader] -> inbox ----------> [dispatcher] -> handlers
                                                           |
    transport.send()    <- [writer] <- outbox <------------+-- ws.send / publish / replies

* The **reader** is the only task that receives. It applies the size limit (where the
  transport cannot refuse a message before reading it), the rate limit, the heartbeat and
  the idle timeout, and hands messages on through the inbox, a queue bounded in messages
  and bytes, so a slow handler stops the reader and the peer's TCP window closes.
  Refusals (too big, rate limited) travel through the same queue, so what came before
  them is answered first.
* The **dispatcher** (the connection's own task) decodes, validates and calls handlers
  one message at a time, in arrival order.
* The **writer** is the only task that waits on the network. ``buffered_amount`` is the
  outbox plus what the transport holds (:attr:`Transport.pending`); ``send`` waits while
  it is over ``backpressure_limit``, a publish never waits, and a subscriber over the
  limit is evicted with 1013 (or the message dropped for it, by policy).

When nothing is queued, ``send`` first offers the frame to the transport's
``try_send_nowait``: over plain TCP the native transport writes it to the socket at once,
and whatever the socket did not take is finished by the writer before anything else.
``deliver`` (a publish) holds the frame instead, when the transport can write without
waiting, and writes everything published to the connection before the publisher yields
in one call (see :class:`~trio_wsroutes._flow.Coalescer`): a publish to many connections
costs one non-blocking write each, of bytes framed once, and several publishes in a row
cost no more writes than one. Anything else sent to the connection first releases what
it holds, so the order is kept. An urgent close (eviction, server shutdown, heartbeat
timeout) drops what is queued and cancels the send in progress, so the close frame goes
out next.

The heartbeat and the idle timer run in the reader, on one cancel scope whose deadline
is the next thing due: a ping after ``interval`` without a frame from the peer (pongs
count, where the transport sees them), a close if nothing answers within ``timeout``,
and the idle close.

The engine talks to the network only through :class:`~trio_wsroutes._transports.Transport`
and reads its settings only from a frozen :class:`~trio_wsroutes._spec.RouteSpec`.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import orjson
import trio

from ._codes import (
    FORBIDDEN_TOPIC,
    HANDLER_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_TOPIC,
    RATE_LIMITED,
    TOO_MANY_TOPICS,
    UNKNOWN_TYPE,
    CloseCode,
)
from ._containment import must_propagate
from ._context import Context
from ._errors import MessageError, ProtocolError, ValidationError
from ._flow import (
    Coalescer,
    Inbox,
    MemoryBudget,
    Outbox,
    RecoveryLimiter,
    TokenBucket,
    current_coalescer,
)
from ._history import NOT_RECOVERED, Position, Recovery
from ._messages import Envelope, encode_ack, encode_error, encode_message, parse_envelope
from ._spec import EngineOptions, Heartbeat, RouteSpec
from ._stats import ServerStats
from ._transports import NEEDS_FLUSH, Disconnect, Transport, TransportClosed, Violation
from ._transports._frames import Frame
from ._validation import validation_details

if TYPE_CHECKING:
    from ._broker import Broker
    from ._request import Request

__all__ = ["Connection", "ConnectionClosed", "close_now", "new_context", "run_connection"]

logger = logging.getLogger("trio_wsroutes")

ServerT_contra = TypeVar("ServerT_contra", contravariant=True)


class ConnectionClosed(Exception):
    """Raised by ``send`` and friends on a connection that has closed."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed with code {code}")
        self.code: int = code
        self.reason: str = reason


class _Closing:
    """Outbox and inbound marker: send a close frame, then end the connection."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _RateLimited:
    """Inbound marker: a message refused by the rate limit (answered in order)."""

    __slots__ = ("id",)

    def __init__(self, request_id: str | int | None) -> None:
        self.id = request_id


class _Signal:
    """Outbox marker for the writer: ``flush`` the transport, or send a ``ping``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_FLUSH: Final = _Signal("flush")
_PING: Final = _Signal("ping")

_Inbound = str | bytes | _Closing | _RateLimited
"""What the reader hands the dispatcher: frames, or refusals to answer in order."""
_Marker = _Closing | _Signal
"""What the outbox holds besides frames."""

_ENVELOPE_PING: Final = b'{"type":"ping"}'
_BLOCKED_CHECK: Final = 5.0
"""Seconds between looks at the connection while the reader waits for the handlers (at
most; less with a shorter heartbeat interval or idle timeout)."""
# Task names shared by every connection (Trio would otherwise build a string per task).
_WRITER_TASK: Final = "trio_wsroutes connection writer"
_READER_TASK: Final = "trio_wsroutes connection reader"
# Held published bytes past which a connection writes at once instead of waiting for
# the publisher to yield (the held frames are not counted against backpressure_limit
# until they are written, so this bounds them).
_COALESCE_BYTES: Final = 64 * 1024
_GOODBYE_TIMEOUT: Final = 1.0
"""Seconds a connection cancelled from outside may take to send its 1001."""
_SUBSCRIPTION_COST: Final = 400
"""Bytes a subscription holds besides its topic name (the connection's set, the broker's
tables), counted in the memory budget; measured with tracemalloc."""


def _request_id_of(message: str | bytes) -> str | int | None:
    # Only on the refusal path: the id lets the client match the error to its request.
    if type(message) is not str:
        return None
    try:
        return parse_envelope(message).id
    except ProtocolError as error:
        return error.request_id


def _held(item: object) -> int:
    """Memory a queued inbound message holds (markers hold nothing)."""
    kind = type(item)
    return sys.getsizeof(item) if kind is str or kind is bytes else 0


def _byte_length(message: str | bytes) -> int:
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode())


class Connection(Generic[ServerT_contra]):
    """One WebSocket connection, as handlers see it.

    ``Connection[ServerMessage]`` accepts only ``ServerMessage`` in :meth:`send` and
    :meth:`publish`. Methods that may wait are async. The server creates connections;
    handlers receive them.
    """

    __slots__ = (
        "_blocked_check",
        "_broker",
        "_budget",
        "_cancel_scope",
        "_close_code",
        "_close_reason",
        "_close_taken",
        "_closing",
        "_coalesced",
        "_coalesced_bytes",
        "_coalescer",
        "_flush_queued",
        "_heartbeat",
        "_inbound_bytes",
        "_inbound_space",
        "_last_received",
        "_last_sent",
        "_limit",
        "_on_gone",
        "_options",
        "_outbox",
        "_ping_sent",
        "_recovered_bytes",
        "_recoveries",
        "_recovering",
        "_send_scope",
        "_sent",
        "_sent_seen",
        "_since",
        "_spec",
        "_stats",
        "_subscribed_bytes",
        "_topics",
        "_transport",
        "_writes_nowait",
        "context",
        "dropped_messages",
        "id",
        "subprotocol",
    )

    def __init__(
        self,
        *,
        transport: Transport,
        spec: RouteSpec,
        context: Context[Any],
        broker: Broker,
        stats: ServerStats | None = None,
        budget: MemoryBudget | None = None,
        recoveries: RecoveryLimiter | None = None,
        subprotocol: str | None = None,
        since: dict[str, Position] | None = None,
        on_gone: Callable[[Connection[Any]], None] = lambda _: None,
    ) -> None:
        self.id: str = context.connection_id
        """The connection's unique id (same as ``ctx.connection_id``)."""
        self.context: Context[Any] = context
        """The connection's :class:`~trio_wsroutes.Context` (user, params, data)."""
        self._transport = transport
        self._spec = spec
        self._options: EngineOptions = spec.options
        self._limit = spec.options.backpressure_limit
        self._broker = broker
        self._on_gone = on_gone
        self._stats = stats if stats is not None else ServerStats()
        self.subprotocol: str | None = subprotocol
        """The subprotocol selected at the upgrade, if the route declares any."""
        self.dropped_messages: int = 0
        """Published messages dropped for this connection (slow-consumer policy ``"drop"``)."""
        self._budget = budget if budget is not None else MemoryBudget()
        self._outbox: Outbox[_Marker] = Outbox(self._budget)
        # Published frames held until the publishing task yields (see deliver).
        self._writes_nowait = transport.writes_nowait
        self._coalesced: list[Frame] | None = None
        self._coalesced_bytes = 0
        self._coalescer: Coalescer | None = None
        self._inbound_bytes = 0  # held in the inbound queue, for max_queued_bytes
        self._inbound_space: trio.lowlevel.ParkingLot | None = None  # made when needed
        self._flush_queued = False
        self._topics: set[str] = set()
        self._closing = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._cancel_scope: trio.CancelScope | None = None
        self._send_scope: trio.CancelScope | None = None  # while the writer sends
        self._close_taken = False  # the writer has taken the close (or stopped)
        heartbeat = spec.heartbeat
        if heartbeat is not None and not heartbeat.envelope and not transport.can_ping:
            heartbeat = None  # e.g. under hypercorn, which pings by itself
        self._heartbeat: Heartbeat | None = heartbeat
        self._ping_sent: float | None = None
        self._last_received = self._last_sent = trio.current_time()
        self._sent = self._sent_seen = 0  # messages to the peer, for the idle timer
        self._since: dict[str, Position] = since if since is not None else {}
        # How often to look at a connection whose reader waits for slow handlers.
        self._blocked_check = min(
            _BLOCKED_CHECK,
            heartbeat.interval if heartbeat is not None else math.inf,
            spec.options.idle_timeout or math.inf,
        )
        self._recovering = False
        self._recovered_bytes = 0  # delivered by the recovery under way
        self._recoveries = recoveries
        self._subscribed_bytes = 0  # held by subscriptions, in the memory budget

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<Connection {self.id} {self._spec.path!r} {state}>"

    # -- public API --------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The route path this connection came in on (the pattern, e.g. ``/chat/:room``)."""
        return self._spec.path

    @property
    def user(self) -> Any:
        """Shortcut for ``ws.context.user``."""
        return self.context.user

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted for this client and not yet written to the network: the
        engine's queue plus what the transport holds. ``backpressure_limit`` applies to
        this number."""
        return self._outbox.size + self._transport.pending + self._coalesced_bytes

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
        await self._send_frame(self._encode(message))

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
        Subscribers get what is published before this task yields in one write (see
        :meth:`WebSocketServer.publish <trio_wsroutes.WebSocketServer.publish>`).
        """
        return await self._broker.publish(
            topic, self._encode(message), exclude=None if include_self else self
        )

    async def publish_binary(self, topic: str, data: bytes, *, include_self: bool = False) -> int:
        """Publish a binary frame to ``topic``; see :meth:`publish`."""
        return await self._broker.publish(
            topic, Frame(bytes(data), binary=True), exclude=None if include_self else self
        )

    async def subscribe(self, topic: str, *, since: Position | None = None) -> Recovery:
        """Subscribe to ``topic``; subscriptions end when the connection closes.

        On a topic with history (the server's ``history`` option), a position, either
        ``since`` or the one the client named for ``topic`` in the upgrade request (its
        ``since`` query parameter), makes the subscription recover: every kept
        publication after that position is sent first, in order, then the live ones,
        with no gap and no duplicate, and the result is ``Recovery(True, missed)``. If the
        epoch differs or the history no longer reaches back, nothing old is sent and the
        result is ``Recovery(False, 0)``: send the app's own snapshot then. Without a
        position: ``Recovery(False, 0)``.

        A recovery goes through the backpressure limit like any publish, except that it
        never drops a message: one that does not fit closes the connection with 1013,
        once those that fitted are sent (the client reconnects and recovers from where
        it got to).

        A recovery sends at most the server's ``max_recovery`` publications (a client
        that missed more is not recovered), and what recoveries send to one client
        address is limited by ``recovery_rate``: past it, ``Recovery(False, 0)``.

        Raises :class:`MessageError` (``INVALID_TOPIC``, ``TOO_MANY_TOPICS``,
        ``FORBIDDEN_TOPIC``) past the server's ``max_topic_length`` and
        ``max_topics_per_connection`` (or its ``memory_budget``), or when the route's
        ``authorize_subscribe`` says no; raised in a handler, it reaches the client as an
        error envelope.
        """
        if not isinstance(topic, str):
            raise TypeError("topic must be a string")
        if self._closing:
            raise ConnectionClosed(self._close_code or CloseCode.NORMAL, self._close_reason)
        options = self._options
        if not 0 < len(topic) <= options.max_topic_length:
            raise MessageError(
                f"Topic names are 1 to {options.max_topic_length} characters", INVALID_TOPIC
            )
        new = topic not in self._topics
        if new and len(self._topics) >= options.max_topics_per_connection:
            raise MessageError(
                f"At most {options.max_topics_per_connection} subscriptions per connection",
                TOO_MANY_TOPICS,
            )
        if new and self._budget.exceeded:
            raise MessageError("The server cannot take more subscriptions now", TOO_MANY_TOPICS)
        check = self._spec.authorize_subscribe
        if check is not None and new:
            allowed = check(self, topic, self.context)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                raise MessageError("Not allowed to subscribe to this topic", FORBIDDEN_TOPIC)
            if self._closing:
                raise ConnectionClosed(self._close_code or CloseCode.NORMAL, self._close_reason)
        # A position named in the upgrade request is used once: a later subscribe to the
        # same topic on this connection starts live.
        position = self._since.pop(topic, None) if since is None else since
        if topic not in self._topics:
            self._topics.add(topic)
            cost = _SUBSCRIPTION_COST + len(topic)
            self._subscribed_bytes += cost
            self._budget.take(cost)
        limiter = self._recoveries
        address = self._address()
        if position is not None and limiter is not None and not limiter.allows(address):
            position = None  # this address has had its share of recoveries for now
        if position is None:
            await self._broker.subscribe(topic, self)
            return NOT_RECOVERED
        self._recovering = True
        self._recovered_bytes = 0
        try:
            recovery = await self._broker.subscribe(topic, self, since=position)
        finally:
            self._recovering = False
        if limiter is not None:
            limiter.charge(address, recovery.missed, self._recovered_bytes)
        return recovery

    def _address(self) -> str:
        client = self.context.request.client
        return client[0] if client is not None else ""

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe from ``topic`` (no error if not subscribed)."""
        if topic in self._topics:
            self._topics.discard(topic)
            cost = _SUBSCRIPTION_COST + len(topic)
            self._subscribed_bytes -= cost
            self._budget.release(cost)
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

        If the frame would take ``buffered_amount`` over ``backpressure_limit``, the
        server's slow-consumer policy applies: ``"close"`` evicts the connection with
        1013, ``"drop"`` drops this frame for it (counted in ``dropped_messages``).
        Returns ``False`` when the connection no longer takes frames.
        """
        if self._closing:
            return False
        self._sent += 1
        if self._recovering:
            self._recovered_bytes += frame.size
        outbox = self._outbox
        transport = self._transport
        coalesced = self._coalesced
        if coalesced:
            coalesced.append(frame)
            self._coalesced_bytes += frame.size
            if self._coalesced_bytes >= _COALESCE_BYTES:
                self._release_coalesced()
            return True
        if not outbox and not transport.pending:
            if self._writes_nowait:
                # Hold it: what is published to this connection before the publisher
                # yields goes out in one write (see Coalescer).
                if coalesced is None:
                    coalesced = self._coalesced = []  # kept: one list per connection
                coalesced.append(frame)
                self._coalesced_bytes = frame.size
                coalescer = self._coalescer
                if coalescer is None:
                    coalescer = self._coalescer = current_coalescer()
                coalescer.add(self)
                return True
            if transport.try_send_nowait(frame):
                if transport.pending:
                    self._request_flush()
                return True
        used = outbox.size + transport.pending
        if used > 0 and (used + frame.size > self._limit or self._budget.exceeded):
            # Over this connection's limit, or the server's memory budget with this
            # connection behind. A recovery never drops: a gap the client cannot see is
            # worse than a close.
            if self._options.slow_consumer_policy == "drop" and not self._recovering:
                self.dropped_messages += 1
                self._stats.messages_dropped += 1
                return True
            self._stats.slow_consumer_closes += 1
            # A recovery closes after what fitted, so the client resumes from further on
            # (a transport that writes nothing meanwhile would otherwise never progress).
            self._evict(flush=self._recovering)
            return False
        outbox.put_nowait(frame)
        return True

    # -- internals ---------------------------------------------------------------------

    async def _send_frame(self, frame: Frame) -> None:
        if self._closing:
            raise ConnectionClosed(self._close_code or CloseCode.NORMAL, self._close_reason)
        outbox = self._outbox
        transport = self._transport
        budget = self._budget
        if self._coalesced:
            self._release_coalesced()  # what was published to it goes first
        if outbox.size + transport.pending >= self._limit or (budget.exceeded and outbox.size):
            while True:
                if outbox.size + transport.pending >= self._limit:
                    await outbox.wait_for_space()
                elif budget.exceeded and outbox.size:
                    # The whole server holds too much: a connection that already has
                    # something queued waits for the budget, one with nothing goes on.
                    await budget.wait()
                else:
                    break
                if self._closing:
                    raise ConnectionClosed(
                        self._close_code or CloseCode.NORMAL, self._close_reason
                    )
        else:
            # Not a full checkpoint: a yield here would cost a scheduler pass per message.
            # Cancellation is still honoured, and a sender that never yields parks as soon
            # as the limit is reached.
            await trio.lowlevel.checkpoint_if_cancelled()
        self._sent += 1
        self._enqueue(frame)

    def _encode(self, message: object, request_id: str | int | None = None) -> Frame:
        """Encode a server message, refusing one the route did not declare: what the
        route's types (and the generated client types) promise is what goes out."""
        declared = self._spec.server_message_types
        if declared and type(message) not in declared:
            names = ", ".join(sorted(cls.__qualname__ for cls in declared))
            raise TypeError(
                f"{type(message).__qualname__} is not a server message of route "
                f"{self._spec.path!r} (it declares {names}); add it to .server_messages()"
            )
        return encode_message(message, request_id)

    def _enqueue(self, frame: Frame) -> None:
        """Queue ``frame`` (or write it at once), whatever the limit says."""
        if self._coalesced:
            self._release_coalesced()  # what was published to it goes first
        outbox = self._outbox
        if not outbox:
            transport = self._transport
            if transport.try_send_nowait(frame):
                if transport.pending:
                    self._request_flush()
                return
        outbox.put_nowait(frame)

    def _release_coalesced(self) -> None:
        """Write the held frames in one call, or queue them for the writer."""
        frames = self._coalesced
        if not frames:
            return  # released already (something was sent after them), or dropped
        self._coalesced_bytes = 0
        outbox = self._outbox
        transport = self._transport
        if not outbox and (
            transport.try_send_nowait(frames[0])
            if len(frames) == 1
            else transport.try_send_many_nowait(frames)
        ):
            if transport.pending:
                self._request_flush()
        else:
            for frame in frames:
                outbox.put_nowait(frame)
        frames.clear()

    def _request_flush(self) -> None:
        # The transport holds bytes (the rest of a frame, a pong): have the writer
        # finish them before anything queued after this point.
        if not self._flush_queued:
            self._flush_queued = True
            self._outbox.put_nowait(_FLUSH)

    def _evict(self, *, flush: bool = False) -> None:
        """Close with 1013 and leave the topics and the registry at once; the queued
        frames are dropped, or with ``flush`` sent first (within ``close_timeout``)."""
        logger.warning("evicting slow consumer %s: %d bytes queued", self.id, self.buffered_amount)
        if flush:
            self._begin_close(CloseCode.TRY_AGAIN_LATER, "slow consumer")
        else:
            self._close_now(CloseCode.TRY_AGAIN_LATER, "slow consumer")
        self._forget_topics()
        self._on_gone(self)

    def _forget_topics(self) -> None:
        """The connection is leaving its topics: give their memory back."""
        self._topics.clear()
        self._budget.release(self._subscribed_bytes)
        self._subscribed_bytes = 0

    def _close_now(self, code: int, reason: str) -> None:
        """Close without waiting for what is queued: drop it, cancel the send in
        progress, and have the close frame (``code``, or the one of a close already
        begun) go out next."""
        self._coalesced = None
        self._coalesced_bytes = 0
        if self._closing:
            if self._close_taken:
                return  # the close frame is on its way, or the writer has finished
            code, reason = self._close_code or code, self._close_reason
            self._outbox.clear()
            self._outbox.put_nowait(_Closing(code, reason))
        else:
            self._outbox.clear()
            self._begin_close(code, reason)
        self._flush_queued = False
        if self._send_scope is not None:
            self._send_scope.cancel()

    def _begin_close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        if self._coalesced:
            self._release_coalesced()  # sent before the close frame
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
        spec = self._spec
        inbox: Inbox[_Inbound] = Inbox()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._writer, name=_WRITER_TASK)
                nursery.start_soon(self._reader, inbox, name=_READER_TASK)
                await self._dispatcher(inbox)
        except trio.Cancelled:
            # Cancelled from outside (the connection ends its own nursery itself): the
            # server is going away without having closed it. Say so, briefly.
            if not self._closing:
                self._closing = True
                self._close_code, self._close_reason = CloseCode.GOING_AWAY, "server shutdown"
                with trio.CancelScope(shield=True), trio.move_on_after(_GOODBYE_TIMEOUT):
                    try:
                        await self._transport.close(CloseCode.GOING_AWAY, "server shutdown")
                    except TransportClosed:
                        pass
            raise
        finally:
            self._stats.connections_closed += 1
            self._closing = True
            if self._close_code is None:
                self._close_code = CloseCode.ABNORMAL
            self._outbox.clear()
            self._coalesced = None
            self._coalesced_bytes = 0
            self._budget.release(self._inbound_bytes)  # what the inbound queue still held
            self._inbound_bytes = 0
            self._on_gone(self)
            with trio.CancelScope(shield=True):
                self._forget_topics()
                await self._broker.unsubscribe_all(self)
                if spec.on_close is not None:
                    with trio.move_on_after(self._options.close_timeout):
                        await self._call_hook(
                            spec.on_close,
                            self,
                            self._close_code,
                            self._close_reason,
                            self.context,
                        )

    # -- the reader: receiving, limits, heartbeat, idle timer -----------------------------

    async def _reader(self, inbox: Inbox[_Inbound]) -> None:
        transport = self._transport
        spec = self._spec
        max_len = spec.options.max_payload_length
        # The one size check: the transport refuses early where it can, else here.
        check_size = not transport.limit_message_size(max_len)
        limit = spec.rate_limit
        bucket = byte_bucket = None
        close_on_limit = False
        if limit is not None:
            bucket = TokenBucket(limit.messages_per_second, limit.capacity)
            if limit.bytes_per_second is not None:
                byte_bucket = TokenBucket(limit.bytes_per_second, limit.bytes_per_second)
            close_on_limit = limit.action == "close"
        accepts_binary = spec.on_binary is not None
        max_bytes = spec.options.max_queued_bytes
        max_messages = spec.options.max_queued_messages
        budget = self._budget
        blocked: _Inbound | None = None  # an item the dispatcher had no room for yet
        blocked_size = 0
        try:
            while True:
                deadline = self._timer_deadline()
                if blocked is not None:
                    # Look at the connection now and then while the handlers are behind.
                    deadline = min(deadline, trio.current_time() + self._blocked_check)
                with trio.CancelScope(deadline=deadline) as timer:
                    if blocked is not None:
                        # The dispatcher is behind: wait for room, in messages and in
                        # bytes (one message always fits). Waiting is cancel-safe: a timer
                        # firing here loses nothing, the item is queued afterwards.
                        while len(inbox) >= max_messages or (
                            self._inbound_bytes
                            and (self._inbound_bytes + blocked_size > max_bytes or budget.exceeded)
                        ):
                            if self._inbound_space is None:
                                self._inbound_space = trio.lowlevel.ParkingLot()
                            await self._inbound_space.park()
                        inbox.put(blocked)
                        self._inbound_bytes += blocked_size
                        budget.take(blocked_size)
                        if type(blocked) is _Closing:
                            return
                        blocked = None
                    while True:
                        message = await transport.receive()
                        if message is NEEDS_FLUSH:
                            self._request_flush()
                            continue
                        self._last_received = trio.current_time()
                        # Refusals travel through the inbound queue like messages, so
                        # that what the client sent before them is still handled, in order.
                        item: _Inbound
                        if type(message) is str:
                            item = message
                            if (
                                check_size
                                and len(message) * 4 > max_len
                                and len(message.encode()) > max_len
                            ):
                                item = _Closing(CloseCode.MESSAGE_TOO_BIG, "message too big")
                        elif type(message) is bytes:
                            item = message
                            if not accepts_binary:
                                item = _Closing(CloseCode.UNSUPPORTED_DATA, "binary not accepted")
                            elif check_size and len(message) > max_len:
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
                        size = _held(item)
                        if len(inbox) >= max_messages or (
                            self._inbound_bytes
                            and (self._inbound_bytes + size > max_bytes or budget.exceeded)
                        ):
                            blocked, blocked_size = item, size
                            break
                        inbox.put(item)
                        self._inbound_bytes += size
                        budget.take(size)
                        if type(item) is _Closing:
                            return
                if timer.cancelled_caught and not self._on_timer(inbox, blocked is not None):
                    return
        finally:
            inbox.close()

    def _last_received_any(self) -> float:
        # Frames the engine does not see (pongs) count too, where the transport can tell.
        seen = self._transport.last_activity
        last = self._last_received
        return last if seen is None or seen < last else seen

    def _last_active(self) -> float:
        """For the idle timer: a frame from the peer, or a message to it. A client that
        only reads stays; messages sent are noticed when the timer fires (a counter is
        cheaper than a clock read per message), so the timer may run up to one period
        late for them."""
        if self._sent != self._sent_seen:
            self._sent_seen = self._sent
            self._last_sent = trio.current_time()
        received = self._last_received_any()
        return received if received > self._last_sent else self._last_sent

    def _timer_deadline(self) -> float:
        """When the reader must next look at the heartbeat and idle timers.

        Computed when the reader (re)enters its cancel scope, not per message: a deadline
        that comes early finds nothing due and is simply computed again.
        """
        idle = self._options.idle_timeout
        heartbeat = self._heartbeat
        if idle is None and heartbeat is None:
            return math.inf
        deadline = math.inf if idle is None else self._last_active() + idle
        if heartbeat is not None:
            sent = self._ping_sent
            if sent is None:
                due = self._last_received_any() + heartbeat.interval
            else:
                due = sent + heartbeat.timeout
            deadline = min(deadline, due)
        return deadline

    def _on_timer(self, inbox: Inbox[_Inbound], blocked: bool) -> bool:
        """Heartbeat and idle work; ``False`` when the connection is closing.

        The heartbeat looks only at what the peer sent (a frame proves it is there); the
        idle timer at messages in either direction.
        """
        now = trio.current_time()
        if blocked and self._transport.peer_closed():
            # The handlers are behind and the reader is not reading, yet the client has
            # gone: end the connection (and the handlers) rather than keep it forever.
            self._peer_gone(CloseCode.ABNORMAL, "")
            return False
        heartbeat = self._heartbeat
        if heartbeat is not None:
            received = self._last_received_any()
            sent = self._ping_sent
            if sent is not None and (received >= sent or blocked):
                # Answered (any frame counts), or the reader was held up by the handlers
                # and could not have seen an answer: the peer is not the one to blame.
                self._ping_sent = sent = None
            if sent is not None and now >= sent + heartbeat.timeout:
                logger.info("closing %s: no answer to the heartbeat", self.id)
                self._close_now(CloseCode.INTERNAL_ERROR, "heartbeat timeout")
                return False
            if sent is None and now >= received + heartbeat.interval:
                self._ping_sent = now
                if heartbeat.envelope:
                    # Tiny, and it must reach even a client that is behind: past the
                    # limit, but counted in buffered_amount.
                    self._enqueue(Frame(_ENVELOPE_PING))
                else:
                    self._outbox.put_nowait(_PING)
        idle = self._options.idle_timeout
        if idle is not None and not blocked and now >= self._last_active() + idle:
            if len(inbox) >= self._options.max_queued_messages:
                return True  # handlers are busy with this client's messages: not idle
            # Through the inbound queue: what came before is answered first.
            inbox.put(_Closing(CloseCode.NORMAL, "idle timeout"))
            return False
        return True

    # -- the writer: the only task that waits on the network -----------------------------

    async def _writer(self) -> None:
        outbox = self._outbox
        transport = self._transport
        limit = self._limit
        try:
            while True:
                item = await outbox.get()
                if type(item) is _Closing:
                    break
                # _close_now cancels this scope to interrupt a send to a client that does
                # not read; the outbox then holds only the close. (A scope per send, not
                # one for the writer's life: idle connections are the many.)
                with trio.CancelScope() as self._send_scope:
                    if type(item) is Frame:
                        await transport.send(item)
                    elif item is _FLUSH:
                        self._flush_queued = False
                        await transport.flush()
                    else:
                        assert item is _PING
                        await transport.ping()
                self._send_scope = None
                if outbox.senders_waiting and outbox.size + transport.pending < limit:
                    outbox.wake_senders()
            self._close_taken = True
            await transport.close(item.code, item.reason)
        except TransportClosed:
            self._send_scope = None
            self._close_taken = True
            self._peer_gone(CloseCode.ABNORMAL, "")
            return
        assert self._cancel_scope is not None
        self._cancel_scope.cancel()

    # -- the dispatcher: decode, validate, call handlers in order ------------------------

    async def _dispatcher(self, inbox: Inbox[_Inbound]) -> None:
        spec = self._spec
        context = self.context
        if spec.on_connect is not None and not await self._guard(
            spec.on_connect(self, context), None
        ):
            return
        while True:
            message = await inbox.get()
            if message is None:
                break
            size = _held(message)
            if size:
                self._inbound_bytes -= size
                self._budget.release(size)
            if self._inbound_space:
                self._inbound_space.unpark_all()
            if self._closing:
                break
            if type(message) is str:
                await self._dispatch_text(message)
            elif type(message) is bytes:
                assert spec.on_binary is not None
                await self._guard(spec.on_binary(self, message, context), None)
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
        spec = self._spec
        try:
            envelope = parse_envelope(text)
        except ProtocolError as error:
            if spec.on_text is not None:
                await self._guard(spec.on_text(self, text, self.context), None)
                return
            await self._bad_input(error, error.request_id)
            return
        handler = spec.handlers.get(envelope.type)
        if handler is None:
            heartbeat = self._heartbeat
            if heartbeat is not None and heartbeat.envelope and envelope.type in ("ping", "pong"):
                if envelope.type == "ping":
                    body: dict[str, Any] = {"type": "pong"}
                    if envelope.id is not None:
                        body["id"] = envelope.id
                    await self._reply(Frame(orjson.dumps(body)))
                elif envelope.id is not None:
                    await self._reply(encode_ack(envelope.id))
                return  # the reader has already counted it as activity
            wire = envelope.type if len(envelope.type) <= 64 else envelope.type[:64] + "..."
            await self._bad_input(
                ProtocolError(f"Unknown message type: {wire!r}", UNKNOWN_TYPE), envelope.id
            )
            return
        try:
            data = handler.structure(envelope.data, handler.schema)
        except Exception as exc:
            await self._bad_input(ValidationError(validation_details(exc)), envelope.id)
            return
        await self._call_handler(handler.handler, data, envelope)

    async def _call_handler(
        self, handler: Callable[..., Awaitable[Any]], data: Any, envelope: Envelope
    ) -> None:
        timeout = self._spec.handler_timeout
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
        except BaseException as exc:
            if must_propagate(exc):
                raise
            await self._crash(exc, envelope.id)
            return
        if result is not None:
            try:
                frame = self._encode(result, envelope.id)
            except Exception as exc:
                await self._crash(exc, envelope.id)
                return
            await self._reply(frame)
        elif envelope.id is not None:
            # Every envelope with an id gets exactly one answer.
            await self._reply(encode_ack(envelope.id))

    async def _guard(self, call: Awaitable[Any], request_id: str | int | None) -> bool:
        """Await a hook; on an unexpected exception crash the connection (returns False)."""
        try:
            await call
        except ConnectionClosed:
            return False
        except BaseException as exc:
            if must_propagate(exc):
                raise
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
        if self._spec.on_error is not None:
            await self._call_hook(self._spec.on_error, self, error, self.context)

    async def _crash(self, exc: BaseException, request_id: str | int | None) -> None:
        # Any exception a handler lets out ends its connection only, BaseExceptions
        # (KeyboardInterrupt, SystemExit...) included: never the server.
        self._stats.handler_errors += 1
        logger.error("handler error on %s (connection %s)", self._spec.path, self.id, exc_info=exc)
        if self._spec.on_error is not None and isinstance(exc, Exception):
            await self._call_hook(self._spec.on_error, self, exc, self.context)
        if not self._closing:
            self._enqueue(encode_error(INTERNAL_ERROR, "Internal server error", request_id))
        self._begin_close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _call_hook(self, hook: Callable[..., Awaitable[Any]], *args: Any) -> None:
        try:
            await hook(*args)
        except ConnectionClosed:
            pass
        except BaseException as exc:
            if must_propagate(exc):
                raise
            logger.error(  # noqa: TRY400 - the exception caught, not only an Exception
                "error in %s hook of %s",
                getattr(hook, "__name__", hook),
                self._spec.path,
                exc_info=exc,
            )


def new_context(connection_id: str, user: Any, request: Request) -> Context[Any]:
    """A fresh context for an accepted connection."""
    return Context(
        connection_id=connection_id,
        connected_at=datetime.now(UTC),
        user=user,
        request=request,
    )


async def run_connection(connection: Connection[Any]) -> None:
    """Run an accepted connection until it ends (the server's entry into the engine)."""
    await connection._run()  # pyright: ignore[reportPrivateUsage]


def close_now(connection: Connection[Any], code: int, reason: str) -> None:
    """Close ``connection`` at once: queued frames are dropped and a send in progress is
    cancelled, so the close frame goes out next (server shutdown)."""
    connection._close_now(code, reason)  # pyright: ignore[reportPrivateUsage]
