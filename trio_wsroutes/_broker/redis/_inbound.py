"""What a :class:`~trio_wsroutes.RedisBroker` receives: the drain of the subscription
connection's pushes, the checks every message from Redis passes (size, format,
signature, sequence), the bounded queue of messages waiting for local fan-out, and the
task that fans them out."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import trio

from ..._messages import Frame
from .._base import Subscriber
from .._topics import TopicTable
from ._channels import Channels
from ._common import RedisBrokerStats, Settings, logger
from ._continuity import Continuity
from ._control import Control
from ._outbound import Outbound
from ._positions import ReplayGuard
from ._recovery import Recoveries
from ._wire import MAX_HEADER, WIRE_MAGIC, authentic, decode_wire

if TYPE_CHECKING:
    from coredis.connection import BaseConnection

    from ..._tracing import Tracing

__all__ = ["Inbound"]

_MAX_ORIGINS_PER_TOPIC: Final = 64
_REPLAY_WINDOW: Final = 16
"""Without a secret, a sequence number at most this far behind its origin's last one is a
duplicate; one further behind restarts the origin's tracking (the last one was forged)."""


_LIVE_KINDS: Final = (b"t ", b"b ")
_ORIGIN_END: Final = 7 + 44
"""Where an origin (at most 10 digits, ``-``, 32 hex digits) and its space end, at most."""


_Item = tuple[
    str, Frame, Subscriber | None, int, str | None, int, tuple[bytes, bytes | None] | None
]
"""A message waiting for the fan-out: topic, frame, subscriber to skip, history offset
(or 0) and epoch, publish time in ms (or 0), trace context (or ``None``)."""


