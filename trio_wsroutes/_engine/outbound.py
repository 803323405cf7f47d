"""The outbound layer of a connection: what it sends, held, queued or written; the writer
task; and carrying out its close state.

Three ways in, one decision each:

* :meth:`Outbound.deliver` (a publish, from any task; never waits): held until the
  publisher yields when the transport writes without waiting (see
  :class:`~trio_wsroutes._flow.Coalescer`), written or queued otherwise; over the limit,
  the slow-consumer policy applies.
* :meth:`Outbound._send_frame` (``ws.send`` and replies): waits while over the limit.
* :meth:`Outbound._enqueue` (pings, refusals, crash replies): past any limit, tiny.

Where a frame goes is decided by :meth:`Outbound._write_or_queue` (written now if nothing
is queued and the transport takes it, else queued for the writer), and whether it fits by
:meth:`Outbound._over_limit` (a frame fits when nothing is queued, or when it keeps the
connection within ``backpressure_limit`` and the server within its memory budget). The
writer is the only task that waits on the network.

The connection is built in layers, one class each: this one, the inbound layer
(``inbound.py``) on top of it, dispatch (``dispatch.py``), then the handler-facing
:class:`~trio_wsroutes.Connection`. Each layer is a module with its own tests; at run time
they are one object, because the broker calls :meth:`deliver` once per subscriber of
every publish (a call more per delivery would cost about a tenth of a delivery's
instructions) and because every idle connection would pay for an object per part.
"""

from __future__ import annotations

import logging
from typing import Final, cast

import trio

from .._codes import CloseCode
from .._flow import Coalescer, MemoryBudget, Outbox, current_coalescer
from .._frames import Frame
from .._spec import SlowConsumerPolicy
from .._stats import ServerStats
from .._transports import FrameTransport, NonBlockingWriter, Transport, TransportClosed
from .closing import CloseEvent, CloseState, ConnectionClosed

__all__ = ["COALESCE_BYTES", "Closing", "Outbound", "Signal"]

logger = logging.getLogger("trio_wsroutes")

_CAPABILITIES: dict[type, tuple[bool, bool]] = {}


def _capabilities(transport: Transport) -> tuple[bool, bool]:
    """Whether ``transport`` is a :class:`FrameTransport` and a
    :class:`NonBlockingWriter`, decided on the first instance of its class: ``isinstance``
    against a runtime-checkable protocol walks the protocol's members, about 5 % of a
    handshake's CPU, and a transport class has the same members on every instance."""
    kind = type(transport)
    known = _CAPABILITIES.get(kind)
    if known is None:
        known = _CAPABILITIES[kind] = (
            isinstance(transport, FrameTransport),
            isinstance(transport, NonBlockingWriter),
        )
    return known


COALESCE_BYTES: Final = 64 * 1024
"""Held published bytes past which a connection writes at once instead of waiting for
the publisher to yield (held frames are not counted against ``backpressure_limit`` until
they are written, so this bounds them)."""


class Closing:
    """Outbox (and inbox) marker: send a close frame, then end the connection."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Signal:
    """Outbox marker for the writer: ``flush`` the transport, or send a ``ping``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


FLUSH: Final = Signal("flush")
PING: Final = Signal("ping")


