"""The Redis channels a :class:`~trio_wsroutes.RedisBroker` process is subscribed to: the
``SUBSCRIBE`` and ``UNSUBSCRIBE`` it sends on its subscription connection, and the
acknowledgements it waits for."""

from __future__ import annotations

from collections import deque
from typing import Final

import trio

from ._common import Link, Settings

__all__ = ["Channels"]

_SUBSCRIBE_CHUNK: Final = 1000
"""Channels one ``SUBSCRIBE`` names, at most (a resubscription names them all)."""


class Channels:
    """Which channels the subscription connection is subscribed to (or is subscribing
    to), which topic each carries, and who waits for Redis to acknowledge one.

    A channel is subscribed while its topic has a local subscriber or one recovering;
    a new session subscribes them all again (see ``_session.py``)."""

    __slots__ = ("_link", "_settings", "_waiters", "subscribed", "topics")

    def __init__(self, settings: Settings, link: Link) -> None:
        self._settings = settings
        self._link = link
        self.subscribed: set[bytes] = set()
        """Channels subscribed on the current connection (acknowledged or not)."""
        self.topics: dict[bytes, str] = {}
        """The topic of each channel this process wants messages from."""
        self._waiters: dict[bytes, deque[trio.Event]] = {}

    def subscribe(self, topics: list[str]) -> list[trio.Event]:
        """Send ``SUBSCRIBE`` for the channels of ``topics``; the events are set when
        Redis acknowledges each (or when the session ends)."""
        sub = self._link.sub
        events: list[trio.Event] = []
        if sub is None or not topics:
            return events
        channels: list[bytes] = []
        for topic in topics:
            channel = self._settings.channel(topic)
            self.topics[channel] = topic
            self.subscribed.add(channel)
            event = trio.Event()
            self._waiters.setdefault(channel, deque()).append(event)
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

    def subscribe_control(self) -> list[trio.Event]:
        """Send ``SUBSCRIBE`` for the control channel; the event is set when Redis
        acknowledges it (or when the session ends)."""
        sub = self._link.sub
        if sub is None:
            return []
        channel = self._settings.control_channel
        self.subscribed.add(channel)
        event = trio.Event()
        self._waiters.setdefault(channel, deque()).append(event)
        try:
            sub.send_command(b"SUBSCRIBE", channel)
        except Exception:
            event.set()  # the connection is failing: the next session subscribes again
        return [event]

    async def join(self, topic: str) -> bool:
        """Make sure this process is subscribed to ``topic``'s channel and wait (at most
        ``timeout``) until Redis has acknowledged it, so that what other processes
        publish from then on arrives; whether that is known."""
        sub = self._link.sub
        if sub is None:
            await trio.lowlevel.checkpoint()
            return False
        channel = self._settings.channel(topic)
        if channel not in self.subscribed:
            self.subscribe([topic])
        waiters = self._waiters.get(channel)
        if waiters:
            event = waiters[-1]
            with trio.move_on_after(self._settings.timeout):
                await event.wait()
            if not event.is_set():
                return False
        else:
            await trio.lowlevel.checkpoint()
        # A session that ended sets the events too: check it is still the same one.
        return self._link.sub is sub and channel in self.subscribed

    def acknowledged(self, channel: bytes) -> None:
        """Redis acknowledged a ``SUBSCRIBE`` of ``channel``."""
        waiters = self._waiters.get(channel)
        if waiters:
            waiters.popleft().set()
            if not waiters:
                del self._waiters[channel]

    def leave(self, topic: str) -> None:
        """Nobody here needs ``topic`` any more: ``UNSUBSCRIBE`` from its channel."""
        channel = self._settings.channel(topic)
        self.topics.pop(channel, None)
        sub = self._link.sub
        if sub is not None and channel in self.subscribed:
            self.subscribed.discard(channel)
            try:
                sub.send_command(b"UNSUBSCRIBE", channel)
            except Exception:
                pass  # the connection is failing; the next one subscribes only what is needed

    def unreachable(self, channel: bytes) -> None:
        """On a cluster: ``channel``'s master is down, so it is not subscribed (whoever
        waits for it stops waiting; the master's next connection subscribes it)."""
        self.subscribed.discard(channel)
        for event in self._waiters.pop(channel, ()):
            event.set()

    def reset(self) -> None:
        """The session ended: nothing is subscribed, nobody waits any more."""
        self.subscribed.clear()
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
        self._waiters.clear()
