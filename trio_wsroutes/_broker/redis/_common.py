"""What every part of a :class:`~trio_wsroutes.RedisBroker` shares: its options
(:class:`Settings`), its counters (:class:`RedisBrokerStats`), the state of its Redis
connections (:class:`Link`), and how Redis failures are told and described."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from ..._history import History, HistoryPolicy
from ..._metrics import LAG_BUCKETS, Histogram

__all__ = [
    "CLUSTER_SCHEMES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MiB",
    "NodeDown",
    "ConnectionLost",
    "Link",
    "Requests",
    "Routes",
    "Subscriptions",
    "RedisBrokerStats",
    "Settings",
    "State",
    "describe",
    "is_unexpected",
    "logger",
    "new_origin",
    "once",
    "require_coredis",
    "text",
]

logger = logging.getLogger("trio_wsroutes.redis")

MiB: Final = 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * MiB
"""``max_message_size`` until the server gives its ``max_payload_length``."""

State = Literal["stopped", "connecting", "connected", "disconnected"]

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
"""URL schemes of a Redis Cluster: its nodes, comma-separated (``host:port,host:port``)."""


@attrs.define
class RedisBrokerStats:
    """Running totals of one :class:`RedisBroker`, ``broker.stats``, since it was created.

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
    history_resumes: int = 0
    """Local subscribers of a topic with history ended (a connection closes with 1012) so
    that they resume from their position: publications on the topic were lost on their
    way to this process (it was cut off from Redis, or dropped them), seen as a jump in
    offsets or, after a reconnection, in the topic's last position in Redis."""
    publish_conflicts: int = 0
    """With a ``secret``: publications on topics with history proposed again because
    their position was taken first (another process published on the topic, or the
    history was lost in Redis)."""
    extensions_ignored: int = 0
    """Received messages whose publish time or trace context was malformed or oversized:
    delivered without it (with a ``secret``, an altered one fails the signature
    instead: ``unauthenticated``)."""
    lag: Histogram = attrs.field(factory=lambda: Histogram(LAG_BUCKETS), eq=False, repr=False)
    """Seconds from the publish in another process (its wall clock, in ms) to the fan-out
    here, of every message received from another process with a publish time; a
    negative one (clocks apart) counts as 0. Exported as ``broker_lag_seconds``."""
    catch_ups: int = 0
    """On a Redis Cluster: topics with history whose subscription had a gap (their
    master was down or their slot moved) and whose local subscribers were then sent
    every publication they missed, from the history."""
    catch_ups_failed: int = 0
    """Of those, the ones whose history could not give back what was missed (the master
    restarted without its data, or the history no longer reaches back): the subscribers
    see the gap in the offsets, or a new epoch."""
    control_received: int = 0
    """Commands on a user's connections (``server.disconnect(user=...)``,
    ``server.subscribe(user=...)``, ...) received from other processes and handed to the
    server."""
    control_invalid: int = 0
    """Messages on the control channel dropped: not in its format (each field is parsed
    strictly), a command this version does not know, or, with a ``secret``, sent more
    than a minute away from this process's clock or replayed. (A forged signature counts
    in ``unauthenticated``.)"""


