"""The inbound layer of a connection: the reader task, what it makes of each incoming
item, and the timers.

The reader is the only task that receives. :meth:`Inbound._classify` decides what each item
from the transport becomes (a message for the handlers, a refusal answered in order, a
close), by size, kind and rate; the bounded :class:`~trio_wsroutes._flow.Inbox` carries it
to the dispatcher, and the reader waits for room in messages, bytes and the server's
budget, so that a slow handler stops the reader and the peer's TCP window closes.

:class:`Timers` holds the heartbeat and the idle timer on one deadline: a ping after
``interval`` without a frame from the peer (pongs count, where the transport sees them),
a close if nothing answers within ``timeout``, and the idle close.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Final

import trio

from .._codes import CloseCode
from .._envelope import PING, request_id_of
from .._flow import Inbox, MemoryBudget, TokenBucket
from .._frames import Frame
from .._spec import Heartbeat, RouteSpec
from .._stats import ServerStats
from .._transports import NEEDS_FLUSH, Disconnect, Transport, Violation
from .closing import CloseEvent
from .outbound import Closing, Outbound

__all__ = ["BLOCKED_CHECK", "Inbound", "InboundItem", "RateLimited", "Timers", "held_size"]

logger = logging.getLogger("trio_wsroutes")

BLOCKED_CHECK: Final = 5.0
"""Seconds between looks at the connection while the reader waits for the handlers (at
most; less with a shorter heartbeat interval or idle timeout)."""


class RateLimited:
    """Inbound marker: a message refused by the rate limit (answered in order)."""

    __slots__ = ("id",)

    def __init__(self, request_id: str | int | None) -> None:
        self.id = request_id


InboundItem = str | bytes | Closing | RateLimited
"""What the reader hands the dispatcher: messages, or refusals to answer in order."""


def held_size(item: object) -> int:
    """Memory a queued inbound item holds (markers hold nothing)."""
    kind = type(item)
    return sys.getsizeof(item) if kind is str or kind is bytes else 0


def _byte_length(message: str | bytes) -> int:
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode())


class Timers:
    """The heartbeat and the idle timer of one connection.

    The heartbeat looks only at what the peer sent (a frame proves it is there); the idle
    timer at messages in either direction. Messages sent are noticed when the timer fires
    (a counter is cheaper than a clock read per message), so the idle timer may run up to
    one period late for them.
    """

    __slots__ = ("_sent_seen", "heartbeat", "idle", "last_received", "last_sent", "ping_sent")

    def __init__(self, heartbeat: Heartbeat | None, idle: float | None, now: float) -> None:
        self.heartbeat = heartbeat
        self.idle = idle
        self.last_received = now
        """When the engine last received a message (the reader sets it)."""
        self.last_sent = now
        self.ping_sent: float | None = None
        self._sent_seen = 0

    def _last_active(self, now: float, received: float, sent: int) -> float:
        if sent != self._sent_seen:
            self._sent_seen = sent
            self.last_sent = now
        return received if received > self.last_sent else self.last_sent

    def deadline(self, now: float, received: float, sent: int) -> float:
        """When the timers must next be looked at; ``received`` is when the peer last
        sent a frame, ``sent`` how many messages went to it so far.

        Computed when the reader (re)enters its wait, not per message: a deadline that
        comes early finds nothing due and is simply computed again."""
        idle = self.idle
        heartbeat = self.heartbeat
        if idle is None and heartbeat is None:
            return math.inf
        deadline = math.inf if idle is None else self._last_active(now, received, sent) + idle
        if heartbeat is not None:
            ping_sent = self.ping_sent
            if ping_sent is None:
                due = received + heartbeat.interval
            else:
                due = ping_sent + heartbeat.timeout
            deadline = min(deadline, due)
        return deadline

    def heartbeat_due(self, now: float, received: float, *, blocked: bool) -> bool | None:
        """The heartbeat's verdict: ``True`` to send a ping now, ``None`` when the peer did
        not answer in time (close it), ``False`` for nothing to do. A reader held up by
        the handlers could not have seen an answer: the peer is not blamed then."""
        heartbeat = self.heartbeat
        if heartbeat is None:
            return False
        ping_sent = self.ping_sent
        if ping_sent is not None and (received >= ping_sent or blocked):
            self.ping_sent = ping_sent = None  # answered (any frame counts)
        if ping_sent is not None and now >= ping_sent + heartbeat.timeout:
            return None
        if ping_sent is None and now >= received + heartbeat.interval:
            self.ping_sent = now
            return True
        return False

    def idle_due(self, now: float, received: float, sent: int) -> bool:
        """Whether nothing went either way for ``idle`` seconds."""
        idle = self.idle
        return idle is not None and now >= self._last_active(now, received, sent) + idle


class Inbound(Outbound):
    """The reader of a connection, on top of its outbound layer (it asks the writer to
    flush what the transport owes, and to ping)."""

    __slots__ = (
        "_accepts_binary",
        "_blocked_check",
        "_byte_bucket",
        "_check_size",
        "_close_on_limit",
        "_held",
        "_max_bytes",
        "_max_len",
        "_max_messages",
        "_message_bucket",
        "_received",
        "_received_bytes",
        "_space",
        "_timers",
        "id",
    )

    def __init__(
        self,
        transport: Transport,
        spec: RouteSpec,
        *,
        budget: MemoryBudget,
        stats: ServerStats,
        id: str = "",
    ) -> None:
        options = spec.options
        super().__init__(
            transport,
            limit=options.backpressure_limit,
            budget=budget,
            stats=stats,
            policy=options.slow_consumer_policy,
            close_timeout=options.close_timeout,
        )
        # WebSocket pings need a transport that sees frames.
        heartbeat = spec.heartbeat_on(can_ping=self._frames is not None)
        self.id: str = id
        """The connection's unique id (same as ``ctx.connection_id``)."""
        self._max_len = options.max_payload_length
        self._check_size = True  # until the transport says it refuses early (_read)
        self._accepts_binary = spec.on_binary is not None
        self._max_bytes = options.max_queued_bytes
        self._max_messages = options.max_queued_messages
        self._message_bucket: TokenBucket | None = None
        self._byte_bucket: TokenBucket | None = None
        self._close_on_limit = False
        limit = spec.rate_limit
        if limit is not None:
            self._message_bucket = TokenBucket(limit.messages_per_second, limit.capacity)
            if limit.bytes_per_second is not None:
                self._byte_bucket = TokenBucket(limit.bytes_per_second, limit.bytes_per_second)
            self._close_on_limit = limit.action == "close"
        self._timers = Timers(heartbeat, options.idle_timeout, trio.current_time())
        # How often to look at a connection whose reader waits for slow handlers.
        self._blocked_check = min(
            BLOCKED_CHECK,
            heartbeat.interval if heartbeat is not None else math.inf,
            options.idle_timeout or math.inf,
        )
        self._held = 0  # bytes held in the inbox, for max_queued_bytes and the budget
        self._received = 0  # messages and their bytes, for the metrics and the access log
        self._received_bytes = 0
        self._space: trio.lowlevel.ParkingLot | None = None  # made when needed

    def _taken(self, item: InboundItem) -> None:
        """The dispatcher took ``item`` from the inbox: give its memory back, let the
        reader go on."""
        size = held_size(item)
        if size:
            self._held -= size
            self._budget.release(size)
        if self._space:
            self._space.unpark_all()

    def _release_inbox(self) -> None:
        """The connection ended: give back what the inbox still held."""
        self._budget.release(self._held)
        self._held = 0

    def _classify(self, message: str | bytes | Violation) -> InboundItem:
        """What an incoming message becomes: itself, a refusal (rate limit) answered in
        order, or a close (too big, binary on a text-only route, a violation the
        transport reported)."""
        item: InboundItem
        if type(message) is str:
            item = message
            self._received += 1
            self._received_bytes += _byte_length(message)
            max_len = self._max_len
            if self._check_size and len(message) * 4 > max_len and len(message.encode()) > max_len:
                return Closing(CloseCode.MESSAGE_TOO_BIG, "message too big")
        elif type(message) is bytes:
            item = message
            self._received += 1
            self._received_bytes += len(message)
            if not self._accepts_binary:
                return Closing(CloseCode.UNSUPPORTED_DATA, "binary not accepted")
            if self._check_size and len(message) > self._max_len:
                return Closing(CloseCode.MESSAGE_TOO_BIG, "message too big")
        else:
            assert isinstance(message, Violation)
            return Closing(message.code, message.reason)
        bucket = self._message_bucket
        if bucket is not None:
            byte_bucket = self._byte_bucket
            if not (
                bucket.take() and (byte_bucket is None or byte_bucket.spend(_byte_length(item)))
            ):
                if self._close_on_limit:
                    return Closing(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                # The id lets the client match the refusal to its request.
                return RateLimited(request_id_of(item) if type(item) is str else None)
        return item

    def _fits(self, inbox: Inbox[InboundItem], size: int) -> bool:
        """Whether an item of ``size`` bytes may join the inbox (one always fits)."""
        return len(inbox) < self._max_messages and not (
            self._held and (self._held + size > self._max_bytes or self._budget.exceeded)
        )

    def _put(self, inbox: Inbox[InboundItem], item: InboundItem, size: int) -> None:
        inbox.put(item)
        self._held += size
        self._budget.take(size)

    async def _read(self, inbox: Inbox[InboundItem]) -> None:
        """The reader task: receive until the connection ends; closes ``inbox`` when
        done."""
        transport = self._transport
        # The one size check: the transport refuses early where it can, else here.
        frames = self._frames
        self._check_size = frames is None or not frames.limit_message_size(self._max_len)
        timers = self._timers
        blocked: InboundItem | None = None  # an item the dispatcher had no room for yet
        blocked_size = 0
        try:
            while True:
                deadline = timers.deadline(trio.current_time(), self._last_received(), self._sent)
                if blocked is not None:
                    # Look at the connection now and then while the handlers are behind.
                    deadline = min(deadline, trio.current_time() + self._blocked_check)
                with trio.CancelScope(deadline=deadline) as timer:
                    if blocked is not None:
                        # The dispatcher is behind: wait for room. Waiting is cancel-safe:
                        # a timer firing here loses nothing, the item is queued afterwards.
                        while not self._fits(inbox, blocked_size):
                            if self._space is None:
                                self._space = trio.lowlevel.ParkingLot()
                            await self._space.park()
                        self._put(inbox, blocked, blocked_size)
                        if type(blocked) is Closing:
                            return
                        blocked = None
                    while True:
                        message = await transport.receive()
                        if message is NEEDS_FLUSH:
                            self._request_flush()
                            continue
                        timers.last_received = trio.current_time()
                        if isinstance(message, Disconnect):
                            self._advance(CloseEvent.PEER_GONE, message.code, message.reason)
                            return
                        # Refusals travel through the inbox like messages, so that what
                        # the client sent before them is still handled, in order.
                        item = self._classify(message)  # type: ignore[arg-type]
                        size = held_size(item)
                        if not self._fits(inbox, size):
                            blocked, blocked_size = item, size
                            break
                        self._put(inbox, item, size)
                        if type(item) is Closing:
                            return
                        # Not kept while the next one is awaited (on an idle connection,
                        # for as long as it stays idle).
                        del message, item
                if timer.cancelled_caught and not self._on_timer(inbox, blocked is not None):
                    return
        finally:
            inbox.close()

    def _last_received(self) -> float:
        # Frames the engine does not see (pongs) count too, where the transport can tell.
        frames = self._frames
        seen = None if frames is None else frames.last_activity
        last = self._timers.last_received
        return last if seen is None or seen < last else seen

    def _on_timer(self, inbox: Inbox[InboundItem], blocked: bool) -> bool:
        """Heartbeat and idle work; ``False`` when the connection is closing."""
        now = trio.current_time()
        frames = self._frames
        if blocked and frames is not None and frames.peer_closed():
            # The handlers are behind and the reader is not reading, yet the client has
            # gone: end the connection (and the handlers) rather than keep it forever.
            self._advance(CloseEvent.PEER_GONE, CloseCode.ABNORMAL, "")
            return False
        timers = self._timers
        received = self._last_received()
        due = timers.heartbeat_due(now, received, blocked=blocked)
        if due is None:
            logger.info("closing %s: no answer to the heartbeat", self.id)
            self._advance(CloseEvent.CLOSE_NOW, CloseCode.INTERNAL_ERROR, "heartbeat timeout")
            return False
        if due:
            assert timers.heartbeat is not None
            if timers.heartbeat.envelope:
                # Tiny, and it must reach even a client that is behind: past the limit,
                # but counted in buffered_amount.
                self._enqueue(Frame(PING))
            else:
                self._queue_ping()
        if not blocked and timers.idle_due(now, received, self._sent):
            if len(inbox) >= self._max_messages:
                return True  # handlers are busy with this client's messages: not idle
            # Through the inbox: what came before is answered first.
            inbox.put(Closing(CloseCode.NORMAL, "idle timeout"))
            return False
        return True
