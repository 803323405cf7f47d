"""Publishing through Redis: local delivery first, then the bounded queue of commands for
Redis and the task that pipelines them (``PUBLISH``, or the history script), and with a
secret the positions a publisher proposes (see :class:`~trio_wsroutes.RedisBroker`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, cast

import trio

from ..._history import History, envelope_head, topic_json
from ..._messages import Frame
from .._base import Subscriber
from .._topics import TopicTable
from ._common import Link, NodeDown, RedisBrokerStats, Settings, logger, new_origin, once, text
from ._positions import MAX_TOPICS, Pending, Proposals
from ._scripts import PUBLISH_SCRIPT, PUBLISH_SHA, load_scripts, publish_args
from ._wire import HISTORY_HEADER, encode_wire, wire_extensions

if TYPE_CHECKING:
    from ..._tracing import Tracing
    from ._common import Requests

__all__ = ["Outbound"]

_PUBLISH_BATCH: Final = 256
"""Commands pipelined at once."""
_MAX_SKIPPED: Final = 4 * _PUBLISH_BATCH
"""Publications on held topics one batch looks past for others to send."""
TURN: Final = 0.1
"""Seconds a publisher refused for its position (with a secret) has the topic to itself."""

# A command for Redis and its size; with a secret, a publication on a topic with history
# waits as Pending: its position is proposed when it is sent.
_Queued = tuple[tuple[bytes, ...] | Pending, int]


class Outbound:
    """The publishing side of a broker: its origin and sequence numbers, the queue to
    Redis (bounded in messages and bytes: past it a publish is counted lost, never
    waited for), the sender task, and the proposals (with a secret)."""

    def __init__(
        self, settings: Settings, stats: RedisBrokerStats, link: Link, table: TopicTable
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._link = link
        self._table = table
        self.origin = new_origin()
        """This process's id in the messages it publishes (a new one past
        100 000 topics, so that the counters stay bounded)."""
        self.own_origins: deque[bytes] = deque([self.origin], maxlen=8)
        self._seq: dict[str, int] = {}
        self._outgoing: deque[_Queued] = deque()
        self._outgoing_bytes = 0
        self._in_flight = 0
        self._outgoing_lot = trio.lowlevel.ParkingLot()
        self._sent_lot = trio.lowlevel.ParkingLot()
        self._overflowing = False
        secret = settings.secret
        turn_ms = round(min(TURN, settings.timeout) * 1000)
        self.proposals = None if secret is None else Proposals(secret, turn_ms)
        # Topics another publisher has the turn on, until when (Trio's clock): their
        # publications wait, the others go by.
        self._held: dict[str, float] = {}
        self.excludes: dict[tuple[bytes, str, int], Subscriber] = {}
        """Who to skip when our own publications on topics with history come back from
        Redis: (origin, topic, seq) -> the publish's ``exclude``."""
        self._script_error_logged = False
        self.tracing: Tracing | None = None
        """The server's tracing, if on: messages carry the current span's context."""

    def _extensions(self) -> bytes:
        """The extension fields of a message published now (its time, its trace)."""
        tracing = self.tracing
        if tracing is None:
            return wire_extensions(time.time_ns() // 1_000_000)
        return tracing.wire_extensions()

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, topic: str, frame: Frame, exclude: Subscriber | None) -> int:
        """Deliver to the local subscribers and queue for Redis (see
        :meth:`RedisBroker.publish <trio_wsroutes.RedisBroker.publish>`)."""
        settings = self._settings
        history = settings.history_for(topic)
        if history is not None:
            return await self._publish_history(topic, frame, history, exclude)
        delivered = self._table.fan_out(topic, frame, exclude)
        channel = settings.channel(topic)
        payload = encode_wire(
            frame,
            self.origin,
            self._next_seq(topic),
            secret=settings.secret,
            channel=channel,
            extensions=self._extensions(),
        )
        if self._link.running:
            self._enqueue((b"PUBLISH", channel, payload), len(payload))
            return delivered
        return int(await self._once(lambda client: client.publish(channel, payload)))

    async def _publish_history(
        self, topic: str, frame: Frame, history: History, exclude: Subscriber | None
    ) -> int:
        """Publish on a topic with history: through Redis to every process, this one
        included, so that all subscribers see Redis' order."""
        link, settings, table = self._link, self._settings, self._table
        channel = settings.channel(topic)
        if link.running and not link.reachable(channel):
            # Redis holds the offsets: deliver here at once, without a position.
            self._stats.publish_lost += 1
            return table.fan_out(topic, frame, exclude)
        seq = self._next_seq(topic)  # first: it may start a new origin
        origin = self.origin
        head = None if frame.binary else envelope_head(frame.payload, topic_json(topic))
        keys = settings.history_keys(topic)
        extensions = self._extensions()
        item: tuple[bytes, ...] | Pending
        if head is None:
            # Binary, or not a JSON object: live only, unnumbered.
            payload = encode_wire(
                frame, origin, seq, secret=settings.secret, channel=channel, extensions=extensions
            )
            if not link.running:
                return int(await self._once(lambda client: client.publish(channel, payload)))
            item = (b"PUBLISH", channel, payload)
            if self.proposals is not None:  # held in order behind the proposals
                item = Pending(topic, channel, keys, history, origin, seq, None, item)
            size = len(payload)
        elif self.proposals is not None:
            pending = Pending(topic, channel, keys, history, origin, seq, head, (), extensions)
            if not link.running:
                return int(await self._once(lambda client: self._propose_once(client, pending)))
            item, size = pending, len(head) + 200
        else:
            args = publish_args(
                history,
                log_ttl_ms=settings.log_ttl_ms(history),
                meta_ttl_ms=settings.meta_ttl_ms,
                channel=channel,
                header=b"%s%s %d %s " % (HISTORY_HEADER, origin, seq, extensions),
                payload=head,
            )
            if not link.running:
                reply = await self._once(lambda client: client.eval(PUBLISH_SCRIPT, keys, args))
                return int(cast("list[Any]", reply)[1])
            item = (b"EVALSHA", PUBLISH_SHA, b"2", *keys, *args)
            size = len(head) + 64
        if not self._enqueue(item, size):
            return 0
        if exclude is not None:
            excludes = self.excludes
            if len(excludes) >= settings.max_messages:
                del excludes[next(iter(excludes))]  # bounded; the oldest is long gone
            excludes[(origin, topic, seq)] = exclude
        count = table.subscriber_count(topic)
        if exclude is not None and table.is_subscribed(topic, exclude):
            count -= 1
        return count

    async def publish_raw(self, channel: bytes, payload: bytes) -> int:
        """Queue ``payload`` for ``channel`` as it is (a control message); on a broker
        that is not running, publish it at once: how many processes Redis reached."""
        if self._link.running:
            self._enqueue((b"PUBLISH", channel, payload), len(payload))
            await trio.lowlevel.checkpoint()
            return 0
        return int(await self._once(lambda client: client.publish(channel, payload)))

    async def _propose_once(self, client: Any, pending: Pending) -> int:
        """Commit ``pending`` through ``client``, proposing again while refused; how many
        processes it reached."""
        proposals = self.proposals
        assert proposals is not None
        settings = self._settings
        try:
            with trio.move_on_after(settings.timeout):
                while True:
                    command = proposals.command(
                        pending, settings.log_ttl_ms(pending.history), settings.meta_ttl_ms
                    )
                    reply = cast(
                        "list[Any]", await client.eval(PUBLISH_SCRIPT, pending.keys, command[5:])
                    )
                    if int(reply[0]) == 1:
                        return int(reply[1])
                    self._stats.publish_conflicts += 1
                    proposals.refused(pending.topic, text(reply[1]), int(reply[2]))
                    if int(reply[3]):
                        await trio.sleep(min(int(reply[3]) / 1000, TURN))
        finally:
            proposals.busy.discard(pending.topic)
        self._stats.publish_lost += 1
        raise ConnectionError(f"could not publish on {pending.topic!r}: its position kept moving")

    async def _once(self, call: Callable[[Any], Awaitable[Any]]) -> Any:
        return await once(self._settings, self._stats, call)

    def _next_seq(self, topic: str) -> int:
        seq = self._seq.get(topic, 0) + 1
        if seq == 1 and len(self._seq) >= MAX_TOPICS:
            # Bound the counters: a new origin starts every topic afresh for receivers.
            self.origin = new_origin()
            self.own_origins.append(self.origin)
            self._seq.clear()
        self._seq[topic] = seq
        return seq

    # -- the queue to Redis ------------------------------------------------------------------

    def _enqueue(self, command: tuple[bytes, ...] | Pending, size: int) -> bool:
        """Queue a command for Redis; ``False`` (counted lost) if it cannot be."""
        if self._link.state != "connected":
            self._stats.publish_lost += 1
            return False
        out = self._outgoing
        settings = self._settings
        if out and (
            len(out) >= settings.max_messages or self._outgoing_bytes + size > settings.max_bytes
        ):
            self._stats.publish_lost += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "redis broker: Redis is not keeping up with publishes (%d queued); "
                    "dropping publishes until it does",
                    len(out),
                )
            return False
        out.append((command, size))
        self._outgoing_bytes += size
        self._outgoing_lot.unpark()
        return True

    async def flush(self) -> None:
        """Wait until every queued publish has been acknowledged or counted as lost (at
        most ``timeout`` seconds)."""
        with trio.move_on_after(self._settings.timeout):
            while (self._outgoing or self._in_flight) and self._link.state == "connected":
                await self._sent_lot.park()
        await trio.lowlevel.checkpoint()

    def reset(self) -> None:
        """The session ended: what is queued or unacknowledged is lost."""
        self.excludes.clear()
        lost = self._in_flight + len(self._outgoing)
        if lost:
            self._stats.publish_lost += lost
        self._outgoing.clear()
        self._outgoing_bytes = 0
        self._in_flight = 0
        self._held.clear()
        if self.proposals is not None:
            self.proposals.busy.clear()
        self._overflowing = False
        self._sent_lot.unpark_all()

    async def sender(self, pub: Requests) -> None:
        """Pipeline what is queued on the publishing connection ``pub`` until it fails."""
        from coredis.exceptions import NoScriptError, ResponseError

        out = self._outgoing
        proposals = self.proposals
        stats = self._stats
        while True:
            if not out:
                if self._overflowing:
                    self._overflowing = False
                    logger.info("redis broker: publishing caught up")
                self._sent_lot.unpark_all()
                await self._outgoing_lot.park()
                continue
            batch = self._take_batch()
            if not batch:
                # All that is queued is on topics another publisher has the turn on.
                with trio.move_on_at(min(self._held.values(), default=0.0)):
                    await self._outgoing_lot.park()
                continue
            self._in_flight = len(batch)
            timeout = self._settings.timeout
            requests = [
                pub.create_request(*self._command(item), timeout=timeout) for item, _ in batch
            ]
            reload = False
            again: list[_Queued] = []
            for (item, size), request in zip(batch, requests, strict=True):
                try:
                    reply = await request
                except NodeDown:
                    # On a cluster: this command's master is down (the others go on).
                    self._in_flight -= 1
                    stats.publish_lost += 1
                    continue
                except ResponseError as exc:
                    # A history script failed in Redis: that publication is lost.
                    self._in_flight -= 1
                    stats.publish_lost += 1
                    reload = reload or isinstance(exc, NoScriptError)
                    if not self._script_error_logged:
                        self._script_error_logged = True
                        logger.warning("redis broker: a publication failed in Redis: %s", exc)
                    continue
                self._in_flight -= 1
                if isinstance(item, Pending) and item.head is not None:
                    assert proposals is not None
                    answer = cast("list[Any]", reply)
                    if int(answer[0]) == 0:
                        # Its position was taken (or it is another's turn): so is every
                        # later one of this topic in the batch (each expects the one
                        # before it); all go again, in order.
                        stats.publish_conflicts += 1
                        proposals.refused(item.topic, text(answer[1]), int(answer[2]))
                        if int(answer[3]):  # ms left of another publisher's turn
                            until = trio.current_time() + min(int(answer[3]) / 1000, TURN)
                            self._held[item.topic] = until
                        assert item.first is not None
                        if trio.current_time() - item.first < timeout:
                            again.append((item, size))
                        else:
                            stats.publish_lost += 1
                        continue
                stats.published += 1
            if proposals is not None:
                proposals.busy.clear()
            for item, size in reversed(again):
                out.appendleft((item, size))
                self._outgoing_bytes += size
            if reload:
                await load_scripts(pub, timeout)

    def _take_batch(self) -> list[_Queued]:
        """The next commands to pipeline. A frame without a position on a topic with a
        proposal in the batch waits for the next one: a refused proposal goes again, and
        the frame must not overtake it. Publications on a topic another publisher has
        the turn on wait in order, and those behind them on other topics go by."""
        out = self._outgoing
        held = self._held
        if held:
            now = trio.current_time()
            for topic in [topic for topic, until in held.items() if until <= now]:
                del held[topic]
        batch: list[_Queued] = []
        skipped: list[_Queued] = []
        proposing: set[str] = set()
        while out and len(batch) < _PUBLISH_BATCH and len(skipped) < _MAX_SKIPPED:
            item, size = out[0]
            if isinstance(item, Pending):
                if item.topic in held:
                    skipped.append(out.popleft())
                    continue
                if item.head is not None:
                    proposing.add(item.topic)
                elif item.topic in proposing:
                    break
            out.popleft()
            batch.append((item, size))
            self._outgoing_bytes -= size
        out.extendleft(reversed(skipped))
        return batch

    def _command(self, item: tuple[bytes, ...] | Pending) -> tuple[bytes, ...]:
        if not isinstance(item, Pending):
            return item
        if item.head is None:
            return item.command
        assert self.proposals is not None
        if item.first is None:
            item.first = trio.current_time()
        settings = self._settings
        return self.proposals.command(
            item, settings.log_ttl_ms(item.history), settings.meta_ttl_ms
        )
