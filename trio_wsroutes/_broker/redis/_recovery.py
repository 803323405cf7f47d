"""Reading a topic's history from Redis, and subscribing with a position: the subscribers
recovering, the live publications buffered for them meanwhile, and the recovered ones
that may still be handed, from the channel, publications they got from the stream (see
:class:`~trio_wsroutes.RedisBroker`, "A subscribe with a position")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from ..._history import (
    NOT_RECOVERED,
    History,
    HistoryPage,
    Position,
    Publication,
    Recovery,
    new_epoch,
)
from ..._messages import Frame
from .._base import Subscriber
from .._topics import TopicTable
from ._channels import Channels
from ._common import Link, RedisBrokerStats, Settings, describe, is_unexpected, logger, once
from ._scripts import READ_SCRIPT, READ_SHA, HistoryRead, evalsha

__all__ = ["Recoveries"]

_RECOVERY_ROUNDS: Final = 3
"""Reads of a topic's history one recovery may take when its live buffer overflows."""


class _Recovering:
    """A subscriber between the start of its recovery and going live: the live
    publications it would have got meanwhile, ``(offset, epoch, frame)``; offset 0 for
    one without a position."""

    __slots__ = ("cancelled", "dirty", "frames", "subscriber")

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.frames: list[tuple[int, str | None, Frame]] = []
        self.dirty = False
        """The buffer overflowed and was emptied: the history must be read again."""
        self.cancelled = False
        """Unsubscribed meanwhile: do not go live."""