class Settings:
    """A broker's options, checked (see :class:`~trio_wsroutes.RedisBroker`), and what is
    derived from them. Only ``max_message_size`` and ``policy`` change after
    construction, when the server configures the broker."""

    __slots__ = (
        "base_delay",
        "cluster",
        "control_channel",
        "health_interval",
        "max_bytes",
        "max_delay",
        "max_message_size",
        "max_messages",
        "max_recovery_buffer",
        "meta_ttl_ms",
        "once_client",
        "policy",
        "prefix",
        "safe_url",
        "secret",
        "size_given",
        "timeout",
        "url",
    )

    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str,
        max_queued_messages: int,
        max_queued_bytes: int,
        reconnect_delay: float,
        max_reconnect_delay: float,
        timeout: float,
        health_check_interval: float,
        history_meta_ttl: float,
        max_recovery_buffer: int,
        secret: bytes | str | None,
        max_message_size: int | None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix", *CLUSTER_SCHEMES):
            raise ValueError(
                "not a Redis URL (redis://, rediss://, unix://, redis+cluster:// or "
                f"rediss+cluster://): {url!r}"
            )
        self.cluster = parts.scheme in CLUSTER_SCHEMES
        """Whether ``url`` names a Redis Cluster (sharded pub/sub, keys by slot)."""
        if self.cluster and ("{" in channel_prefix or "}" in channel_prefix):
            # A brace in the prefix would move the hash tag off the topic.
            raise ValueError("with a Redis Cluster, channel_prefix cannot contain '{' or '}'")
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
        self.url = url
        self.safe_url = _without_password(parts)
        self.prefix = channel_prefix
        self.control_channel: bytes = (channel_prefix + "\x00control").encode()
        """The channel of commands on users' connections: no topic's channel."""
        self.max_messages = max_queued_messages
        self.max_bytes = max_queued_bytes
        self.base_delay = reconnect_delay
        self.max_delay = max_reconnect_delay
        self.timeout = timeout
        self.health_interval = health_check_interval
        self.meta_ttl_ms = max(1, round(history_meta_ttl * 1000))
        self.max_recovery_buffer = max_recovery_buffer
        self.secret: bytes | None = secret
        self.size_given = max_message_size is not None
        self.max_message_size: int = max_message_size or DEFAULT_MAX_MESSAGE_SIZE
        self.policy: HistoryPolicy | None = None
        self.once_client: Callable[[Settings], tuple[Any, Callable[[Any], Any]]] | None = None
        """On a cluster: makes the client (and its wrapper) a broker that is not running
        uses for one call (set by the broker, so that this module imports no other)."""

    def tag(self, topic: str) -> str:
        """``topic`` in braces: the hash tag that puts every key and (on a cluster) the
        channel of one topic in one cluster slot. On a cluster, a topic that is empty or
        holds a ``}`` (which would end the tag early) is tagged with a digest of itself,
        followed by the topic, so that names stay distinct."""
        if not self.cluster or (topic and "}" not in topic):
            return f"{{{topic}}}"
        digest = hashlib.sha1(topic.encode(), usedforsecurity=False).hexdigest()[:24]
        return f"{{#{digest}}}{topic}"

    def channel(self, topic: str) -> bytes:
        """The Redis channel of ``topic``: the prefix and the topic (a topic that starts
        with NUL gets one more, so that no topic has the control channel's name). On a
        cluster, the prefix and the topic's hash tag (:meth:`tag`), a sharded channel in
        the slot of the topic's keys."""
        if self.cluster:
            return (self.prefix + self.tag(topic)).encode()
        if topic.startswith("\x00"):
            return (self.prefix + "\x00" + topic).encode()
        return (self.prefix + topic).encode()

    def history_for(self, topic: str) -> History | None:
        """The history ``topic`` keeps, if any."""
        policy = self.policy
        return None if policy is None else policy.match(topic)

    def history_keys(self, topic: str) -> tuple[bytes, bytes]:
        """The two keys of ``topic``'s history: its meta hash and its stream."""
        # The hash tag {topic} keeps both keys in one cluster slot, as a script needs.
        base = f"{self.prefix}h:{self.tag(topic)}:".encode()
        return base + b"m", base + b"l"

    def log_ttl_ms(self, history: History) -> int:
        """How long a topic's stream outlives its last publication, in ms."""
        if history.ttl is None:
            return self.meta_ttl_ms
        return min(self.meta_ttl_ms, max(1, math.ceil(history.ttl * 1000)))


class Requests(Protocol):
    """What the broker asks of its publishing connection: a coredis connection, or on a
    cluster the router that sends each command to its slot's master."""

    def create_request(
        self,
        command: bytes,
        *args: Any,
        timeout: float | None = None,
    ) -> Awaitable[Any]:
        """Send a command; await the result for its reply."""
        ...


class Subscriptions(Protocol):
    """What the broker asks of its subscription connection (see :class:`Requests`)."""

    def send_command(self, command: bytes, *args: Any) -> None:
        """Send a command that gets no reply (``SUBSCRIBE``, ``UNSUBSCRIBE``)."""
        ...


