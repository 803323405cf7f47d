"""``RedisBroker``: topics shared by every process and host through Redis pub/sub.

::

    server = WebSocketServer([chat], broker=RedisBroker("redis://127.0.0.1:6379/0"))

Each process keeps its own subscribers in a :class:`~trio_wsroutes.MemoryBroker` core and
holds two Redis connections: one subscribed to the channels of the topics that have a
local subscriber, one that publishes. A publish is delivered to local subscribers at once
(encoded once, slow-consumer policy) and queued for Redis; every other process receives it
from Redis and fans it out to its own subscribers. Delivery across processes is at most
once: nothing is retried, a gap is counted, nothing is duplicated.

Wire format of a message on the Redis channel ``<channel_prefix><topic>``::

    wsr1 <kind> <origin> <seq>[ <signature>]\n<payload>

    wsr1 h <origin> <seq>[ <signature>] <offset> <epoch>\n<payload>

``kind`` is ``t`` (a WebSocket text frame; ``payload`` is UTF-8), ``b`` (binary) or ``h``
(a text frame with a history position, ``offset`` and ``epoch``, already spliced into the
payload); ``origin`` identifies the publishing broker (``<pid>-<hex>``, or ``-`` for none);
``seq`` numbers the origin's messages on that topic from 1 (``0`` for none). ``payload``
is the frame exactly as it goes to WebSocket clients. With a ``secret``, ``signature`` is
the hex HMAC-SHA256 of the kind, the channel, the origin, the seq and the payload, and
for ``h`` also of the epoch and the offset (the payload carries them too); a message
without a valid one is dropped. (Version 0.2 signed ``h`` messages without their
position: a 0.2 process and this one, sharing a secret, drop each other's history
publications, so upgrade the processes of a deployment with history together.) A message
that does not start with ``wsr1 `` is delivered as a text frame when there is no secret,
so ``PUBLISH wsroutes:room:1 '{"type":"message",...}'`` works from any Redis client.
Every field is parsed strictly, and a message over ``max_message_size`` is dropped before
it is decoded; what is dropped is counted in :class:`RedisBrokerStats` and never reaches
a client or the sequence tracking.

History (topics matched by the history policy) lives in Redis, two keys per topic::

    <channel_prefix>h:{<topic>}:m   a hash: e (the epoch), o (the last offset), b (the
                                    bytes kept); with a secret, c (the ``<origin> <seq>``
                                    of the publication at o) and w (whose turn it is)
    <channel_prefix>h:{<topic>}:l   a stream of the kept publications, entry id <offset>-0,
                                    fields t (Redis time, ms), p (the payload) and s
                                    (``<origin> <seq> <signature>``, with a secret)

Only a publication creates them. One Lua script per publication numbers it, adds it to
the stream (trimming the oldest entries to ``size`` entries and ``max_bytes`` bytes; one
larger than ``max_bytes`` empties the stream instead), refreshes both keys' expiry and
``PUBLISH``-es it, atomically: offsets, the stream and the channel have one order for
every process. Without a secret Redis gives it the next offset; with one, the publisher
proposes the position it signed and the script commits it only if it is the next one
(see :class:`RedisBroker`). History needs Redis 6.2 or later.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import random
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, cast
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from .._history import (
    NOT_RECOVERED,
    History,
    HistoryPage,
    HistoryPolicy,
    Position,
    Publication,
    Recovery,
    adopt_policy,
    envelope_head,
    new_epoch,
    topic_json,
)
from .._messages import Frame, encode_message
from ._base import Subscriber
from ._redis_positions import MAX_TOPICS, Pending, Proposals, ReplayGuard
from ._redis_scripts import (
    PUBLISH_SCRIPT,
    PUBLISH_SHA,
    READ_SCRIPT,
    READ_SHA,
    SCRIPTS,
    HistoryRead,
    publish_args,
)
from ._redis_wire import HISTORY_HEADER, MAX_HEADER, WireMessage, decode_wire, encode_wire, sign
from ._redis_wire import authentic as _authentic
from .memory import MemoryBroker

if TYPE_CHECKING:
    from coredis.connection import BaseConnection

__all__ = [
    "RedisBroker",
    "RedisBrokerStats",
    "WireMessage",
    "decode_wire",
    "encode_wire",
    "sign",
]

logger = logging.getLogger("trio_wsroutes.redis")

MiB: Final = 1024 * 1024

_FAN_OUT_SLICE: Final = 0.005
"""Seconds of local fan-out between two yields to the scheduler."""
_PUBLISH_BATCH: Final = 256
_SUBSCRIBE_CHUNK: Final = 1000
_MAX_TOPIC_COUNTERS: Final = MAX_TOPICS
_TURN: Final = 0.1
"""Seconds a publisher refused for its position (with a secret) has the topic to itself."""
_MAX_SKIPPED: Final = 4 * _PUBLISH_BATCH
"""Publications on held topics one batch looks past for others to send."""
_MAX_ORIGINS_PER_TOPIC: Final = 64
_RECOVERY_ROUNDS: Final = 3
"""Reads of a topic's history one recovery may take when its live buffer overflows."""
_REPLAY_WINDOW: Final = 16
"""Without a secret, a sequence number at most this far behind its origin's last one is a
duplicate; one further behind restarts the origin's tracking (the last one was forged)."""
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * MiB
"""``max_message_size`` until the server gives its ``max_payload_length``."""

State = Literal["stopped", "connecting", "connected", "disconnected"]


# -- counters ------------------------------------------------------------------------------


@attrs.define
class RedisBrokerStats:
    """Running totals of one :class:`RedisBroker` (``broker.stats``), since it was created.

    Delivery between processes is at most once. What did not arrive is counted here:
    ``publish_lost`` on the publishing side, ``missed`` and ``receive_dropped`` on the
    receiving side. ``duplicates`` stays 0 unless something replays messages into Redis.
    """

    connects: int = 0
    """Successful connections to Redis (the first and every reconnection)."""
    disconnects: int = 0
    """Connections lost after they were up (Redis restarted or went away, the network
    failed, a health check timed out, Redis closed a subscriber over its
    ``client-output-buffer-limit pubsub``)."""
    published: int = 0
    """Messages handed to Redis and acknowledged."""
    publish_lost: int = 0
    """Messages not carried to other processes: published while disconnected, over the
    outbound queue's limit, or unacknowledged when the connection failed."""
    received: int = 0
    """Messages received from other processes."""
    receive_dropped: int = 0
    """Received messages dropped because the local fan-out queue was full."""
    missed: int = 0
    """Messages other processes published on a subscribed topic that never arrived
    (gaps in their sequence numbers)."""
    duplicates: int = 0
    """Received messages dropped as repeats of one already delivered (with a ``secret``,
    also a publication with a position at or before the last one delivered on its
    topic: a replay)."""
    malformed: int = 0
    """Received messages dropped: not in the wire format (each field is parsed strictly),
    and history entries that are not either (or do not carry the position they are
    stored at)."""
    oversized: int = 0
    """Received messages (and history entries) dropped: over ``max_message_size`` (history
    entries are refused inside Redis, before they are sent to this process), or a
    history read adding up to more than the topic's ``max_bytes``."""
    unauthenticated: int = 0
    """With a ``secret``: received messages (and history entries) dropped for want of a
    valid signature (forged, altered, moved to another topic, or from a process without
    the secret)."""
    sequence_resets: int = 0
    """Without a ``secret``: received messages whose sequence number was far behind their
    origin's last one. They are delivered and the origin's tracking restarts from them:
    the last one was forged (or replayed), and must not make the origin's next messages
    look like duplicates."""
    inbound_queue_peak_bytes: int = 0
    """The most payload bytes ever waiting for local fan-out at once."""
    recoveries: int = 0
    """Subscribes with a position that recovered (every publication after it sent)."""
    recovered_messages: int = 0
    """Publications sent from the history by those recoveries."""
    recoveries_failed: int = 0
    """Subscribes with a position on a topic with history that could not recover: another
    epoch, history not reaching back, no history at all, more to send than the policy's
    ``max_recovery`` (also counted below), entries that failed their checks, Redis
    unreachable, or the live buffer overflowing on every read."""
    recoveries_capped: int = 0
    """Of those, the ones with more publications to send than the policy's
    ``max_recovery``: refused before anything was read."""
    history_gaps: int = 0
    """History reads whose entries were not one contiguous run of offsets up to the last
    one (an entry deleted, duplicated or moved in Redis): nothing from them was sent."""
    publish_conflicts: int = 0
    """With a ``secret``: publications on topics with history proposed again because
    their position was taken first (another process published on the topic, or the
    history was lost in Redis)."""


