"""No silent gap on a live subscription: the last position this process fanned out on each
topic with history, a jump in it, and the check after a reconnection of what was
published meanwhile (see :class:`~trio_wsroutes.RedisBroker`, "Failures").

A gap, seen either way, ends the local subscribers of the topic that can resume (a
connection closes with 1012: its client reconnects with its position and recovers what
it missed from the history, or hears ``recovered=False``) rather than let them go on past
it without a word.
"""

from __future__ import annotations

from typing import Final

import trio

from ..._history import Position
from .._base import LossAware
from .._topics import TopicTable
from ._common import RedisBrokerStats, Settings, logger
from ._recovery import Recoveries

__all__ = ["Continuity"]

_POLL: Final = 0.02
"""Seconds between looks at whether publications on their way have filled a gap."""


class Continuity:
    """The last position delivered per topic with history that has local subscribers
    (forgotten with the topic's channel), and what to do on a gap."""

    def __init__(
        self,
        settings: Settings,
        stats: RedisBrokerStats,
        table: TopicTable,
        recoveries: Recoveries,
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._table = table
        self._recoveries = recoveries
        self.last: dict[str, tuple[str, int]] = {}
        """Topic -> (epoch, offset) of the last publication fanned out here."""

    def see(self, topic: str, epoch: str, offset: int) -> None:
        """A publication with a position is about to be fanned out: one that does not
        follow the last (a later offset, or another epoch) means those in between were
        lost on the way; an earlier one changes nothing (a replay, or one a recovered
        subscriber is skipped for)."""
        if topic not in self._table:
            # Only recovering subscribers: they read the stream up to what they get live.
            # Tracking starts again with the first live one.
            if self.last:
                self.last.pop(topic, None)
            return
        last = self.last.get(topic)
        if last is not None:
            if last[0] == epoch:
                if offset <= last[1]:
                    return
                if offset != last[1] + 1:
                    self.lost(topic, f"offsets {last[1] + 1} to {offset - 1}")
            else:
                self.lost(topic, "another epoch")
        if topic in self._table:  # not if every subscriber resumes
            self.last[topic] = (epoch, offset)

    def forget(self, topic: str) -> None:
        """Nobody here listens on ``topic`` any more."""
        self.last.pop(topic, None)

    def lost(self, topic: str, what: str) -> None:
        """Publications on ``topic`` never reached this process: end its local subscribers
        that can resume (the others get what comes next, past the gap)."""
        table = self._table
        ended = 0
        for subscriber in table.subscribers(topic):
            if isinstance(subscriber, LossAware):
                subscriber.lost_publications(topic)
                table.discard(topic, subscriber)  # may forget the topic: last of its own
                table.discard_all(subscriber)
                ended += 1
        if not ended:
            logger.debug(
                "redis broker: publications on %r were lost on their way (%s)", topic, what
            )
            return
        self._stats.history_resumes += ended
        logger.warning(
            "redis broker: publications on %r were lost on their way (%s); %d local "
            "subscribers resume from their positions",
            topic,
            what,
            ended,
        )

    async def check(self) -> None:
        """After a reconnection: what was published on each topic while this process was
        cut off. A topic whose last position in Redis is past the last one delivered
        here, once what is on its way from the channel has arrived (within ``timeout``),
        or whose history is gone, lost publications."""
        settings = self._settings
        behind: dict[str, Position] = {}
        for topic, (epoch, offset) in list(self.last.items()):
            history = settings.history_for(topic)
            if history is None or topic not in self._table:
                continue
            try:
                page = await self._recoveries.read(topic, history, Position(epoch, offset), 0)
            except ConnectionError:
                return  # cut off again: the next session checks
            latest = page.position
            if not page.recovered:
                if self.last.get(topic) == (epoch, offset):  # nothing came since
                    self.lost(topic, "the history is gone or no longer reaches back")
            elif latest.offset > offset:
                behind[topic] = latest
        with trio.move_on_after(settings.timeout):
            while behind:
                for topic, latest in list(behind.items()):
                    last = self.last.get(topic)
                    if last is None or last[0] != latest.epoch or last[1] >= latest.offset:
                        del behind[topic]  # caught up, or a gap seen on the way
                if behind:
                    await trio.sleep(_POLL)
        for topic, latest in behind.items():
            last = self.last.get(topic)
            if last is not None and last[0] == latest.epoch and last[1] < latest.offset:
                self.lost(topic, f"offsets {last[1] + 1} to {latest.offset}")
