"""Positions a signing :class:`~trio_wsroutes.RedisBroker` keeps per topic: the ones it
proposes for its publications (:class:`Proposals`) and the last one it delivered
(:class:`ReplayGuard`). Both are bounded LRUs: nothing here grows with the number of
topics a deployment ever used."""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from ..._history import History, new_epoch, position_tail
from ._scripts import PUBLISH_SHA, publish_args
from ._wire import HISTORY_HEADER, sign_extensions, sign_position

__all__ = ["MAX_TOPICS", "Pending", "Proposals", "ReplayGuard"]

MAX_TOPICS: Final = 100_000
"""Topics each of these remembers, the least recently used forgotten first."""
_RETIRED_EPOCHS: Final = 3


class Pending:
    """A publication on a topic with history, from a broker with a secret, waiting for
    its turn to be sent: its position is proposed (and signed) only then. ``head`` is
    ``None`` for a frame sent without a position (``command`` is its ``PUBLISH``): it is
    held in order behind the topic's proposals. ``extensions``: the wire format's
    extension fields, as of the publish."""

    __slots__ = (
        "channel",
        "command",
        "extensions",
        "first",
        "head",
        "history",
        "keys",
        "origin",
        "seq",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        channel: bytes,
        keys: tuple[bytes, bytes],
        history: History,
        origin: bytes,
        seq: int,
        head: bytes | None,
        command: tuple[bytes, ...] = (),
        extensions: bytes = b"",
    ) -> None:
        self.topic = topic
        self.channel = channel
        self.keys = keys
        self.history = history
        self.origin = origin
        self.seq = seq
        self.head = head
        self.command = command
        self.extensions = extensions
        self.first: float | None = None
        """When it was first proposed (Trio's clock)."""


class Proposals:
    """The position a publisher proposes next on each topic.

    The base of a topic is the last position this publisher knows it has: from its own
    publications (assumed committed while they are in flight, each one also expecting
    the one before it to be the last committed), from a refusal (which tells the
    current one), or from the channel. A topic without one proposes offset 1 of a fresh
    epoch, which commits only if the topic has no history in Redis.
    """

    def __init__(self, secret: bytes, turn_ms: int, max_topics: int = MAX_TOPICS) -> None:
        self._secret = secret
        self._turn_ms = turn_ms
        self._max_topics = max_topics
        self._bases: OrderedDict[str, tuple[str, int, bytes]] = OrderedDict()
        self.busy: set[str] = set()
        """Topics with a proposal in flight (their base is not learnt from the channel)."""

    def __len__(self) -> int:
        return len(self._bases)

    def command(self, pending: Pending, log_ttl_ms: int, meta_ttl_ms: int) -> tuple[bytes, ...]:
        """The ``EVALSHA`` that commits ``pending`` at the next position, signed."""
        head = pending.head
        assert head is not None
        topic = pending.topic
        base = self._bases.pop(topic, None)
        if base is None:
            epoch, offset, fresh, expected = new_epoch(), 1, True, b""
        else:
            epoch, offset, fresh, expected = base[0], base[1] + 1, False, base[2]
        origin, seq = pending.origin, pending.seq
        committer = b"%s %d" % (origin, seq)
        epoch_bytes = epoch.encode()
        payload = head + position_tail(offset, b'"%s"' % epoch_bytes)
        signature = sign_position(
            self._secret, pending.channel, origin, seq, epoch_bytes, offset, payload
        )
        extensions = pending.extensions
        if extensions:
            mac = sign_extensions(self._secret, signature, extensions)
            extensions = b" %s x=%s" % (extensions, mac)
        header = b"%s%s %d %s%s %d %s\n" % (
            HISTORY_HEADER,
            origin,
            seq,
            signature,
            extensions,
            offset,
            epoch_bytes,
        )
        self._put(topic, (epoch, offset, committer))
        self.busy.add(topic)
        args = publish_args(
            pending.history,
            log_ttl_ms=log_ttl_ms,
            meta_ttl_ms=meta_ttl_ms,
            channel=pending.channel,
            header=header,
            payload=payload,
            signed=b"%s %s" % (committer, signature),
            proposal=(epoch_bytes, offset, fresh, expected, committer),
            turn_ms=self._turn_ms,
        )
        return (b"EVALSHA", PUBLISH_SHA, b"2", *pending.keys, *args)

    def refused(self, topic: str, epoch: str, last: int) -> None:
        """Redis refused a proposal on ``topic``: it stands at ``(epoch, last)`` (an empty
        epoch: it has no history)."""
        if epoch:
            self._put(topic, (epoch, last, b""))
        else:
            self._bases.pop(topic, None)

    def learn(self, topic: str, epoch: str, offset: int) -> None:
        """A publication at ``(epoch, offset)`` went by on ``topic``'s channel."""
        if topic in self.busy:
            return
        base = self._bases.get(topic)
        if base is None or (base[0] == epoch and offset > base[1]):
            self._put(topic, (epoch, offset, b""))

    def forget(self, topic: str) -> None:
        """Drop what is known of ``topic`` (its next proposal starts afresh)."""
        self._bases.pop(topic, None)

    def _put(self, topic: str, base: tuple[str, int, bytes]) -> None:
        bases = self._bases
        bases[topic] = base
        bases.move_to_end(topic)
        if len(bases) > self._max_topics:
            bases.popitem(last=False)


class ReplayGuard:
    """The last position delivered from the channel per topic, kept after the topic's
    last local subscriber leaves (a bounded LRU), and the few epochs each topic left
    behind: with a secret, a signed publication at or before it is a replay."""

    def __init__(self, max_topics: int = MAX_TOPICS) -> None:
        self._max_topics = max_topics
        self._last: OrderedDict[str, tuple[str, int, tuple[str, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def fresh(self, topic: str, epoch: str, offset: int) -> bool:
        """Whether a publication at ``(epoch, offset)`` on ``topic`` comes after every one
        delivered (then it is the last one), or is a replay."""
        entries = self._last
        known = entries.get(topic)
        if known is None:
            entries[topic] = (epoch, offset, ())
            if len(entries) > self._max_topics:
                entries.popitem(last=False)
            return True
        known_epoch, known_offset, retired = known
        if epoch == known_epoch:
            if offset <= known_offset:
                return False
            entries[topic] = (epoch, offset, retired)
        elif epoch in retired:
            return False  # a topic never goes back to an epoch it left
        else:
            entries[topic] = (epoch, offset, (known_epoch, *retired)[:_RETIRED_EPOCHS])
        entries.move_to_end(topic)
        return True