class Inbound:
    """The receiving side of a broker: messages from Redis, checked, queued (bounded in
    messages and bytes: past it a message is dropped and counted), and fanned out to
    the local subscribers by :meth:`fan_out_loop`."""

    def __init__(
        self,
        settings: Settings,
        stats: RedisBrokerStats,
        channels: Channels,
        outbound: Outbound,
        recoveries: Recoveries,
        table: TopicTable,
        control: Control,
        continuity: Continuity,
    ) -> None:
        self._settings = settings
        self._continuity = continuity
        self._control = control
        self._stats = stats
        self._channels = channels
        self._outbound = outbound
        self._recoveries = recoveries
        self._table = table
        self._seen: dict[str, OrderedDict[bytes, int]] = {}  # topic -> origin -> last seq
        # With a secret: the last position delivered per topic, kept after its last local
        # subscriber leaves, so that a replayed publication is not delivered again.
        self._replays = None if settings.secret is None else ReplayGuard()
        self._inbox: deque[_Item] = deque()
        self.queued_bytes = 0
        """Payload bytes received and not yet fanned out."""
        self._lot = trio.lowlevel.ParkingLot()
        self._overflowing = False
        self.last_received = 0.0
        """When Redis last sent anything on the subscription connection (Trio's clock)."""
        self.tracing: Tracing | None = None
        """The server's tracing, if on: a delivery with a trace context gets a span."""
        self.on_unsubscribed: Callable[[bytes], None] | None = None
        """On a cluster: called when Redis ends a subscription this process holds."""

    def forget(self, topic: str) -> None:
        """Nobody here listens on ``topic`` any more: forget its sequence tracking."""
        self._seen.pop(topic, None)
        self._continuity.forget(topic)

    @property
    def delivered(self) -> dict[str, tuple[str, int]]:
        """The last position fanned out on each topic with history and local subscribers
        (kept by :class:`Continuity`): on a cluster, where a topic catches up from after
        a gap in its subscription."""
        return self._continuity.last

    def attach(self, sub: BaseConnection) -> bool:
        """Before ``sub`` runs: have coredis hand each push to the checks and the
        fan-out queue as it parses it, in its reader task, so that a message costs no
        task switch, memory stream or processing budget of its own; whether coredis
        is built as expected (if not, :meth:`drain` moves the pushes)."""
        connection = cast(Any, sub)
        buffer = getattr(connection, "_push_message_buffer_in", None)
        if not callable(getattr(buffer, "send_nowait", None)) or not hasattr(
            connection, "_processing_budget"
        ):
            return False
        connection._push_message_buffer_in = _Direct(buffer, self._on_push)
        # Nothing waits in coredis' buffer to be processed: reading needs no budget.
        connection._processing_budget = _NO_BUDGET
        return True

    async def drain(self, sub: BaseConnection, gate: Any) -> None:
        """Move what Redis pushes into the bounded fan-out queue, as fast as it arrives
        (on a connection :meth:`attach` prepared, nothing arrives here: this waits
        until the connection ends).

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
        self.last_received = trio.current_time()
        if not isinstance(push, list):
            return
        items = cast("list[object]", push)
        if len(items) < 2:
            return
        kind, channel = items[0], items[1]
        if not isinstance(channel, bytes):
            return
        if (kind == b"message" or kind == b"smessage") and len(items) == 3:
            data = items[2]
            if isinstance(data, bytes):
                self._on_message(channel, data)
        elif kind == b"subscribe" or kind == b"ssubscribe":
            self._channels.acknowledged(channel)
        elif (
            kind == b"sunsubscribe"
            and channel in self._channels.subscribed
            and self.on_unsubscribed is not None
        ):
            # A cluster ended a sharded subscription we did not leave: its slot moved.
            self.on_unsubscribed(channel)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        topic = self._channels.topics.get(channel)
        if topic is None:
            if channel == self._settings.control_channel:
                self._control.received(data, self._outbound.own_origins)
            return  # else a channel we just left
        stats = self._stats
        max_size = self._settings.max_message_size
        if len(data) > max_size + MAX_HEADER:
            stats.oversized += 1  # not even decoded
            return
        secret = self._settings.secret
        if secret is None and data[5:7] in _LIVE_KINDS and data.startswith(WIRE_MAGIC):
            # Our own publication coming back, on a topic without history: it was
            # delivered here when it was published. Dropped unparsed (the payload is
            # not even checked as UTF-8); anything else is parsed and counted as usual.
            space = data.find(b" ", 7, _ORIGIN_END)
            if (
                space > 0
                and data[7:space] in self._outbound.own_origins
                and self._settings.history_for(topic) is None
            ):
                end = data.find(b"\n", space, MAX_HEADER)
                if end > 0 and len(data) - end - 1 <= max_size:
                    return
        message = decode_wire(data)
        if message is None:
            stats.malformed += 1
            return
        if len(message.payload) > max_size:
            stats.oversized += 1
            return
        if secret is not None and not authentic(secret, channel, message):
            stats.unauthenticated += 1
            return
        if message.ignored:
            stats.extensions_ignored += 1
        outbound = self._outbound
        if message.epoch is not None and self._replays is not None:
            # Signed with its position: one at or before the last delivered is a replay.
            if not self._replays.fresh(topic, message.epoch, message.offset):
                stats.duplicates += 1
                return
            assert outbound.proposals is not None
            outbound.proposals.learn(topic, message.epoch, message.offset)
        origin = message.origin
        exclude: Subscriber | None = None
        own = origin is not None and origin in outbound.own_origins
        if own:
            if self._settings.history_for(topic) is None:
                return  # ours: delivered locally when it was published
            # Ours on a topic with history: delivered here, as everywhere, from Redis.
            if outbound.excludes:
                exclude = outbound.excludes.pop((cast(bytes, origin), topic, message.seq), None)
        seq = message.seq
        if origin is not None and seq:
            # Sequence tracking, inline: a call more per message costs about 1 % here.
            seen = self._seen.get(topic)
            if seen is None:
                seen = self._seen[topic] = OrderedDict()
            last = seen.get(origin)
            if last is not None:
                if seq <= last:
                    if secret is not None or last - seq < _REPLAY_WINDOW:
                        stats.duplicates += 1
                        return
                    # Unsigned, and far behind: believe this one (see the class docs).
                    stats.sequence_resets += 1
                elif seq > last + 1:
                    stats.missed += seq - last - 1
                seen.move_to_end(origin)
            elif len(seen) >= _MAX_ORIGINS_PER_TOPIC:
                seen.popitem(last=False)
            seen[origin] = seq
        if not own:
            stats.received += 1
        size = len(message.payload)
        inbox = self._inbox
        if inbox and (
            len(inbox) >= self._settings.max_messages
            or self.queued_bytes + size > self._settings.max_bytes
        ):
            stats.receive_dropped += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "redis broker: local fan-out is behind (%d messages, %d bytes queued); "
                    "dropping messages from Redis until it catches up",
                    len(inbox),
                    self.queued_bytes,
                )
            return
        frame = Frame(message.payload, binary=message.binary)
        traceparent = message.traceparent
        inbox.append(
            (
                topic,
                frame,
                exclude,
                message.offset,
                message.epoch,
                0 if own else message.published,
                None
                if traceparent is None or self.tracing is None
                else (traceparent, message.tracestate),
            )
        )
        self.queued_bytes += size
        if self.queued_bytes > stats.inbound_queue_peak_bytes:
            stats.inbound_queue_peak_bytes = self.queued_bytes
        self._lot.unpark()

    async def fan_out_loop(self) -> None:
        """Fan what is queued out to the local subscribers, yielding as publishes do
        (each message counts as one: see ``TopicTable.pace``)."""
        inbox = self._inbox
        table = self._table
        recoveries = self._recoveries
        recovering = recoveries.recovering  # the same dicts for the broker's life
        lagging = recoveries.lagging
        lag = self._stats.lag
        see = self._continuity.see
        while True:
            if not inbox:
                if self._overflowing:
                    self._overflowing = False
                    logger.info(
                        "redis broker: local fan-out caught up (%d messages dropped so far)",
                        self._stats.receive_dropped,
                    )
                await self._lot.park()
                continue
            topic, frame, exclude, offset, epoch, published, trace = inbox.popleft()
            self.queued_bytes -= frame.size
            if published:
                seconds = time.time() - published / 1000
                lag.observe(seconds if seconds > 0.0 else 0.0)  # clocks apart: 0
            span = None
            if trace is not None and self.tracing is not None:
                span = self.tracing.deliver(topic, trace, frame, self._settings.policy)
            if offset and epoch is not None:
                see(topic, epoch, offset)  # a gap ends the subscribers that can resume
            if recovering:
                recoveries.buffer(topic, frame, offset, epoch, exclude)
            if lagging and offset:
                skip = recoveries.skip_lagging(topic, offset, epoch)
                delivered = table.fan_out(topic, frame, exclude, skip)
            else:
                delivered = table.fan_out(topic, frame, exclude)
            if span is not None:
                span.set_attribute("wsroutes.local_deliveries", delivered)
                span.end()
            if table.pace():
                await trio.lowlevel.checkpoint()


class _Direct:
    """Stands in for coredis' push-message buffer: what coredis puts in it goes to
    ``on_push`` at once; everything else (closing it at the connection's end, which
    ends :meth:`Inbound.drain`) is the buffer's own."""

    __slots__ = ("_buffer", "send_nowait")

    def __init__(self, buffer: Any, on_push: Callable[[object], None]) -> None:
        self._buffer = buffer
        self.send_nowait = on_push

    def __getattr__(self, name: str) -> Any:
        return getattr(self._buffer, name)

    async def __aenter__(self) -> Any:
        return await self._buffer.__aenter__()

    async def __aexit__(self, *exc_info: object) -> Any:
        return await self._buffer.__aexit__(*exc_info)


class _NoBudget:
    """A processing budget that never waits."""

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_BUDGET: Final = _NoBudget()


def _nowait_receiver(connection: BaseConnection) -> Callable[[], Any] | None:
    """coredis' own push-message stream, to empty without a scheduler turn per message
    (coredis 6 keeps it in an anyio memory stream); ``None`` if it is not there."""
    stream = getattr(connection, "_push_message_buffer_out", None)
    receive_nowait = getattr(stream, "receive_nowait", None)
    return cast("Callable[[], Any]", receive_nowait) if callable(receive_nowait) else None