# -- the broker ----------------------------------------------------------------------------


class _LocalTopics(MemoryBroker):
    """The in-process core, telling the Redis side when a topic loses its last subscriber
    (also when a slow consumer is evicted during a fan-out)."""

    def __init__(self, on_empty: Callable[[str], None]) -> None:
        super().__init__()
        self._on_empty = on_empty

    def discard(self, topic: str, subscriber: Subscriber) -> bool:
        emptied = super().discard(topic, subscriber)
        if emptied:
            self._on_empty(topic)
        return emptied

    def discard_all(self, subscriber: Subscriber) -> list[str]:
        emptied = super().discard_all(subscriber)
        for topic in emptied:
            self._on_empty(topic)
        return emptied

    def active_topics(self) -> list[str]:
        return list(self._topics)

    def fan_out_skipping(
        self, topic: str, frame: Frame, exclude: Subscriber | None, skip: list[Subscriber]
    ) -> None:
        """:meth:`fan_out` but also to none of ``skip`` (rare: off the fast path)."""
        subscribers = self._topics.get(topic)
        if not subscribers:
            return
        gone = [
            subscriber
            for subscriber in subscribers
            if subscriber is not exclude
            and subscriber not in skip
            and not subscriber.deliver(frame)
        ]
        for subscriber in gone:
            self.discard_all(subscriber)


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


class _ConnectionLost(Exception):
    pass