class Recoveries:
    """The recoveries under way and the history reads of one broker.

    ``release(topic)`` is called when a recovery ends and nobody here needs the topic's
    channel any more."""

    def __init__(
        self,
        settings: Settings,
        stats: RedisBrokerStats,
        link: Link,
        channels: Channels,
        table: TopicTable,
        release: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._link = link
        self._channels = channels
        self._table = table
        self._release = release
        self.recovering: dict[str, dict[Subscriber, _Recovering]] = {}
        """The subscribers recovering, per topic."""
        self._buffered = 0  # publications buffered, all recoveries together
        self.lagging: dict[str, dict[Subscriber, tuple[str, int]]] = {}
        """Recovered subscribers that may yet be handed, from the channel, publications
        they got from the stream (received, not yet fanned out): skip offsets up to
        (epoch, offset) until a later one comes."""

    # -- recovering --------------------------------------------------------------------------

    async def recover(
        self, topic: str, subscriber: Subscriber, since: Position, history: History
    ) -> Recovery | None:
        """Subscribe with a position: buffer live publications, confirm the channel, read
        the stream after ``since`` (in bounded replies, at most ``max_recovery`` of it),
        deliver it, then the buffer, then go live. ``None`` when nothing could be
        recovered: the caller subscribes it live, at once (no checkpoint between)."""
        recovering = _Recovering(subscriber)
        self.recovering.setdefault(topic, {})[subscriber] = recovering
        read = self._recovery_read(topic, history, since)
        outcome = await self._read_for(topic, read, [recovering])
        # From here until the subscriber is live, no checkpoint: nothing comes in between.
        if recovering.cancelled:
            return NOT_RECOVERED  # unsubscribed meanwhile (and cleaned up then)
        self._end(topic, recovering, release=False)
        stats = self._stats
        if outcome != "done" or read.epoch is None:
            if outcome == "capped":
                stats.recoveries_capped += 1
            elif outcome == "failed":
                self._count_failure(topic, read)
            stats.recoveries_failed += 1
            return None
        return self._go_live(topic, recovering, read)

    def _recovery_read(self, topic: str, history: History, since: Position) -> HistoryRead:
        policy = self._settings.policy
        assert policy is not None
        return self._reading(topic, history, since, None, cap=policy.max_recovery)

    async def _read_for(
        self, topic: str, read: HistoryRead, group: list[_Recovering], *, live: bool = False
    ) -> str:
        """Confirm the topic's channel, then read its stream for the recoveries of
        ``group`` (again from where it ended while a buffer overflows); the outcome.
        Cancelled, the recoveries end; with ``live``, their subscribers go back to the
        table (they were live before: a catch-up)."""
        settings = self._settings
        outcome = "unread"
        try:
            try:
                pub = self._link.pub
                if pub is not None and await self._channels.join(topic):
                    keys = settings.history_keys(topic)
                    rounds = 0
                    while True:
                        for recovering in group:
                            recovering.dirty = False
                        reply = await evalsha(pub, READ_SHA, keys, read.args(), settings.timeout)
                        outcome = read.take(reply)
                        if outcome == "more":
                            continue
                        if (
                            outcome != "done"
                            or all(r.cancelled for r in group)
                            or not any(r.dirty for r in group)
                        ):
                            break
                        # A buffer overflowed during that read: what it dropped is in
                        # the stream, read on from there.
                        rounds += 1
                        if rounds >= _RECOVERY_ROUNDS:
                            outcome = "overflowed"
                            break
            except Exception as exc:
                if is_unexpected(exc):
                    raise
                outcome = "unread"
                logger.debug("redis broker: recovery on %r failed: %s", topic, describe(exc))
        except BaseException:
            if live:
                self.unhold(topic, group)
            else:
                for recovering in group:
                    self._end(topic, recovering, release=True)  # cancelled, or a bug
            raise
        return outcome

    def _go_live(
        self, topic: str, recovering: _Recovering, read: HistoryRead, *, count: bool = True
    ) -> Recovery:
        """Deliver what ``read`` read, then the buffered publications it did not, and
        make the subscriber live (no checkpoint); ``count`` it as a recovery."""
        stats = self._stats
        subscriber = recovering.subscriber
        epoch, last = read.epoch, read.last
        assert epoch is not None
        frames = [Frame(payload) for _, payload in read.publications()]
        missed = len(frames)
        for offset, frame_epoch, frame in recovering.frames:
            if offset and frame_epoch == epoch and offset <= last:
                continue  # read from the stream already
            frames.append(frame)
        for frame in frames:
            if not subscriber.deliver(frame):
                # Gone (e.g. evicted as a slow consumer): drop what else it holds.
                self._table.discard_all(subscriber)
                self._end(topic, recovering, release=True)
                return NOT_RECOVERED
        self._table.add(topic, subscriber)
        # Publications up to ``last`` may still be on their way from the channel (received,
        # not yet fanned out) unless a later one went by during the recovery.
        if last and not any(
            offset >= last or (offset and frame_epoch != epoch)
            for offset, frame_epoch, _ in recovering.frames
        ):
            self.lagging.setdefault(topic, {})[subscriber] = (epoch, last)
        if count:
            stats.recoveries += 1
            stats.recovered_messages += missed
        return Recovery(recovered=True, missed=missed)

    def hold(self, topic: str) -> list[_Recovering]:
        """On a cluster, before ``topic``'s subscription is made again after a gap: take
        its local subscribers out of the table into recoveries (what comes live is
        buffered for them from now on) until :meth:`catch_up` or :meth:`unhold`."""
        mine = self.recovering.setdefault(topic, {})
        group: list[_Recovering] = []
        for subscriber in self._table.subscribers(topic):
            if subscriber not in mine:
                recovering = mine[subscriber] = _Recovering(subscriber)
                group.append(recovering)
        if not mine:
            del self.recovering[topic]
        for recovering in group:
            # Out of the table while held (the topic's channel stays: it recovers).
            self._table.discard(topic, recovering.subscriber)
        return group

    def unhold(self, topic: str, group: list[_Recovering]) -> None:
        """Put the subscribers :meth:`hold` took back in the table, as they were (what
        was buffered for them is dropped: the gap stays, as without a catch-up)."""
        # Live ones back first, so that ending the others does not leave the channel.
        for recovering in group:
            if not recovering.cancelled:
                self._end(topic, recovering, release=False)
                self._table.add(topic, recovering.subscriber)
        for recovering in group:
            self._end(topic, recovering, release=True)

    async def catch_up(
        self, topic: str, history: History, since: Position, group: list[_Recovering]
    ) -> bool:
        """On a cluster, once ``topic``'s subscription is back after a gap: send the
        subscribers :meth:`hold` took the publications after ``since`` (the last one
        fanned out here before the gap), from the stream, then what was buffered, as a
        recovery does, and make them live again. ``False`` when the stream cannot say
        what was missed (``stats.catch_ups_failed``): they get what was buffered, and
        the gap shows in their offsets."""
        if not group:
            await trio.lowlevel.checkpoint()
            return True
        read = self._recovery_read(topic, history, since)
        outcome = await self._read_for(topic, read, group, live=True)
        stats = self._stats
        done = outcome == "done" and read.epoch is not None
        if done:
            stats.catch_ups += 1
        else:
            stats.catch_ups_failed += 1
            if outcome == "failed":
                self._count_failure(topic, read)
            logger.warning(
                "redis broker: %r missed publications that its history cannot give back "
                "(%s); its subscribers see the gap in the offsets",
                topic,
                outcome,
            )
        for recovering in group:
            if recovering.cancelled:
                continue
            self._end(topic, recovering, release=False)
            if done:
                self._go_live(topic, recovering, read, count=False)
                continue
            subscriber = recovering.subscriber
            if all(subscriber.deliver(frame) for _, _, frame in recovering.frames):
                self._table.add(topic, subscriber)
            else:
                self._table.discard_all(subscriber)
        if not self._table.subscriber_count(topic) and topic not in self.recovering:
            self._release(topic)
        return done

    def is_recovering(self, topic: str, subscriber: Subscriber) -> bool:
        """Whether ``subscriber`` is recovering on ``topic`` now."""
        recovering = self.recovering.get(topic)
        return recovering is not None and subscriber in recovering

    def _end(self, topic: str, recovering: _Recovering, *, release: bool) -> None:
        """Take ``recovering`` out of the topic's recoveries (once); with ``release``,
        leave the channel if nobody here needs it any more."""
        subscribers = self.recovering.get(topic)
        if subscribers is not None and subscribers.get(recovering.subscriber) is recovering:
            del subscribers[recovering.subscriber]
            if not subscribers:
                del self.recovering[topic]
            self._buffered -= len(recovering.frames)
        if release and topic not in self.recovering and not self._table.subscriber_count(topic):
            self._release(topic)

    def forget(self, topic: str, subscriber: Subscriber) -> None:
        """``subscriber`` unsubscribed from ``topic``: end its recovery there (it does not
        go live), and stop skipping for it."""
        recovering = self.recovering.get(topic, {}).get(subscriber)
        if recovering is not None:
            recovering.cancelled = True
            self._end(topic, recovering, release=True)
        lagging = self.lagging.get(topic)
        if lagging is not None:
            lagging.pop(subscriber, None)
            if not lagging:
                del self.lagging[topic]

    def forget_subscriber(self, subscriber: Subscriber) -> None:
        """:meth:`forget` ``subscriber`` on every topic it lists (it lists a topic before
        it subscribes, so one it recovers on too)."""
        if self.recovering or self.lagging:
            for topic in subscriber.topics:
                self.forget(topic, subscriber)

    # -- publications from the channel -------------------------------------------------------

    def buffer(
        self, topic: str, frame: Frame, offset: int, epoch: str | None, exclude: Subscriber | None
    ) -> None:
        """Hold a publication from the channel for the subscribers recovering on
        ``topic``. Past ``max_recovery_buffer`` for all of them, a buffer is emptied and
        its stream read again."""
        subscribers = self.recovering.get(topic)
        if subscribers is None:
            return
        limit = self._settings.max_recovery_buffer
        for recovering in subscribers.values():
            if recovering.subscriber is exclude:
                continue
            frames = recovering.frames
            if self._buffered >= limit:
                # Over the bound: empty this buffer; the stream is read again.
                self._buffered -= len(frames)
                frames.clear()
                recovering.dirty = True
            frames.append((offset, epoch, frame))
            self._buffered += 1

    def skip_lagging(
        self, topic: str, offset: int, epoch: str | None
    ) -> dict[Subscriber, tuple[str, int]] | None:
        """The recovered subscribers of ``topic`` that got this publication already (the
        topic's own table, kept to those: no copy), or ``None``."""
        lagging = self.lagging.get(topic)
        if lagging is None:
            return None
        for subscriber, (seen_epoch, seen_offset) in list(lagging.items()):
            if epoch != seen_epoch or offset > seen_offset:
                del lagging[subscriber]  # past it: the channel is in offset order
        if not lagging:
            del self.lagging[topic]
            return None
        return lagging

    # -- reading -----------------------------------------------------------------------------

    async def read(
        self, topic: str, history: History, since: Position | None, limit: int | None
    ) -> HistoryPage:
        """Read ``topic``'s history (see :meth:`RedisBroker.history
        <trio_wsroutes.RedisBroker.history>`)."""
        settings = self._settings
        keys = settings.history_keys(topic)
        # With since, limit 0 still reads one entry, to tell whether the history reaches back.
        read_limit = limit if since is None or limit is None else max(limit, 1)
        read = self._reading(topic, history, since, read_limit)
        link = self._link
        if not link.running:

            async def run_once(client: Any) -> str:
                return await _read_pages(read, lambda args: client.eval(READ_SCRIPT, keys, args))

            outcome = await once(settings, self._stats, run_once, what="read history from")
            return self._page(topic, read, outcome, limit)
        pub = link.pub
        if pub is None or link.state != "connected":
            raise ConnectionError(f"not connected to Redis at {settings.safe_url}")
        try:
            outcome = await _read_pages(
                read, lambda args: evalsha(pub, READ_SHA, keys, args, settings.timeout)
            )
        except Exception as exc:
            if is_unexpected(exc):
                raise
            raise ConnectionError(
                f"could not read history from Redis at {settings.safe_url}: {describe(exc)}"
            ) from exc
        return self._page(topic, read, outcome, limit)

    def _reading(
        self,
        topic: str,
        history: History,
        since: Position | None,
        limit: int | None,
        cap: int | None = None,
    ) -> HistoryRead:
        settings = self._settings
        return HistoryRead(
            settings.channel(topic),
            history,
            since,
            limit,
            secret=settings.secret,
            max_message_size=settings.max_message_size,
            cap=cap,
        )

    def _page(self, topic: str, read: HistoryRead, outcome: str, limit: int | None) -> HistoryPage:
        """The :class:`HistoryPage` of a read: no publications and ``recovered=False``
        unless every entry passed its checks (better no history than a wrong one)."""
        if outcome == "none" or read.epoch is None:
            return HistoryPage(topic, Position(new_epoch(), 0), (), recovered=False)
        epoch = read.epoch
        position = Position(epoch, read.last)
        if outcome != "done":
            self._count_failure(topic, read)
            return HistoryPage(topic, position, (), recovered=False)
        publications = tuple(
            Publication(Position(epoch, offset), payload)
            for offset, payload in read.publications()
        )
        return HistoryPage(topic, position, publications[:limit], recovered=True)

    def _count_failure(self, topic: str, read: HistoryRead) -> None:
        problem = read.problem
        if problem is None:
            return
        setattr(self._stats, problem, getattr(self._stats, problem) + 1)
        logger.warning(
            "redis broker: the history of %r failed its checks (%s); nothing sent from it",
            topic,
            problem,
        )


async def _read_pages(
    read: HistoryRead, run: Callable[[tuple[bytes, ...]], Awaitable[Any]]
) -> str:
    """Read until ``read`` has all it asked for (each reply bounded)."""
    while True:
        outcome = read.take(await run(read.args()))
        if outcome != "more":
            return outcome
