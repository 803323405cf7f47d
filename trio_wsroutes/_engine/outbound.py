"""Outbound flow: what a connection sends, held, queued or written, and the writer task.

Three ways in, one decision each:

* :meth:`Outbound.deliver` (a publish, from any task; never waits): held until the
  publisher yields when the transport writes without waiting (see
  :class:`~trio_wsroutes._flow.Coalescer`), written or queued otherwise; over the limit,
  the slow-consumer policy applies.
* :meth:`Outbound.send` (``ws.send`` and replies): waits while over the limit.
* :meth:`Outbound.enqueue` (pings, refusals, crash replies): past any limit, tiny.

Where a frame goes is decided by :meth:`Outbound._write_or_queue` (written now if nothing
is queued and the transport takes it, else queued for the writer), and whether it fits by
:meth:`Outbound.over_limit` (a frame fits when nothing is queued, or when it keeps the
connection within ``backpressure_limit`` and the server within its memory budget). The
writer is the only task that waits on the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final

import trio

from .._flow import Coalescer, MemoryBudget, Outbox, current_coalescer
from .._frames import Frame
from .._spec import SlowConsumerPolicy
from .._stats import ServerStats
from .._transports import Transport

__all__ = ["COALESCE_BYTES", "Closing", "Outbound", "Overflow", "Signal"]

logger = logging.getLogger("trio_wsroutes")

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


class Overflow:
    """What :meth:`Outbound.deliver` tells the connection when a frame does not fit and
    the policy is to close: evict (``flush``: after what is queued, for a recovery)."""

    __slots__ = ("flush",)

    def __init__(self, *, flush: bool) -> None:
        self.flush = flush


_EVICT: Final = Overflow(flush=False)
_EVICT_AFTER_QUEUED: Final = Overflow(flush=True)


class Outbound:
    """One connection's outbound side: the outbox, the frames held for the coalescer, the
    byte count the limit applies to, and the writer."""

    __slots__ = (
        "_budget",
        "_coalesced",
        "_coalescer",
        "_flush_queued",
        "_limit",
        "_outbox",
        "_policy",
        "_send_scope",
        "_stats",
        "_transport",
        "_writes_nowait",
        "coalesced_bytes",
        "dropped",
        "recovered_bytes",
        "recovering",
        "sent",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        limit: int,
        budget: MemoryBudget,
        policy: SlowConsumerPolicy = "close",
        stats: ServerStats,
    ) -> None:
        self._transport = transport
        self._limit = limit
        self._budget = budget
        self._policy: SlowConsumerPolicy = policy
        self._stats = stats
        self._outbox: Outbox[Closing | Signal] = Outbox(budget)
        self._writes_nowait = transport.writes_nowait
        self._coalesced: list[Frame] | None = None  # kept once made: one list per connection
        self.coalesced_bytes = 0
        self._coalescer: Coalescer | None = None
        self._flush_queued = False
        self._send_scope: trio.CancelScope | None = None  # while the writer sends
        self.sent = 0
        """Messages handed over for the peer (the idle timer counts them)."""
        self.dropped = 0
        """Published frames dropped by the ``"drop"`` policy."""
        self.recovering = False
        """A recovery is delivering: never drop (a gap the client cannot see is worse
        than a close), and count its bytes."""
        self.recovered_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes taken and not yet written: queued, held, and in the transport."""
        return self._outbox.size + self._transport.pending + self.coalesced_bytes

    def over_limit(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes does not fit now: something is already
        waiting, and the frame would take the connection past ``backpressure_limit`` or
        the server is over its memory budget. (A frame always fits an empty queue.)"""
        used = self._outbox.size + self._transport.pending
        return used > 0 and (used + size > self._limit or self._budget.exceeded)

    # -- the three ways in -------------------------------------------------------------

    def deliver(self, frame: Frame) -> Overflow | None:
        """Take a published frame without waiting; an :class:`Overflow` when the
        connection must be evicted (slow-consumer policy ``"close"``)."""
        self.sent += 1
        if self.recovering:
            self.recovered_bytes += frame.size
        coalesced = self._coalesced
        if coalesced:
            coalesced.append(frame)
            self.coalesced_bytes += frame.size
            if self.coalesced_bytes >= COALESCE_BYTES:
                self.release_coalesced()
            return None
        if not self._outbox and not self._transport.pending:
            if self._writes_nowait:
                # Hold it: what is published to this connection before the publisher
                # yields goes out in one write (see Coalescer).
                if coalesced is None:
                    coalesced = self._coalesced = []
                coalesced.append(frame)
                self.coalesced_bytes = frame.size
                coalescer = self._coalescer
                if coalescer is None:
                    coalescer = self._coalescer = current_coalescer()
                coalescer.add(self)
                return None
            self._write_or_queue(frame)
            return None
        if self.over_limit(frame.size):
            if self._policy == "drop" and not self.recovering:
                self.dropped += 1
                self._stats.messages_dropped += 1
                return None
            self._stats.slow_consumer_closes += 1
            # A recovery closes after what fitted, so the client resumes from further on
            # (a transport that writes nothing meanwhile would otherwise never progress).
            return _EVICT_AFTER_QUEUED if self.recovering else _EVICT
        self._outbox.put_nowait(frame)
        return None

    async def send(self, frame: Frame, still_open: Callable[[], None]) -> None:
        """Queue ``frame``, waiting while it does not fit; ``still_open()`` is asked after
        each wait (it raises once the connection is closing)."""
        if self._coalesced:
            self.release_coalesced()  # what was published to it goes first
        if self.over_limit(frame.size):
            outbox = self._outbox
            budget = self._budget
            while self.over_limit(frame.size):
                if outbox.size + self._transport.pending + frame.size > self._limit:
                    await outbox.wait_for_space()
                else:
                    # The whole server holds too much: a connection that already has
                    # something queued waits for the budget, one with nothing goes on.
                    await budget.wait()
                still_open()
        else:
            # Not a full checkpoint: a yield here would cost a scheduler pass per message.
            # Cancellation is still honoured, and a sender that never yields parks as soon
            # as the limit is reached.
            await trio.lowlevel.checkpoint_if_cancelled()
        self.sent += 1
        self.enqueue(frame)

    def enqueue(self, frame: Frame) -> None:
        """Write ``frame`` now or queue it, whatever the limit says."""
        if self._coalesced:
            self.release_coalesced()  # what was published to it goes first
        self._write_or_queue(frame)

    def queue_ping(self) -> None:
        """Have the writer send a WebSocket ping."""
        self._outbox.put_nowait(PING)

    def queue_close(self, code: int, reason: str, *, drop_queued: bool) -> None:
        """Queue the close frame, after what is queued or (``drop_queued``) instead of it."""
        if drop_queued:
            self.drop()
        elif self._coalesced:
            self.release_coalesced()  # sent before the close frame
        self._outbox.put_nowait(Closing(code, reason))

    def drop(self) -> None:
        """Drop what is queued and held (an urgent close, or the end)."""
        self._coalesced = None
        self.coalesced_bytes = 0
        self._outbox.clear()
        self._flush_queued = False

    def cancel_send(self) -> None:
        """Interrupt the send in progress (a client that does not read)."""
        if self._send_scope is not None:
            self._send_scope.cancel()

    # -- the one decision: now or later ------------------------------------------------

    def _write_or_queue(self, frame: Frame) -> None:
        transport = self._transport
        if not self._outbox and transport.try_send_nowait(frame):
            if transport.pending:
                self._request_flush()
            return
        self._outbox.put_nowait(frame)

    def _write_or_queue_many(self, frames: Sequence[Frame]) -> None:
        transport = self._transport
        if not self._outbox and transport.try_send_many_nowait(frames):
            if transport.pending:
                self._request_flush()
            return
        for frame in frames:
            self._outbox.put_nowait(frame)

    def release_coalesced(self) -> None:
        """Write the held frames in one call, or queue them for the writer (the
        coalescer calls it once the publisher yields)."""
        frames = self._coalesced
        if not frames:
            return  # released already (something was sent after them), or dropped
        self.coalesced_bytes = 0
        if len(frames) == 1:
            self._write_or_queue(frames[0])
        else:
            self._write_or_queue_many(frames)
        frames.clear()

    def request_flush(self) -> None:
        """The transport holds bytes to write (a pong, the echo of a close): have the
        writer finish them before anything queued after this point."""
        self._request_flush()

    def _request_flush(self) -> None:
        if not self._flush_queued:
            self._flush_queued = True
            self._outbox.put_nowait(FLUSH)

    # -- the writer: the only task that waits on the network --------------------------

    async def write(self) -> Closing:
        """Write what is queued until the close marker, which is returned once its frame
        is out. Raises :class:`~trio_wsroutes._transports.TransportClosed` when the
        connection is gone."""
        outbox = self._outbox
        transport = self._transport
        try:
            while True:
                item = await outbox.get()
                if type(item) is Closing:
                    return item
                # cancel_send cancels this scope to interrupt a send to a client that
                # does not read; the outbox then holds only the close. (A scope per send,
                # not one for the writer's life: idle connections are the many.)
                with trio.CancelScope() as self._send_scope:
                    if type(item) is Frame:
                        await transport.send(item)
                    elif item is FLUSH:
                        self._flush_queued = False
                        await transport.flush()
                    else:
                        assert item is PING
                        await transport.ping()
                self._send_scope = None
                if outbox.senders_waiting and outbox.size + transport.pending < self._limit:
                    outbox.wake_senders()
        finally:
            self._send_scope = None