class Routes(Protocol):
    """On a cluster: which channels' masters are up."""

    def live(self, name: bytes) -> object | None:
        """The master of ``name``'s slot if it is up, else ``None``."""
        ...


class Link:
    """A broker's Redis connections, as its session holds them now: the other parts
    read them, only the session changes them."""

    __slots__ = ("pub", "router", "running", "state", "sub")

    def __init__(self) -> None:
        self.state: State = "stopped"
        self.running = False
        self.sub: Subscriptions | None = None
        """The subscription connection, while up."""
        self.pub: Requests | None = None
        """The publishing connection, also for history reads, while up."""
        self.router: Routes | None = None
        """On a cluster, while connected: the slot map of the session."""

    def reachable(self, channel: bytes) -> bool:
        """Whether commands for ``channel``'s slot can be sent now."""
        if self.state != "connected":
            return False
        router = self.router
        return router is None or router.live(channel) is not None


async def once(
    settings: Settings,
    stats: RedisBrokerStats,
    call: Callable[[Any], Awaitable[Any]],
    *,
    what: str = "publish to",
) -> Any:
    """Connect, run ``call(client)``, disconnect: for a broker that is not running.
    Raises :class:`ConnectionError` (saying it could not ``what`` Redis) when Redis
    fails, counting a publish as lost."""
    from coredis import Redis
    from coredis.retry import NoRetryPolicy

    wrap: Callable[[Any], Any] = _same
    client: Any
    if settings.once_client is not None:
        client, wrap = settings.once_client(settings)
    else:
        client = Redis.from_url(
            settings.url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=settings.timeout,
            stream_timeout=settings.timeout,
        )
    try:
        with trio.fail_after(2 * settings.timeout):
            async with client:
                return await call(wrap(client))
    except Exception as exc:
        if is_unexpected(exc):
            raise
        if what == "publish to":
            stats.publish_lost += 1
        raise ConnectionError(
            f"could not {what} Redis at {settings.safe_url}: {describe(exc)}"
        ) from exc


def _same(client: Any) -> Any:
    return client


class NodeDown(ConnectionError):
    """On a Redis Cluster: the master owning a command's slot is unreachable (or its
    connection failed during the command)."""


class ConnectionLost(Exception):
    """A Redis connection ended (its session ends with it)."""


def require_coredis() -> None:
    """Raise a clear :class:`ImportError` without coredis."""
    try:
        import coredis  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:  # pragma: no cover - checked at construction already
        raise ImportError(
            "RedisBroker needs coredis: pip install 'trio-wsroutes[redis]'", name="coredis"
        ) from exc


def text(value: object) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def new_origin() -> bytes:
    """A fresh ``origin`` for the wire format: ``<pid>-<hex>``."""
    return f"{os.getpid()}-{secrets.token_hex(6)}".encode()


def _without_password(parts: Any) -> str:
    if parts.password is None:
        return str(urlunsplit(parts))
    netloc = str(parts.netloc).rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return str(urlunsplit(parts._replace(netloc=user + netloc)))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [exc]


def describe(exc: BaseException | None) -> str:
    """A failure in one line, for the log: the root cause, not its follow-on errors."""
    if exc is None:
        return "connection closed"
    leaves = _leaves(exc)
    leaf = next((e for e in leaves if not isinstance(e, ConnectionLost)), leaves[0])
    message = str(leaf)
    return f"{type(leaf).__name__}: {message}" if message else type(leaf).__name__


def is_unexpected(exc: BaseException | None) -> bool:
    """A failure that is not Redis being unreachable, slow or gone: a bug worth a traceback."""
    if exc is None:
        return False
    from coredis.exceptions import RedisError

    expected: tuple[type[BaseException], ...] = (
        RedisError,
        OSError,
        TimeoutError,
        trio.TooSlowError,
        ConnectionLost,
    )
    try:
        import anyio

        expected += (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)
    except ImportError:  # pragma: no cover
        pass
    return not all(isinstance(leaf, expected) for leaf in _leaves(exc))