class RedisBroker:
    """A topic broker shared by processes and hosts through Redis pub/sub (coredis).

    ::

        broker = RedisBroker(os.environ["REDIS_URL"])
        server = WebSocketServer([chat], broker=broker)

    Give each server its own instance; the server runs it during its lifespan (before the
    ``on_startup`` hooks, until after the ``on_shutdown`` hooks). Outside a server, use
    ``async with RedisBroker(url) as broker:`` to keep it connected, or publish once with
    ``await RedisBroker(url).publish(topic, msg)``.

    Delivery to the local subscribers of a publish is immediate; other processes get it
    through Redis, at most once, in publish order per publisher. While Redis is
    unreachable the broker keeps serving local subscribers, reconnects with capped
    exponential backoff and jitter, resubscribes, and counts what was lost in
    :attr:`stats`. :meth:`subscriber_count` is local to this process.

    Options:

    * ``url``: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or
      ``unix:///path/to/socket``.
    * ``channel_prefix``: Redis channel of topic ``t`` is ``channel_prefix + t``.
    * ``max_queued_messages`` / ``max_queued_bytes``: the bound of each of the two queues,
      messages waiting for Redis and messages from Redis waiting for local fan-out. A
      message over the bound is dropped and counted (``publish_lost``,
      ``receive_dropped``), so a slow Redis or a busy process cannot grow memory without
      bound.
    * ``reconnect_delay`` / ``max_reconnect_delay``: backoff between connection attempts,
      doubling from the first to the second, each randomised to 50-100 %.
    * ``timeout``: seconds for connecting, for Redis to acknowledge a command, and for
      ``async with`` to flush queued publishes at exit.
    * ``health_check_interval``: seconds without traffic before the subscription
      connection is checked with a ``PING``.
    * ``history``: the history policy (as the server's ``history`` option), for a broker
      used without a server, such as a publisher-only handle; a server passes its own
      with :meth:`configure_history`. Every process publishing to a topic with history
      needs the same policy.
    * ``history_meta_ttl``: seconds a topic's epoch and last offset outlive its last
      publication (30 days), so that a client that saw the last publication recovers
      with nothing missed even after its ``ttl``; the kept publications expire after
      ``ttl`` of inactivity (this, without ``ttl``).
    * ``max_recovery_buffer``: live publications held, all recoveries together, while
      subscribers recover (below).
    * ``secret``: a key shared by every process of the deployment (``bytes`` or ``str``,
      at least 16 bytes; from the environment, never from code). Each message is signed
      with HMAC-SHA256 over its kind, channel, origin, sequence number and payload, and a
      publication with a history position (and each history entry) over its epoch and
      offset too; a message or history entry without a valid signature is
      dropped and counted (``stats.unauthenticated``), and plain messages from other
      Redis clients are no longer delivered. Without it, anyone who can ``PUBLISH`` on
      this Redis can send any frame to your clients: use it unless Redis is reachable by
      this deployment alone.
    * ``max_message_size``: the largest payload, in bytes, taken from Redis (a message or
      a history entry); larger ones are dropped before they are decoded and counted
      (``stats.oversized``). Default: the server's ``max_payload_length`` (16 MiB).

    **What comes from Redis is checked.** Every header field is parsed strictly (a
    malformed message is dropped and counted in ``stats.malformed``), sizes are checked,
    and with a ``secret`` signatures. Nothing dropped is delivered or touches the sequence
    tracking. The tracking itself depends on the secret: with one, sequence numbers are
    authentic, so one at or below its origin's last is a duplicate (a replay); without
    one, a forged message could otherwise claim a huge number and make every later
    message of that origin look like a duplicate, so a number at most 16 behind the
    last is a duplicate and one further behind is believed, restarting the origin's
    tracking (``stats.sequence_resets``). With a secret, a publication with a position
    at or before the last one this process delivered on its topic is a replay, dropped
    (``stats.duplicates``); that last position outlives the topic's local subscribers,
    for the 100 000 topics most recently delivered on, as do the last three epochs a
    topic left. What this cannot tell: a replay of a publication this process never
    delivered (published while it had no subscriber on the topic, was disconnected, or
    past those 100 000 topics) is delivered once, unchanged, at its real position,
    which clients see as an offset at or before one they had. A secret does not hide
    messages (Redis sees them) and does not stop the replay of a message without a
    position whose origin this process no longer tracks (after its topic lost every
    local subscriber, or 64 other origins since).

    **History.** A text publication on a topic with history goes to Redis only: one Lua
    script gives it the next offset, adds it to the topic's stream (at most ``size``
    entries and ``max_bytes`` bytes, the oldest dropped first; a larger one is published
    but empties the stream), and publishes it with its position on the topic's channel,
    from which *every* process, this one too, delivers it to its subscribers. So all
    subscribers see one order, and a publication reaches this process's subscribers
    after a round trip to Redis (binary frames on such topics take the same way,
    unnumbered). While Redis is unreachable, publications on such topics are delivered
    to this process's subscribers at once without a position, and neither kept nor
    numbered. Only publications create a topic's keys: reading creates nothing.

    With a ``secret`` the signature covers the position, so the publisher must know it
    before Redis commits it: it *proposes* the next position after the last one it knows
    on the topic (from its own publications, its refusals and the channel; a fresh epoch
    at offset 1 for a topic it knows nothing of), signs it, and the script commits only
    if the topic's last position is indeed the one before (a fresh epoch only if the
    topic has none). Publications are pipelined, so each one also names the publication
    it expects to be the last committed (its predecessor from this publisher): when one
    is refused, every later one on that topic in the same pipeline is refused too, and
    all are proposed again, in order, from the position the refusal reported. A
    publisher refused for its position gets the next turn on the topic: 0.1 s during
    which only its proposals commit, while the others' are refused and held back for
    the rest of it (their other topics go on), so that one publisher keeping its
    pipeline full cannot starve another. The trade-off: a topic with one publishing
    process costs nothing more (one refusal when a process first publishes on a topic
    that exists); several processes publishing on one topic at once take turns, which
    costs retries (``stats.publish_conflicts``), throughput (two processes hammering one
    topic together published about 60 % as fast as one alone) and up to 0.1 s of
    latency; a publication not committed within ``timeout`` is counted lost. A frame
    without a position on such a topic waits behind the topic's proposals in flight so
    as not to overtake them; publications on different topics may be reordered by a
    refusal. Without a secret, Redis assigns positions (nothing to sign) and none of this happens.

    A subscribe with a position (``since``) recovers from Redis, so a client recovers on
    any process or host: the subscriber first collects live publications in a buffer,
    the topic's channel subscription is confirmed, *then* the stream is read after the
    position; the subscriber gets what was read, then the buffered publications with a
    greater offset (dropping those read already), then goes live, with no await in
    between. Every publication is in the stream, on the channel after the confirmation,
    or both; hence no gap and no duplicate. The read is checked: in Redis, no more than
    the policy's ``max_recovery`` publications (else nothing is read:
    ``stats.recoveries_capped``) and no entry over ``max_message_size``; here, every
    offset from ``since`` to the last one exactly once (``stats.history_gaps``), each
    entry's size, position and signature, and no more than the topic's ``max_bytes`` in
    all. It comes in replies of at most 4 MiB of payloads (one larger entry alone). The
    buffers of all recoveries together hold at most ``max_recovery_buffer``
    publications (references to frames received once); a buffer that overflows is
    emptied and the stream read on from where the last read ended, at most three times,
    after which the subscribe gives up: ``Recovery(False, 0)``, nothing old sent, live
    from then on. A Redis restart without persistence loses the epoch, so the next
    publication starts a new one and old positions no longer recover.

    Redis memory: each topic with history holds at most ``size`` publications and
    ``max_bytes`` bytes of them, and its keys expire after ``ttl`` (publications) and
    ``history_meta_ttl`` (epoch and offset) without publications. Under ``maxmemory``
    with a ``volatile-*`` eviction policy Redis may evict them sooner; a lost epoch key
    starts a new epoch, a lost stream makes recovery fail, never deliver wrong data.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        channel_prefix: str = "wsroutes:",
        max_queued_messages: int = 10_000,
        max_queued_bytes: int = 16 * MiB,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        timeout: float = 5.0,
        health_check_interval: float = 10.0,
        history: HistoryPolicy | Mapping[str, History] | None = None,
        history_meta_ttl: float = 30 * 86400.0,
        max_recovery_buffer: int = 10_000,
        secret: bytes | str | None = None,
        max_message_size: int | None = None,
    ) -> None:
        if importlib.util.find_spec("coredis") is None:
            raise ImportError(
                "RedisBroker needs coredis: pip install 'trio-wsroutes[redis]'", name="coredis"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {url!r}")
        if max_queued_messages < 1 or max_queued_bytes < 1 or max_recovery_buffer < 1:
            raise ValueError("queue limits must be positive")
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ValueError("need 0 < reconnect_delay <= max_reconnect_delay")
        if timeout <= 0 or health_check_interval <= 0 or not history_meta_ttl > 0:
            raise ValueError("timeouts must be positive")
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes (32 random bytes are best)")
        if max_message_size is not None and (
            type(max_message_size) is not int or max_message_size < 1
        ):
            raise ValueError("max_message_size must be a positive integer")
        self._url = url
        self._safe_url = _without_password(parts)
        self._prefix = channel_prefix
        self._max_messages = max_queued_messages
        self._max_bytes = max_queued_bytes
        self._base_delay = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._timeout = timeout
        self._health_interval = health_check_interval
        self._secret: bytes | None = secret
        self._size_given = max_message_size is not None
        self._max_message_size: int = max_message_size or DEFAULT_MAX_MESSAGE_SIZE

        self.stats: RedisBrokerStats = RedisBrokerStats()
        """Counters: connections, messages published, received, lost, missed."""
        self._local = _LocalTopics(self._release)
        self._state: State = "stopped"
        self._running = False
        self._background: AbstractAsyncContextManager[None] | None = None
        self._pool: Any = None

        # Publishing side: origin id, per-topic sequence numbers, the queue to Redis.
        self._origin = _new_origin()
        self._own_origins: deque[bytes] = deque([self._origin], maxlen=8)
        self._seq: dict[str, int] = {}
        # (command, size); with a secret, publications on topics with history wait as
        # Pending: their position is proposed when they are sent.
        self._outgoing: deque[tuple[tuple[bytes, ...] | Pending, int]] = deque()
        turn_ms = round(min(_TURN, timeout) * 1000)
        self._proposals = None if secret is None else Proposals(secret, turn_ms)
        # Topics another publisher has the turn on, until when (Trio's clock): their
        # publications wait, the others go by.
        self._held: dict[str, float] = {}
        self._outgoing_bytes = 0
        self._in_flight = 0
        self._outgoing_lot = trio.lowlevel.ParkingLot()
        self._sent_lot = trio.lowlevel.ParkingLot()
        self._send_overflowing = False

        # Receiving side: the connection, its channels, acks awaited, the fan-out queue.
        self._sub: BaseConnection | None = None
        self._redis_channels: set[bytes] = set()
        self._channel_topics: dict[bytes, str] = {}
        self._sub_waiters: dict[bytes, deque[trio.Event]] = {}
        self._seen: dict[str, OrderedDict[bytes, int]] = {}
        # With a secret: the last position delivered per topic, kept after its last local
        # subscriber leaves, so that a replayed publication is not delivered again.
        self._replays = None if secret is None else ReplayGuard()
        # (topic, frame, subscriber to skip, history offset or 0, history epoch)
        self._inbox: deque[tuple[str, Frame, Subscriber | None, int, str | None]] = deque()
        self._inbox_bytes = 0
        self._inbox_lot = trio.lowlevel.ParkingLot()
        self._receive_overflowing = False
        self._last_inbound = 0.0
        self._down_since: float | None = None
        self._lost_at_disconnect = 0

        # History: the policy, the publishing connection (for reads), the subscribers
        # recovering per topic and their buffered publications, and who to skip when
        # our own publications on history topics come back from Redis.
        self._policy: HistoryPolicy | None = None
        self._meta_ttl_ms = max(1, round(history_meta_ttl * 1000))
        self._pub: BaseConnection | None = None
        self._recovering: dict[str, dict[Subscriber, _Recovering]] = {}
        self._recovery_buffered = 0
        self._max_recovery_buffer = max_recovery_buffer
        # Recovered subscribers that may yet be handed, from the channel, publications
        # they got from the stream (received, not yet fanned out): skip offsets up to
        # (epoch, offset) until a later one comes.
        self._lagging: dict[str, dict[Subscriber, tuple[str, int]]] = {}
        self._excludes: dict[tuple[bytes, str, int], Subscriber] = {}
        self._script_error_logged = False
        policy = HistoryPolicy.coerce(history)
        if policy is not None:
            self.configure_history(policy)

    def __repr__(self) -> str:
        return f"<RedisBroker {self._safe_url} {self._state}>"

    # -- state -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Redis URL, password masked."""
        return self._safe_url

    @property
    def origin(self) -> str:
        """This broker's id in the ``origin`` field of the messages it publishes."""
        return self._origin.decode()

    @property
    def state(self) -> State:
        """``"stopped"`` (not running), ``"connecting"`` (first attempt), ``"connected"``
        or ``"disconnected"`` (reconnecting)."""
        return self._state

    @property
    def connected(self) -> bool:
        """``True`` while both Redis connections are up and every topic is subscribed."""
        return self._state == "connected"

    @property
    def inbound_queue_bytes(self) -> int:
        """Payload bytes received from Redis and not yet fanned out to local subscribers."""
        return self._inbox_bytes

    # -- the Broker protocol ---------------------------------------------------------------

    @property
    def history_policy(self) -> HistoryPolicy | None:
        """The history policy, or ``None`` when no topic keeps history."""
        return self._policy

    @property
    def max_message_size(self) -> int:
        """The largest payload taken from Redis, in bytes (larger ones are dropped)."""
        return self._max_message_size

    def configure_payload_limit(self, max_payload_length: int) -> None:
        """The server's ``max_payload_length``: the ``max_message_size`` of a broker
        created without one (the server calls it; an explicit option wins)."""
        if type(max_payload_length) is not int or max_payload_length < 1:
            raise ValueError("max_payload_length must be a positive integer")
        if not self._size_given:
            self._max_message_size = max_payload_length

    def configure_history(self, policy: HistoryPolicy) -> None:
        """Keep history in Redis for the topics ``policy`` matches (once; an equal
        policy again is a no-op, another one a :class:`RuntimeError`)."""
        self._policy = adopt_policy(self._policy, policy)

    async def subscribe(
        self, topic: str, subscriber: Subscriber, *, since: Position | None = None
    ) -> Recovery:
        """Add ``subscriber`` to ``topic``; the first local subscriber of a topic subscribes
        this process to its Redis channel.

        While connected, returns once Redis has acknowledged the subscription (at most
        ``timeout`` seconds), so that messages other processes publish afterwards arrive.
        With ``since`` on a topic with history, first delivers what ``subscriber``
        missed, read from Redis (see the class documentation); returns the
        :class:`~trio_wsroutes.Recovery`.
        """
        recovering = self._recovering.get(topic)
        if recovering is not None and subscriber in recovering:
            await trio.lowlevel.checkpoint()  # the recovery under way adds it
            return NOT_RECOVERED
        history = self._history_for(topic) if since is not None else None
        if since is None or history is None or self._local.is_subscribed(topic, subscriber):
            await self._subscribe_live(topic, subscriber)
            return NOT_RECOVERED
        if self._state != "connected":
            self.stats.recoveries_failed += 1
            await self._subscribe_live(topic, subscriber)
            return NOT_RECOVERED
        return await self._recover(topic, subscriber, since, history)

    async def _subscribe_live(self, topic: str, subscriber: Subscriber) -> None:
        self._local.add(topic, subscriber)
        channel = self._channel(topic)
        if self._sub is not None and channel not in self._redis_channels:
            self._send_subscribe([topic])
        waiters = self._sub_waiters.get(channel)
        if waiters:
            with trio.move_on_after(self._timeout):
                await waiters[-1].wait()
        else:
            await trio.lowlevel.checkpoint()

    async def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``topic``; after the last local subscriber leaves,
        this process unsubscribes from the Redis channel."""
        await trio.lowlevel.checkpoint()
        self._cancel_recovery(topic, subscriber)
        self._forget_lagging(topic, subscriber)
        self._local.discard(topic, subscriber)

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove every subscription of ``subscriber``."""
        for topic in [t for t, r in self._recovering.items() if subscriber in r]:
            self._cancel_recovery(topic, subscriber)
        for topic in [t for t, r in self._lagging.items() if subscriber in r]:
            self._forget_lagging(topic, subscriber)
        self._local.discard_all(subscriber)
        await trio.lowlevel.checkpoint()

    async def publish(
        self, topic: str, message: object, *, exclude: Subscriber | None = None
    ) -> int:
        """Publish ``message`` (a ``@message`` instance, or a :class:`Frame`) to every
        subscriber of ``topic`` in every process but ``exclude``.

        A message is encoded as ``server.publish`` does. On a running broker, local
        subscribers get it at once and it is queued for Redis: this never waits on Redis
        and never raises for a Redis fault (a message that cannot be carried is counted
        in ``stats.publish_lost``); it returns the local recipient count. On a broker that
        is not running (a publisher-only handle), it connects, publishes, disconnects and
        returns how many server processes Redis delivered it to; it raises
        :class:`ConnectionError` if Redis cannot be reached.

        On a topic with history, a running broker delivers to local subscribers too only
        when the publication comes back from Redis (see the class documentation); it
        returns how many local subscribers it will reach then.
        """
        frame = message if isinstance(message, Frame) else encode_message(message)
        await trio.lowlevel.checkpoint()
        history = self._history_for(topic)
        if history is not None:
            return await self._publish_history(topic, frame, history, exclude)
        delivered = self._local.fan_out(topic, frame, exclude=exclude)
        channel = self._channel(topic)
        payload = encode_wire(
            frame, self._origin, self._next_seq(topic), secret=self._secret, channel=channel
        )
        if self._running:
            self._enqueue((b"PUBLISH", channel, payload), len(payload))
            return delivered
        return int(await self._once(lambda client: client.publish(channel, payload)))

    async def _publish_history(
        self, topic: str, frame: Frame, history: History, exclude: Subscriber | None
    ) -> int:
        """Publish on a topic with history: through Redis to every process, this one
        included, so that all subscribers see Redis' order."""
        if self._running and self._state != "connected":
            # Redis holds the offsets: deliver here at once, without a position.
            self.stats.publish_lost += 1
            return self._local.fan_out(topic, frame, exclude=exclude)
        seq = self._next_seq(topic)  # first: it may start a new origin
        origin = self._origin
        channel = self._channel(topic)
        head = None if frame.binary else envelope_head(frame.payload, topic_json(topic))
        keys = self._history_keys(topic)
        item: tuple[bytes, ...] | Pending
        if head is None:
            # Binary, or not a JSON object: live only, unnumbered.
            payload = encode_wire(frame, origin, seq, secret=self._secret, channel=channel)
            if not self._running:
                return int(await self._once(lambda client: client.publish(channel, payload)))
            item = (b"PUBLISH", channel, payload)
            if self._proposals is not None:  # held in order behind the proposals
                item = Pending(topic, channel, keys, history, origin, seq, None, item)
            size = len(payload)
        elif self._proposals is not None:
            pending = Pending(topic, channel, keys, history, origin, seq, head)
            if not self._running:
                return int(await self._once(lambda client: self._propose_once(client, pending)))
            item, size = pending, len(head) + 200
        else:
            args = publish_args(
                history,
                log_ttl_ms=self._log_ttl_ms(history),
                meta_ttl_ms=self._meta_ttl_ms,
                channel=channel,
                header=b"%s%s %d " % (HISTORY_HEADER, origin, seq),
                payload=head,
            )
            if not self._running:
                reply = await self._once(lambda client: client.eval(PUBLISH_SCRIPT, keys, args))
                return int(cast("list[Any]", reply)[1])
            item = (b"EVALSHA", PUBLISH_SHA, b"2", *keys, *args)
            size = len(head) + 64
        if not self._enqueue(item, size):
            return 0
        if exclude is not None:
            excludes = self._excludes
            if len(excludes) >= self._max_messages:
                del excludes[next(iter(excludes))]  # bounded; the oldest is long gone
            excludes[(origin, topic, seq)] = exclude
        count = self._local.subscriber_count(topic)
        if exclude is not None and self._local.is_subscribed(topic, exclude):
            count -= 1
        return count

    async def _propose_once(self, client: Any, pending: Pending) -> int:
        """Commit ``pending`` through ``client``, proposing again while refused; how many
        processes it reached."""
        proposals = self._proposals
        assert proposals is not None
        try:
            with trio.move_on_after(self._timeout):
                while True:
                    command = proposals.command(
                        pending, self._log_ttl_ms(pending.history), self._meta_ttl_ms
                    )
                    reply = cast(
                        "list[Any]", await client.eval(PUBLISH_SCRIPT, pending.keys, command[5:])
                    )
                    if int(reply[0]) == 1:
                        return int(reply[1])
                    self.stats.publish_conflicts += 1
                    proposals.refused(pending.topic, _text(reply[1]), int(reply[2]))
                    if int(reply[3]):
                        await trio.sleep(min(int(reply[3]) / 1000, _TURN))
        finally:
            proposals.busy.discard(pending.topic)
        self.stats.publish_lost += 1
        raise ConnectionError(f"could not publish on {pending.topic!r}: its position kept moving")

    async def history(
        self, topic: str, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read ``topic``'s history from Redis (see :meth:`Broker.history
        <trio_wsroutes.Broker.history>`).

        Reading creates nothing: a topic without history in Redis gives an empty page
        with ``recovered=False`` at offset 0 of a fresh epoch. The read is checked as a
        recovery is (sizes, signatures, one contiguous run of offsets) and done in
        bounded replies. On a running broker it uses the broker's connection and raises
        :class:`ConnectionError` while Redis is unreachable; on one that is not running,
        it connects for the read.
        """
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"limit must be None or an integer >= 0, not {limit!r}")
        history = self._history_for(topic)
        if history is None:
            raise ValueError(f"topic {topic!r} has no history")
        await trio.lowlevel.checkpoint()
        keys = self._history_keys(topic)
        # With since, limit 0 still reads one entry, to tell whether the history reaches back.
        read_limit = limit if since is None or limit is None else max(limit, 1)
        read = HistoryRead(
            self._channel(topic),
            history,
            since,
            read_limit,
            secret=self._secret,
            max_message_size=self._max_message_size,
        )
        if not self._running:

            async def run_once(client: Any) -> str:
                return await self._read_pages(
                    read, lambda args: client.eval(READ_SCRIPT, keys, args)
                )

            outcome = await self._once(run_once, what="read history from")
            return self._history_page(topic, read, outcome, limit)
        pub = self._pub
        if pub is None or self._state != "connected":
            raise ConnectionError(f"not connected to Redis at {self._safe_url}")
        try:
            outcome = await self._read_pages(
                read, lambda args: self._evalsha(pub, READ_SHA, keys, args)
            )
        except Exception as exc:
            if _is_unexpected(exc):
                raise
            raise ConnectionError(
                f"could not read history from Redis at {self._safe_url}: {_describe(exc)}"
            ) from exc
        return self._history_page(topic, read, outcome, limit)

    # -- history internals -------------------------------------------------------------------

    @staticmethod
    async def _read_pages(
        read: HistoryRead, run: Callable[[tuple[bytes, ...]], Awaitable[Any]]
    ) -> str:
        """Read until ``read`` has all it asked for (each reply bounded)."""
        while True:
            outcome = read.take(await run(read.args()))
            if outcome != "more":
                return outcome

    def _history_page(
        self, topic: str, read: HistoryRead, outcome: str, limit: int | None
    ) -> HistoryPage:
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
        setattr(self.stats, problem, getattr(self.stats, problem) + 1)
        logger.warning(
            "redis broker: the history of %r failed its checks (%s); nothing sent from it",
            topic,
            problem,
        )

    def _history_for(self, topic: str) -> History | None:
        policy = self._policy
        return None if policy is None else policy.match(topic)

    def _history_keys(self, topic: str) -> tuple[bytes, bytes]:
        # The hash tag {topic} keeps both keys in one cluster slot, as a script needs.
        base = f"{self._prefix}h:{{{topic}}}:".encode()
        return base + b"m", base + b"l"

    def _log_ttl_ms(self, history: History) -> int:
        if history.ttl is None:
            return self._meta_ttl_ms
        return min(self._meta_ttl_ms, max(1, math.ceil(history.ttl * 1000)))

    async def _evalsha(
        self, pub: BaseConnection, sha: bytes, keys: tuple[bytes, ...], args: tuple[bytes, ...]
    ) -> Any:
        from coredis.exceptions import NoScriptError

        with trio.fail_after(self._timeout):
            try:
                return await pub.create_request(
                    b"EVALSHA", sha, len(keys), *keys, *args, timeout=self._timeout
                )
            except NoScriptError:  # Redis lost its scripts (SCRIPT FLUSH): load them again
                await self._load_scripts(pub)
                return await pub.create_request(
                    b"EVALSHA", sha, len(keys), *keys, *args, timeout=self._timeout
                )

    async def _load_scripts(self, pub: BaseConnection) -> None:
        for _, script in SCRIPTS:
            await pub.create_request(b"SCRIPT", b"LOAD", script, timeout=self._timeout)

    async def _recover(
        self, topic: str, subscriber: Subscriber, since: Position, history: History
    ) -> Recovery:
        """Subscribe with a position: buffer live publications, confirm the channel, read
        the stream after ``since`` (in bounded replies, at most ``max_recovery`` of it),
        deliver it, then the buffer, then go live."""
        recovering = _Recovering(subscriber)
        self._recovering.setdefault(topic, {})[subscriber] = recovering
        policy = self._policy
        assert policy is not None
        read = HistoryRead(
            self._channel(topic),
            history,
            since,
            None,
            secret=self._secret,
            max_message_size=self._max_message_size,
            cap=policy.max_recovery,
        )
        outcome = "unread"
        try:
            try:
                pub = self._pub
                if pub is not None and await self._confirm_channel(topic):
                    keys = self._history_keys(topic)
                    rounds = 0
                    while True:
                        recovering.dirty = False
                        outcome = read.take(await self._evalsha(pub, READ_SHA, keys, read.args()))
                        if outcome == "more":
                            continue
                        if outcome != "done" or recovering.cancelled or not recovering.dirty:
                            break
                        # The buffer overflowed during that read: what it dropped is in
                        # the stream, read on from there.
                        rounds += 1
                        if rounds >= _RECOVERY_ROUNDS:
                            outcome = "overflowed"
                            break
            except Exception as exc:
                if _is_unexpected(exc):
                    raise
                outcome = "unread"
                logger.debug("redis broker: recovery on %r failed: %s", topic, _describe(exc))
        except BaseException:
            self._end_recovery(topic, recovering, release=True)  # cancelled, or a bug
            raise
        # From here until the subscriber is live, no checkpoint: nothing comes in between.
        if recovering.cancelled:
            return NOT_RECOVERED  # unsubscribed meanwhile (and cleaned up then)
        self._end_recovery(topic, recovering, release=False)
        if outcome != "done" or read.epoch is None:
            if outcome == "capped":
                self.stats.recoveries_capped += 1
            elif outcome == "failed":
                self._count_failure(topic, read)
            self.stats.recoveries_failed += 1
            await self._subscribe_live(topic, subscriber)
            return NOT_RECOVERED
        epoch, last = read.epoch, read.last
        frames = [Frame(payload) for _, payload in read.publications()]
        missed = len(frames)
        for offset, frame_epoch, frame in recovering.frames:
            if offset and frame_epoch == epoch and offset <= last:
                continue  # read from the stream already
            frames.append(frame)
        for frame in frames:
            if not subscriber.deliver(frame):
                # Gone (e.g. evicted as a slow consumer): drop what else it holds.
                self._local.discard_all(subscriber)
                self._end_recovery(topic, recovering, release=True)
                return NOT_RECOVERED
        self._local.add(topic, subscriber)
        # Publications up to ``last`` may still be on their way from the channel (received,
        # not yet fanned out) unless a later one went by during the recovery.
        if last and not any(
            offset >= last or (offset and frame_epoch != epoch)
            for offset, frame_epoch, _ in recovering.frames
        ):
            self._lagging.setdefault(topic, {})[subscriber] = (epoch, last)
        self.stats.recoveries += 1
        self.stats.recovered_messages += missed
        return Recovery(recovered=True, missed=missed)

    async def _confirm_channel(self, topic: str) -> bool:
        """Make sure this process is subscribed to ``topic``'s channel and Redis has
        acknowledged it; ``False`` if that cannot be known."""
        sub = self._sub
        if sub is None:
            return False
        channel = self._channel(topic)
        if channel not in self._redis_channels:
            self._send_subscribe([topic])
        waiters = self._sub_waiters.get(channel)
        if waiters:
            event = waiters[-1]
            with trio.move_on_after(self._timeout):
                await event.wait()
            if not event.is_set():
                return False
        # A session that ended sets the events too: check it is still the same one.
        return self._sub is sub and channel in self._redis_channels

    def _end_recovery(self, topic: str, recovering: _Recovering, *, release: bool) -> None:
        """Take ``recovering`` out of the topic's recoveries (once); with ``release``,
        leave the channel if nobody here needs it any more."""
        subscribers = self._recovering.get(topic)
        if subscribers is not None and subscribers.get(recovering.subscriber) is recovering:
            del subscribers[recovering.subscriber]
            if not subscribers:
                del self._recovering[topic]
            self._recovery_buffered -= len(recovering.frames)
        if release and topic not in self._recovering and not self._local.subscriber_count(topic):
            self._release(topic)

    def _skip_lagging(self, topic: str, offset: int, epoch: str | None) -> list[Subscriber]:
        """The recovered subscribers of ``topic`` that got this publication already."""
        lagging = self._lagging.get(topic)
        if lagging is None:
            return []
        skip: list[Subscriber] = []
        for subscriber, (seen_epoch, seen_offset) in list(lagging.items()):
            if epoch == seen_epoch and offset <= seen_offset:
                skip.append(subscriber)
            else:
                del lagging[subscriber]  # past it: the channel is in offset order
        if not lagging:
            del self._lagging[topic]
        return skip

    def _forget_lagging(self, topic: str, subscriber: Subscriber) -> None:
        lagging = self._lagging.get(topic)
        if lagging is not None:
            lagging.pop(subscriber, None)
            if not lagging:
                del self._lagging[topic]

    def _cancel_recovery(self, topic: str, subscriber: Subscriber) -> None:
        recovering = self._recovering.get(topic, {}).get(subscriber)
        if recovering is not None:
            recovering.cancelled = True
            self._end_recovery(topic, recovering, release=True)

    def _buffer(
        self, recovering: _Recovering, offset: int, epoch: str | None, frame: Frame
    ) -> None:
        frames = recovering.frames
        if self._recovery_buffered >= self._max_recovery_buffer:
            # Over the bound: empty this buffer; the stream is read again.
            self._recovery_buffered -= len(frames)
            frames.clear()
            recovering.dirty = True
        frames.append((offset, epoch, frame))
        self._recovery_buffered += 1

    async def publish_binary(
        self, topic: str, data: bytes, *, exclude: Subscriber | None = None
    ) -> int:
        """Publish a binary frame; see :meth:`publish`."""
        return await self.publish(topic, Frame(bytes(data), binary=True), exclude=exclude)

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has **in this process** (not cluster-wide)."""
        return self._local.subscriber_count(topic)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the Redis connections, reconnecting, until cancelled.

        ``await nursery.start(broker.run)`` returns after the first connection attempt,
        whether it succeeded or not (the broker keeps retrying in the background; local
        delivery works meanwhile). A server runs this in its lifespan; a broker runs once
        at a time.
        """
        if self._running:
            raise RuntimeError(
                "this RedisBroker is already running: give each server its own instance"
            )
        _coredis()
        from coredis import ConnectionPool

        # Only to parse the URL into a connection class, location and options: the two
        # connections are made and held here, not leased from the pool.
        self._pool = ConnectionPool.from_url(self._url, connect_timeout=self._timeout)
        self._running = True
        self._state = "connecting"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._fan_out_loop)
                await nursery.start(self._connect_loop)
                task_status.started()
        finally:
            self._end_session()
            self._running = False
            self._state = "stopped"

    async def flush(self) -> None:
        """Wait until every queued publish has been acknowledged by Redis or counted as
        lost (at most ``timeout`` seconds)."""
        with trio.move_on_after(self._timeout):
            while (self._outgoing or self._in_flight) and self._state == "connected":
                await self._sent_lot.park()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        background = self._run_in_background()
        await background.__aenter__()
        self._background = background
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        background, self._background = self._background, None
        if background is not None:
            await background.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _run_in_background(self) -> AsyncGenerator[None]:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.run)
            try:
                yield
                await self.flush()
            finally:
                nursery.cancel_scope.cancel()

    # -- connection loop --------------------------------------------------------------------

    async def _connect_loop(self, *, task_status: trio.TaskStatus[None]) -> None:
        attempt = 0
        started = False

        def connected() -> None:
            nonlocal attempt, started
            attempt = 0
            if not started:
                started = True
                task_status.started()

        while True:
            error: Exception | None = None
            try:
                await self._session(connected)
            except Exception as exc:
                error = exc
            was = self._state
            self._end_session()
            self._state = "disconnected"
            reason = _describe(error)
            if was == "connected":
                self.stats.disconnects += 1
                self._down_since = trio.current_time()
                self._lost_at_disconnect = self.stats.publish_lost
                logger.warning(
                    "redis broker: lost connection to %s (%s); reconnecting, messages "
                    "published meanwhile do not reach other processes",
                    self._safe_url,
                    reason,
                    exc_info=error if _is_unexpected(error) else None,
                )
            elif was == "connecting":
                self._down_since = trio.current_time()
                self._lost_at_disconnect = self.stats.publish_lost
                logger.warning(
                    "redis broker: cannot connect to %s (%s); retrying in the background",
                    self._safe_url,
                    reason,
                    exc_info=error if _is_unexpected(error) else None,
                )
            if not started:
                started = True
                task_status.started()
            delay = min(self._max_delay, self._base_delay * 2**attempt)
            attempt = min(attempt + 1, 32)
            await trio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session(self, connected: Callable[[], None]) -> None:
        """Connect, resubscribe, run until a connection fails (then raise)."""
        import anyio

        pool = self._pool
        async with trio.open_nursery() as nursery:
            with trio.fail_after(self._timeout):
                gate = anyio.CapacityLimiter(1)
                sub = await self._open(nursery, pool, gate)
                pub = await self._open(nursery, pool, anyio.CapacityLimiter(1))
                if self._policy is not None:
                    await self._load_scripts(pub)
            self._sub = sub
            self._pub = pub
            self._last_inbound = trio.current_time()
            nursery.start_soon(self._drain, sub, gate)
            topics = self._local.active_topics()
            topics += [topic for topic in self._recovering if topic not in self._local]
            waiters = self._send_subscribe(topics)
            with trio.fail_after(self._timeout + len(topics) / 10_000):
                for event in waiters:
                    await event.wait()
            if self._sub is not sub:
                raise _ConnectionLost("subscription connection lost")
            nursery.start_soon(self._sender, pub)
            nursery.start_soon(self._health_check, sub)
            self._state = "connected"
            self.stats.connects += 1
            if self._down_since is None:
                logger.info(
                    "redis broker: connected to %s (origin %s)", self._safe_url, self.origin
                )
            else:
                logger.info(
                    "redis broker: reconnected to %s after %.1f s, %d topics resubscribed, "
                    "%d publishes lost meanwhile",
                    self._safe_url,
                    trio.current_time() - self._down_since,
                    len(topics),
                    self.stats.publish_lost - self._lost_at_disconnect,
                )
            self._down_since = None
            connected()

    async def _open(self, nursery: trio.Nursery, pool: Any, budget: Any) -> BaseConnection:
        # One connection of our own (not leased from the pool), so that it is never
        # shared and its push-message reader can be throttled by ``budget``.
        kwargs = {**pool.connection_kwargs, "processing_budget": budget}
        connection: BaseConnection = pool.connection_class(pool.location, **kwargs)

        async def hold(*, task_status: trio.TaskStatus[None]) -> None:
            await connection.run(task_status=task_status)
            raise _ConnectionLost("connection closed by Redis")

        await nursery.start(hold)
        return connection

    def _end_session(self) -> None:
        self._sub = None
        self._pub = None
        self._excludes.clear()
        self._redis_channels.clear()
        for waiters in self._sub_waiters.values():
            for event in waiters:
                event.set()
        self._sub_waiters.clear()
        lost = self._in_flight + len(self._outgoing)
        if lost:
            self.stats.publish_lost += lost
        self._outgoing.clear()
        self._outgoing_bytes = 0
        self._in_flight = 0
        self._held.clear()
        if self._proposals is not None:
            self._proposals.busy.clear()
        self._send_overflowing = False
        self._sent_lot.unpark_all()

    async def _health_check(self, sub: BaseConnection) -> None:
        interval = self._health_interval
        while True:
            await trio.sleep_until(self._last_inbound + interval)
            if trio.current_time() - self._last_inbound < interval:
                continue
            with trio.fail_after(self._timeout):
                await sub.create_request(b"PING")
            self._last_inbound = trio.current_time()

    # -- receiving ---------------------------------------------------------------------------

    def _send_subscribe(self, topics: list[str]) -> list[trio.Event]:
        sub = self._sub
        events: list[trio.Event] = []
        if sub is None or not topics:
            return events
        channels: list[bytes] = []
        for topic in topics:
            channel = self._channel(topic)
            self._channel_topics[channel] = topic
            self._redis_channels.add(channel)
            event = trio.Event()
            self._sub_waiters.setdefault(channel, deque()).append(event)
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

    def _release(self, topic: str) -> None:
        """The last local subscriber of ``topic`` left: leave its Redis channel (unless a
        subscriber is recovering on it)."""
        if topic in self._recovering:
            return
        self._lagging.pop(topic, None)
        channel = self._channel(topic)
        self._seen.pop(topic, None)
        self._channel_topics.pop(channel, None)
        sub = self._sub
        if sub is not None and channel in self._redis_channels:
            self._redis_channels.discard(channel)
            try:
                sub.send_command(b"UNSUBSCRIBE", channel)
            except Exception:
                pass  # the connection is failing; the next one subscribes only what is needed

    async def _drain(self, sub: BaseConnection, gate: Any) -> None:
        """Move what Redis pushes into the bounded fan-out queue, as fast as it arrives.

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
        self._last_inbound = trio.current_time()
        if not isinstance(push, list):
            return
        items = cast("list[object]", push)
        if len(items) < 2:
            return
        kind, channel = items[0], items[1]
        if not isinstance(channel, bytes):
            return
        if kind == b"message" and len(items) == 3:
            data = items[2]
            if isinstance(data, bytes):
                self._on_message(channel, data)
        elif kind == b"subscribe":
            waiters = self._sub_waiters.get(channel)
            if waiters:
                waiters.popleft().set()
                if not waiters:
                    del self._sub_waiters[channel]

    def _on_message(self, channel: bytes, data: bytes) -> None:
        topic = self._channel_topics.get(channel)
        if topic is None:
            return  # a channel we just left
        if len(data) > self._max_message_size + MAX_HEADER:
            self.stats.oversized += 1  # not even decoded
            return
        message = decode_wire(data)
        if message is None:
            self.stats.malformed += 1
            return
        if len(message.payload) > self._max_message_size:
            self.stats.oversized += 1
            return
        secret = self._secret
        if secret is not None and not _authentic(secret, channel, message):
            self.stats.unauthenticated += 1
            return
        if message.epoch is not None and self._replays is not None:
            # Signed with its position: one at or before the last delivered is a replay.
            if not self._replays.fresh(topic, message.epoch, message.offset):
                self.stats.duplicates += 1
                return
            assert self._proposals is not None
            self._proposals.learn(topic, message.epoch, message.offset)
        origin = message.origin
        exclude: Subscriber | None = None
        own = origin is not None and origin in self._own_origins
        if own:
            if self._history_for(topic) is None:
                return  # ours: delivered locally when it was published
            # Ours on a topic with history: delivered here, as everywhere, from Redis.
            if self._excludes:
                exclude = self._excludes.pop((cast(bytes, origin), topic, message.seq), None)
        if origin is not None and message.seq:
            seen = self._seen.get(topic)
            if seen is None:
                seen = self._seen[topic] = OrderedDict()
            last = seen.get(origin)
            if last is not None:
                if message.seq <= last:
                    if secret is not None or last - message.seq < _REPLAY_WINDOW:
                        self.stats.duplicates += 1
                        return
                    # Unsigned, and far behind: believe this one (see the class docs).
                    self.stats.sequence_resets += 1
                elif message.seq > last + 1:
                    self.stats.missed += message.seq - last - 1
                seen.move_to_end(origin)
            elif len(seen) >= _MAX_ORIGINS_PER_TOPIC:
                seen.popitem(last=False)
            seen[origin] = message.seq
        if not own:
            self.stats.received += 1
        size = len(message.payload)
        if self._inbox and (
            len(self._inbox) >= self._max_messages or self._inbox_bytes + size > self._max_bytes
        ):
            self.stats.receive_dropped += 1
            if not self._receive_overflowing:
                self._receive_overflowing = True
                logger.warning(
                    "redis broker: local fan-out is behind (%d messages, %d bytes queued); "
                    "dropping messages from Redis until it catches up",
                    len(self._inbox),
                    self._inbox_bytes,
                )
            return
        frame = Frame(message.payload, binary=message.binary)
        self._inbox.append((topic, frame, exclude, message.offset, message.epoch))
        self._inbox_bytes += size
        if self._inbox_bytes > self.stats.inbound_queue_peak_bytes:
            self.stats.inbound_queue_peak_bytes = self._inbox_bytes
        self._inbox_lot.unpark()

    async def _fan_out_loop(self) -> None:
        inbox = self._inbox
        local = self._local
        while True:
            if not inbox:
                if self._receive_overflowing:
                    self._receive_overflowing = False
                    logger.info(
                        "redis broker: local fan-out caught up (%d messages dropped so far)",
                        self.stats.receive_dropped,
                    )
                await self._inbox_lot.park()
                continue
            deadline = time.perf_counter() + _FAN_OUT_SLICE
            recovering = self._recovering
            lagging = self._lagging
            while inbox:
                topic, frame, exclude, offset, epoch = inbox.popleft()
                self._inbox_bytes -= frame.size
                if recovering:
                    subscribers = recovering.get(topic)
                    if subscribers is not None:
                        for pending in subscribers.values():
                            if pending.subscriber is not exclude:
                                self._buffer(pending, offset, epoch, frame)
                if lagging and offset:
                    skip = self._skip_lagging(topic, offset, epoch)
                    if skip:
                        local.fan_out_skipping(topic, frame, exclude, skip)
                        continue
                local.fan_out(topic, frame, exclude=exclude)
                if time.perf_counter() >= deadline:
                    break
            await trio.lowlevel.checkpoint()

    # -- publishing --------------------------------------------------------------------------

    def _channel(self, topic: str) -> bytes:
        return (self._prefix + topic).encode()

    def _next_seq(self, topic: str) -> int:
        seq = self._seq.get(topic, 0) + 1
        if seq == 1 and len(self._seq) >= _MAX_TOPIC_COUNTERS:
            # Bound the counters: a new origin starts every topic afresh for receivers.
            self._origin = _new_origin()
            self._own_origins.append(self._origin)
            self._seq.clear()
        self._seq[topic] = seq
        return seq

    def _enqueue(self, command: tuple[bytes, ...] | Pending, size: int) -> bool:
        """Queue a command for Redis; ``False`` (counted lost) if it cannot be."""
        if self._state != "connected":
            self.stats.publish_lost += 1
            return False
        out = self._outgoing
        if out and (
            len(out) >= self._max_messages or self._outgoing_bytes + size > self._max_bytes
        ):
            self.stats.publish_lost += 1
            if not self._send_overflowing:
                self._send_overflowing = True
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

    async def _sender(self, pub: BaseConnection) -> None:
        from coredis.exceptions import NoScriptError, ResponseError

        out = self._outgoing
        proposals = self._proposals
        while True:
            if not out:
                if self._send_overflowing:
                    self._send_overflowing = False
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
            requests = [
                pub.create_request(*self._command(item), timeout=self._timeout)
                for item, _ in batch
            ]
            reload = False
            again: list[tuple[tuple[bytes, ...] | Pending, int]] = []
            for (item, size), request in zip(batch, requests, strict=True):
                try:
                    reply = await request
                except ResponseError as exc:
                    # A history script failed in Redis: that publication is lost.
                    self._in_flight -= 1
                    self.stats.publish_lost += 1
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
                        self.stats.publish_conflicts += 1
                        proposals.refused(item.topic, _text(answer[1]), int(answer[2]))
                        if int(answer[3]):  # ms left of another publisher's turn
                            until = trio.current_time() + min(int(answer[3]) / 1000, _TURN)
                            self._held[item.topic] = until
                        assert item.first is not None
                        if trio.current_time() - item.first < self._timeout:
                            again.append((item, size))
                        else:
                            self.stats.publish_lost += 1
                        continue
                self.stats.published += 1
            if proposals is not None:
                proposals.busy.clear()
            for item, size in reversed(again):
                out.appendleft((item, size))
                self._outgoing_bytes += size
            if reload:
                await self._load_scripts(pub)

    def _take_batch(self) -> list[tuple[tuple[bytes, ...] | Pending, int]]:
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
        batch: list[tuple[tuple[bytes, ...] | Pending, int]] = []
        skipped: list[tuple[tuple[bytes, ...] | Pending, int]] = []
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
        assert self._proposals is not None
        if item.first is None:
            item.first = trio.current_time()
        return self._proposals.command(item, self._log_ttl_ms(item.history), self._meta_ttl_ms)

    async def _once(
        self, call: Callable[[Any], Awaitable[Any]], *, what: str = "publish to"
    ) -> Any:
        """Connect, run ``call(client)``, disconnect: for a broker that is not running."""
        from coredis import Redis
        from coredis.retry import NoRetryPolicy

        client = Redis.from_url(
            self._url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self._timeout,
            stream_timeout=self._timeout,
        )
        try:
            with trio.fail_after(2 * self._timeout):
                async with client:
                    return await call(client)
        except Exception as exc:
            if _is_unexpected(exc):
                raise
            if what == "publish to":
                self.stats.publish_lost += 1
            raise ConnectionError(
                f"could not {what} Redis at {self._safe_url}: {_describe(exc)}"
            ) from exc


# -- helpers -------------------------------------------------------------------------------


def _coredis() -> None:
    try:
        import coredis  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:  # pragma: no cover - checked in __init__ already
        raise ImportError(
            "RedisBroker needs coredis: pip install 'trio-wsroutes[redis]'", name="coredis"
        ) from exc


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _new_origin() -> bytes:
    return f"{os.getpid()}-{secrets.token_hex(6)}".encode()


def _without_password(parts: Any) -> str:
    if parts.password is None:
        return str(urlunsplit(parts))
    netloc = str(parts.netloc).rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return str(urlunsplit(parts._replace(netloc=user + netloc)))


def _nowait_receiver(connection: BaseConnection) -> Callable[[], Any] | None:
    """coredis' own push-message stream, to empty without a scheduler turn per message
    (coredis 6 keeps it in an anyio memory stream); ``None`` if it is not there."""
    stream = getattr(connection, "_push_message_buffer_out", None)
    receive_nowait = getattr(stream, "receive_nowait", None)
    return cast("Callable[[], Any]", receive_nowait) if callable(receive_nowait) else None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    leaves = _leaves(exc)
    # Prefer the root cause over the follow-on errors of the other tasks.
    leaf = next((e for e in leaves if not isinstance(e, _ConnectionLost)), leaves[0])
    text = str(leaf)
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


def _is_unexpected(exc: BaseException | None) -> bool:
    """A failure that is not Redis being unreachable, slow or gone: a bug worth a traceback."""
    if exc is None:
        return False
    from coredis.exceptions import RedisError

    expected: tuple[type[BaseException], ...] = (
        RedisError,
        OSError,
        TimeoutError,
        trio.TooSlowError,
        _ConnectionLost,
    )
    try:
        import anyio

        expected += (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)
    except ImportError:  # pragma: no cover
        pass
    return not all(isinstance(leaf, expected) for leaf in _leaves(exc))