class Outbound:
    """A connection's outbound side: the outbox, the frames held for the coalescer, the
    byte count the limit applies to, the writer, and the close state."""

    __slots__ = (
        "_budget",
        "_cancel_scope",
        "_close",
        "_close_timeout",
        "_coalesced",
        "_coalesced_bytes",
        "_coalescer",
        "_flush_queued",
        "_frames",
        "_limit",
        "_nowait",
        "_outbox",
        "_policy",
        "_recovered_bytes",
        "_recovering",
        "_send_scope",
        "_sent",
        "_sent_bytes",
        "_sent_direct",
        "_sent_other",
        "_stats",
        "_transport",
        "dropped_messages",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        limit: int,
        budget: MemoryBudget,
        stats: ServerStats,
        policy: SlowConsumerPolicy = "close",
        close_timeout: float = 5.0,
    ) -> None:
        self._transport = transport
        self._limit = limit
        self._budget = budget
        self._policy: SlowConsumerPolicy = policy
        self._stats = stats
        self._close_timeout = close_timeout
        self._close = CloseState()
        self._cancel_scope: trio.CancelScope | None = None  # the connection's tasks
        self._outbox: Outbox[Closing | Signal] = Outbox(budget)
        # What this transport can do besides the core (decided once, here).
        frames, nowait = _capabilities(transport)
        self._frames = cast("FrameTransport | None", transport if frames else None)
        self._nowait = cast("NonBlockingWriter | None", transport if nowait else None)
        self._coalesced: list[Frame] | None = None  # kept once made: one list per connection
        self._coalesced_bytes = 0
        self._coalescer: Coalescer | None = None
        self._flush_queued = False
        self._send_scope: trio.CancelScope | None = None  # while the writer sends
        self._sent = 0  # messages handed over for the peer (the idle timer counts them)
        # For the metrics and the access log: bytes of everything handed over, how many of
        # the messages were sent rather than published (replies, errors, ws.send), and
        # frames past the limit (pings, refusals, a crash's error) besides the messages.
        self._sent_bytes = 0
        self._sent_direct = 0
        self._sent_other = 0
        self.dropped_messages: int = 0
        """Published messages dropped for this connection (slow-consumer policy ``"drop"``)."""
        # A recovery is delivering: never drop (a gap the client cannot see is worse than
        # a close), and count its bytes.
        self._recovering = False
        self._recovered_bytes = 0

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted for this client and not yet written to the network: the
        engine's queue plus what the transport holds. ``backpressure_limit`` applies to
        this number."""
        return self._outbox.size + self._transport.pending + self._coalesced_bytes

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed; sends then raise."""
        return self._close.code is not None

    @property
    def close_code(self) -> int | None:
        """The close code, once the connection has closed."""
        return self._close.code

    @property
    def close_reason(self) -> str:
        """The close reason, once the connection has closed (often empty)."""
        return self._close.reason

    def _over_limit(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes does not fit now: something is already
        waiting, and the frame would take the connection past ``backpressure_limit`` or
        the server is over its memory budget. (A frame always fits an empty queue.)"""
        used = self._outbox.size + self._transport.pending
        return used > 0 and (used + size > self._limit or self._budget.exceeded)

    def _check_open(self) -> None:
        """Raise :class:`~trio_wsroutes.ConnectionClosed` once closing."""
        state = self._close
        if state.code is not None:
            raise ConnectionClosed(state.code, state.reason)

    # -- the three ways in -------------------------------------------------------------

    def deliver(self, frame: Frame) -> bool:
        """Queue a published frame without waiting (the broker's entry point).

        If the frame would take ``buffered_amount`` over ``backpressure_limit``, the
        server's slow-consumer policy applies: ``"close"`` evicts the connection with
        1013, ``"drop"`` drops this frame for it (counted in ``dropped_messages``).
        Returns ``False`` when the connection no longer takes frames.
        """
        if self._close.code is not None:
            return False
        self._sent += 1
        self._sent_bytes += frame.size
        if self._recovering:
            self._recovered_bytes += frame.size
        coalesced = self._coalesced
        if coalesced:
            coalesced.append(frame)
            self._coalesced_bytes += frame.size
            if self._coalesced_bytes >= COALESCE_BYTES:
                self._release_coalesced()
            return True
        if not self._outbox and not self._transport.pending:
            if self._nowait is not None:
                # Hold it: what is published to this connection before the publisher
                # yields goes out in one write (see Coalescer).
                if coalesced is None:
                    coalesced = self._coalesced = []
                coalesced.append(frame)
                self._coalesced_bytes = frame.size
                coalescer = self._coalescer
                if coalescer is None:
                    coalescer = self._coalescer = current_coalescer()
                coalescer.add(self)
                return True
            self._write_or_queue(frame)
            return True
        if self._over_limit(frame.size):
            self._sent -= 1  # not sent after all
            self._sent_bytes -= frame.size
            if self._policy == "drop" and not self._recovering:
                self.dropped_messages += 1
                self._stats.messages_dropped += 1
                return True
            self._stats.slow_consumer_closes += 1
            # A recovery closes after what fitted, so the client resumes from further on
            # (a transport that writes nothing meanwhile would otherwise never progress).
            self._overflow(flush=self._recovering)
            return False
        self._outbox.put_nowait(frame)
        return True

    def _overflow(self, *, flush: bool) -> None:
        """A publish did not fit and the policy is to close: close with 1013 (``flush``:
        after what is queued). The connection also leaves its topics and the registry."""
        event = CloseEvent.CLOSE if flush else CloseEvent.CLOSE_NOW
        self._advance(event, CloseCode.TRY_AGAIN_LATER, "slow consumer")

    async def _send_frame(self, frame: Frame) -> None:
        """Queue ``frame``, waiting while it does not fit (``ws.send``, replies); raises
        :class:`~trio_wsroutes.ConnectionClosed` once the connection is closing."""
        self._check_open()
        if self._coalesced:
            self._release_coalesced()  # what was published to it goes first
        if self._over_limit(frame.size):
            outbox = self._outbox
            while self._over_limit(frame.size):
                if outbox.size + self._transport.pending + frame.size > self._limit:
                    await outbox.wait_for_space()
                else:
                    # The whole server holds too much: a connection that already has
                    # something queued waits for the budget, one with nothing goes on.
                    await self._budget.wait()
                self._check_open()
        else:
            # Not a full checkpoint: a yield here would cost a scheduler pass per message.
            # Cancellation is still honoured, and a sender that never yields parks as soon
            # as the limit is reached.
            await trio.lowlevel.checkpoint_if_cancelled()
        self._sent += 1
        self._sent_direct += 1
        self._sent_bytes += frame.size
        if self._coalesced:
            self._release_coalesced()  # what was published to it goes first
        self._write_or_queue(frame)

    def _enqueue(self, frame: Frame) -> None:
        """Write ``frame`` now or queue it, whatever the limit says."""
        self._sent_other += 1
        self._sent_bytes += frame.size
        if self._coalesced:
            self._release_coalesced()  # what was published to it goes first
        self._write_or_queue(frame)

    # -- the one decision: now or later ------------------------------------------------

    def _write_or_queue(self, frame: Frame) -> None:
        nowait = self._nowait
        if nowait is not None and not self._outbox and nowait.try_send_nowait(frame):
            if self._transport.pending:
                self._request_flush()
            return
        self._outbox.put_nowait(frame)

    def _release_coalesced(self) -> None:
        """Write the held frames in one call, or queue them for the writer (the
        coalescer calls it once the publisher yields)."""
        frames = self._coalesced
        if not frames:
            return  # released already (something was sent after them), or dropped
        self._coalesced_bytes = 0
        if len(frames) == 1:
            self._write_or_queue(frames[0])
        else:
            nowait = self._nowait
            if nowait is not None and not self._outbox and nowait.try_send_many_nowait(frames):
                if self._transport.pending:
                    self._request_flush()
            else:
                for frame in frames:
                    self._outbox.put_nowait(frame)
        frames.clear()

    def _request_flush(self) -> None:
        """The transport holds bytes to write (the rest of a frame, a pong): have the
        writer finish them before anything queued after this point."""
        if not self._flush_queued:
            self._flush_queued = True
            self._outbox.put_nowait(FLUSH)

    def _queue_ping(self) -> None:
        self._outbox.put_nowait(PING)

    def _drop_outbound(self) -> None:
        """Drop what is queued and held (an urgent close, or the end)."""
        self._coalesced = None
        self._coalesced_bytes = 0
        self._outbox.clear()
        self._flush_queued = False

    # -- closing -----------------------------------------------------------------------

    def _advance(self, event: CloseEvent, code: int = 0, reason: str = "") -> None:
        """Move the close state on and carry out what it asks."""
        steps = self._close.advance(event, code, reason)
        if steps.queue_close is not None:
            if steps.drop_queued:
                self._drop_outbound()
            elif self._coalesced:
                self._release_coalesced()  # sent before the close frame
            self._outbox.put_nowait(Closing(*steps.queue_close))
        if steps.cancel_send and self._send_scope is not None:
            self._send_scope.cancel()
        scope = self._cancel_scope
        if scope is None:
            return
        if steps.started:
            # A client that stops reading must not hold the connection open.
            scope.deadline = min(scope.deadline, trio.current_time() + self._close_timeout)
        if steps.cancel_tasks:
            scope.cancel()

    # -- the writer: the only task that waits on the network --------------------------

    async def _write(self) -> None:
        """The writer task: write what is queued until the close frame is out, then end
        the connection's tasks; a connection found gone ends them too."""
        outbox = self._outbox
        transport = self._transport
        # _advance cancels the send scope to interrupt a send to a client that does not
        # read; the outbox then holds only the close. A transport that writes without
        # waiting needs the writer rarely: a scope per send, as idle connections are the
        # many. One that writes only from here (ASGI) keeps one scope until a close
        # interrupts it: a scope costs about what a task switch does, every message.
        per_send = self._nowait is not None
        item: Frame | Closing | Signal | None = None
        try:
            while True:
                if item is None:
                    # Not outbox.get(): an idle writer's stack has no frame of the queue's.
                    item = outbox.get_nowait()
                    if item is None:
                        await outbox.wait()
                        continue
                if type(item) is Closing:
                    break
                with trio.CancelScope() as self._send_scope:
                    while True:
                        # Taken: interrupted from here on, it is not sent again.
                        sending, item = item, None
                        if type(sending) is Frame:
                            await transport.send(sending)
                        else:
                            # Only a transport that sees frames owes flushes and pings.
                            frames = self._frames
                            assert frames is not None
                            if sending is FLUSH:
                                self._flush_queued = False
                                await frames.flush()
                            else:
                                assert sending is PING
                                await frames.ping()
                        if outbox.senders_waiting and (
                            outbox.size + transport.pending < self._limit
                        ):
                            outbox.wake_senders()
                        if per_send:
                            break
                        item = await outbox.get()
                        if type(item) is Closing:
                            break
                self._send_scope = None
            self._advance(CloseEvent.FRAME_TAKEN)
            await transport.close(item.code, item.reason)
        except TransportClosed:
            self._send_scope = None
            self._advance(CloseEvent.FRAME_TAKEN)
            self._advance(CloseEvent.PEER_GONE, CloseCode.ABNORMAL, "")
            return
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()
