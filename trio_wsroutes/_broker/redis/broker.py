"""``RedisBroker``, the public class: it composes the parts of this package (see its
documentation) around one :class:`~trio_wsroutes._broker._topics.TopicTable` of this
process's subscribers, and answers the :class:`~trio_wsroutes.Broker` protocol."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Self

import trio

from ..._history import (
    NOT_RECOVERED,
    History,
    HistoryPage,
    HistoryPolicy,
    Position,
    Recovery,
    adopt_policy,
)
from ..._messages import Frame, encode_message
from ..._presence import (
    PresenceEntry,
    PresenceMember,
    PresencePolicy,
    PresenceStats,
    adopt_presence,
)
from .._base import Subscriber
from .._control import ControlHandler, UserCommand
from .._topics import TopicTable
from ._channels import Channels
from ._common import Link, MiB, RedisBrokerStats, Settings, State
from ._continuity import Continuity
from ._control import Control
from ._inbound import Inbound
from ._outbound import Outbound
from ._presence import RedisPresence
from ._recovery import Recoveries
from ._session import Session

if TYPE_CHECKING:
    from ..._tracing import Tracing

__all__ = ["RedisBroker"]


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
      ``unix:///path/to/socket``; for a Redis Cluster (7.0 or later),
      ``redis+cluster://[user:password@]host:port,host:port,...`` (any of its nodes: the
      others are found from them; ``rediss+cluster://`` with TLS; database 0 only).
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
      connection is checked with a ``PING``, and between two ``PING`` commands on the
      publishing connection; one not answered within ``timeout`` ends the session as a
      lost connection. A network that goes silent (no reset, no end of stream) on either
      connection is so noticed within ``health_check_interval + timeout`` seconds, and
      within ``timeout`` of a publish; a shorter stall loses nothing.
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

    **Wire format and versions.** Each message carries its publish time (for
    ``stats.lag``, the ``broker_lag_seconds`` metric) and, with the server's ``tracing``
    option, the trace context of its publish span, in extension fields of its header
    (see the package documentation). This changed the wire format in 0.3: a 0.3 process
    accepts the messages of a 0.2 process, but a 0.2 process drops every message of a
    0.3 process (``malformed``), so a 0.2 worker and a 0.3 worker cannot share Redis:
    the workers of one deployment must run the same version (or the new one another
    ``channel_prefix``).

    **What comes from Redis is checked.** Every header field is parsed strictly (a malformed
    message is dropped and counted in ``stats.malformed``), sizes are checked, and with a
    ``secret`` signatures, those of the extension fields too. Nothing dropped is delivered
    or touches the sequence tracking. The tracking itself depends on the secret: with one,
    sequence numbers are authentic, so one at or below its origin's last is a duplicate (a
    replay); without one, a forged message could otherwise claim a huge number and make
    every later message of that origin look like a duplicate, so a number at most 16 behind
    the last is a duplicate and one further behind is believed, restarting the origin's
    tracking (``stats.sequence_resets``). With a secret, a publication with a position at or
    before the last one this process delivered on its topic is a replay, dropped
    (``stats.duplicates``); that last position outlives the topic's local subscribers, for
    the 100 000 topics most recently delivered on, as do the last three epochs a topic left.
    What this cannot tell: a replay of a publication this process never delivered (published
    while it had no subscriber on the topic, was disconnected, or past those 100 000 topics)
    is delivered once, unchanged, at its real position, which clients see as an offset at or
    before one they had. A secret does not hide messages (Redis sees them) and does not stop
    the replay of a message without a position whose origin this process no longer tracks
    (after its topic lost every local subscriber, or 64 other origins since).

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

    **No silent gap on a live subscription.** The broker keeps the last position it
    delivered on each topic with history that has local subscribers. When the next
    publication does not follow it (a later offset or another epoch), or, after a
    reconnection, the topic's last position in Redis is past it once what was on its
    way has arrived (within ``timeout``) or its history is gone, publications were lost
    on their way to this process (it was cut off from Redis, or dropped them): the
    topic's local subscribers that can resume (the server's connections) are closed
    with 1012 (reason ``"missed publications"``) rather than
    handed what comes after the gap (``stats.history_resumes``). Their clients reconnect
    with their position and recover what they missed, or hear ``recovered=False``. A
    reconnection during publications may close some that missed nothing; they recover
    nothing then. A topic with nothing delivered here yet has no position to check.

    **Presence** (the server's ``presence`` option, through :meth:`configure_presence`):
    entries live in Redis for every process, and expire unless the process that listed
    them refreshes them (every ``ttl / 4`` seconds; see :class:`~trio_wsroutes.Presence`),
    so a process that dies leaves no entry behind for longer than ``ttl``. Three keys per
    topic (``<channel_prefix>presence:{<topic>}``, ``presence-exp:`` and
    ``presence-users:``), kept consistent by Lua scripts; join and leave events are
    publications on the topic. See the "Presence and users" guide.
    **Users.** ``server.disconnect(user=...)``, ``server.subscribe(user=..., topic=...)`` and
    ``server.unsubscribe(...)`` reach the user's connections in every process through one
    more channel, ``channel_prefix + "\\x00control"`` (no topic's channel: a topic that
    starts with ``"\\x00"`` gets a second one in its channel name), subscribed by every
    server's broker. Its messages are parsed strictly and, with a ``secret``, signed,
    dated and numbered: one that is malformed, unknown, over a minute old or replayed is
    dropped and counted (``stats.control_invalid``), one with a bad signature too
    (``stats.unauthenticated``).

    **Redis Cluster** (a ``redis+cluster://`` URL): the slot map comes from the first node
    named that answers, and each master gets two connections of its own. A topic's keys
    and its channel (``channel_prefix + "{" + topic + "}"``) carry the topic as hash tag,
    so they share one slot: its scripts run on that slot's master and its publications
    are sharded (``SPUBLISH``/``SSUBSCRIBE``), carried by that master alone. The control
    channel is sharded too, on the slot of its name. A master that is down stops only
    the topics of its slots (their publications are counted lost; on topics with history
    they are delivered here without a position, as while one Redis is down); the other
    masters' topics keep flowing. A ``MOVED``/``ASK`` reply, Redis ending a sharded
    subscription (its slot moved) or a master down makes the broker read the slot map
    again; when it changed (resharding, a replica promoted), the broker reconnects to
    the new map. After any gap in a master's subscription, each topic with history and
    local subscribers *catches up*: its stream is read after the last position this
    process delivered on it and the missed publications are delivered in order before
    the live ones (``stats.catch_ups``); when the history cannot give them back (the
    master restarted without its data, a new epoch), ``stats.catch_ups_failed`` counts
    it and the gap shows in the offsets, and a client resuming from its position gets
    ``recovered=False``. See the "Scaling out" guide.

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
        settings = self._settings = Settings(
            url,
            channel_prefix=channel_prefix,
            max_queued_messages=max_queued_messages,
            max_queued_bytes=max_queued_bytes,
            reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay,
            timeout=timeout,
            health_check_interval=health_check_interval,
            history_meta_ttl=history_meta_ttl,
            max_recovery_buffer=max_recovery_buffer,
            secret=secret,
            max_message_size=max_message_size,
        )
        self.stats: RedisBrokerStats = RedisBrokerStats()
        """Counters: connections, messages published, received, lost, missed."""
        stats = self.stats
        link = self._link = Link()
        # The parts, each with the few others it needs (see the package documentation).
        table = self._table = TopicTable(self._release)
        channels = self._channels = Channels(settings, link)
        outbound = self._outbound = Outbound(settings, stats, link, table)
        recoveries = self._recoveries = Recoveries(
            settings, stats, link, channels, table, self._release
        )
        control = self._control = Control(settings, stats)
        continuity = Continuity(settings, stats, table, recoveries)
        inbound = self._inbound = Inbound(
            settings, stats, channels, outbound, recoveries, table, control, continuity
        )
        parts = (settings, stats, link, channels, inbound, outbound, self._wanted_topics)
        if settings.cluster:
            from ._cluster import ClusterSession, cluster_once_client

            settings.once_client = cluster_once_client
            self._session: Session = ClusterSession(*parts, control, continuity, recoveries)
        else:
            self._session = Session(*parts, control, continuity)
        self._background: AbstractAsyncContextManager[None] | None = None
        self._tracing: Tracing | None = None
        self._presence: RedisPresence | None = None
        policy = HistoryPolicy.coerce(history)
        if policy is not None:
            self.configure_history(policy)

    def __repr__(self) -> str:
        return f"<RedisBroker {self._settings.safe_url} {self._link.state}>"

    # -- state -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Redis URL, password masked."""
        return self._settings.safe_url

    @property
    def origin(self) -> str:
        """This broker's id in the ``origin`` field of the messages it publishes."""
        return self._outbound.origin.decode()

    @property
    def state(self) -> State:
        """``"stopped"`` (not running), ``"connecting"`` (first attempt), ``"connected"``
        or ``"disconnected"`` (reconnecting)."""
        return self._link.state

    @property
    def connected(self) -> bool:
        """``True`` while both Redis connections are up and every topic is subscribed (on a
        cluster: while the broker holds a slot map and at least one master is up; the
        topics of a master that is down are not subscribed meanwhile)."""
        return self._link.state == "connected"

    @property
    def inbound_queue_bytes(self) -> int:
        """Payload bytes received from Redis and not yet fanned out to local subscribers."""
        return self._inbound.queued_bytes

    # -- the Broker protocol ---------------------------------------------------------------

    @property
    def history_policy(self) -> HistoryPolicy | None:
        """The history policy, or ``None`` when no topic keeps history."""
        return self._settings.policy

    @property
    def max_message_size(self) -> int:
        """The largest payload taken from Redis, in bytes (larger ones are dropped)."""
        return self._settings.max_message_size

    def configure_payload_limit(self, max_payload_length: int) -> None:
        """The server's ``max_payload_length``: the ``max_message_size`` of a broker
        created without one (the server calls it; an explicit option wins)."""
        if type(max_payload_length) is not int or max_payload_length < 1:
            raise ValueError("max_payload_length must be a positive integer")
        if not self._settings.size_given:
            self._settings.max_message_size = max_payload_length

    def configure_tracing(self, tracing: Tracing) -> None:
        """The server's tracing (its ``tracing`` option; the server calls it): a publish
        made while a span is current gets a ``PRODUCER`` span whose context goes with
        the message, and a received message with a context gets a ``CONSUMER`` span, its
        child (see the tracing guide)."""
        self._tracing = self._outbound.tracing = self._inbound.tracing = tracing

    def configure_history(self, policy: HistoryPolicy) -> None:
        """Keep history in Redis for the topics ``policy`` matches (once; an equal
        policy again is a no-op, another one a :class:`RuntimeError`)."""
        self._settings.policy = adopt_policy(self._settings.policy, policy)

    @property
    def presence_policy(self) -> PresencePolicy | None:
        """The presence policy, or ``None`` when no topic lists who is in it."""
        presence = self._presence
        return None if presence is None else presence.policy

    def configure_presence(self, policy: PresencePolicy) -> None:
        """List who is in the topics ``policy`` matches, in Redis (once; an equal policy
        again is a no-op, another one a :class:`RuntimeError`). Every process sharing
        the topics needs the same policy."""
        adopted = adopt_presence(self.presence_policy, policy)
        if self._presence is None:
            self._presence = RedisPresence(
                self._settings, self.stats, self._link, adopted, self._publish_event
            )

    async def presence_join(self, topic: str, member: PresenceMember) -> None:
        """List ``member`` in ``topic`` in Redis; with events on, the topic's subscribers
        on every process hear of its user's first connection. While Redis is
        unreachable, the broker lists it (and sends the event) once reconnected."""
        await self._require_presence().join(topic, member)

    async def presence_leave(self, topic: str, connection_id: str) -> None:
        """Unlist the connection from ``topic`` (idempotent); with events on, a leave
        event for its user's last connection."""
        await self._require_presence().leave(topic, connection_id)

    async def presence(self, topic: str) -> list[PresenceEntry]:
        """The connections listed in ``topic``, every process (expired entries swept
        first). Raises :class:`ConnectionError` while Redis is unreachable."""
        return await self._require_presence().entries(topic)

    async def presence_stats(self, topic: str) -> PresenceStats:
        """Connections and users in ``topic``, every process: two counters read in one
        script. Raises :class:`ConnectionError` while Redis is unreachable."""
        return await self._require_presence().stats(topic)

    def _require_presence(self) -> RedisPresence:
        presence = self._presence
        if presence is None:
            raise RuntimeError("this broker keeps no presence (see configure_presence)")
        return presence

    async def _publish_event(self, topic: str, frame: Frame, exclude: Subscriber | None) -> int:
        return await self.publish(topic, frame, exclude=exclude)

    def configure_control(self, handler: ControlHandler) -> None:
        """Hand the commands on users' connections that other processes send
        (``server.disconnect(user=...)`` and the like) to ``await handler(command)``, one
        at a time (the server calls it once, at construction). From then on each
        session subscribes to the control channel too."""
        self._control.handler = handler

    async def publish_control(self, command: UserCommand) -> None:
        """Carry ``command`` to every other process on the control channel (queued like a
        publish: never waits on Redis; lost, and counted in ``publish_lost``, while
        Redis is unreachable). This process's server has acted on it already."""
        payload = self._control.encode(command, self._outbound.origin)
        await self._outbound.publish_raw(self._settings.control_channel, payload)

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
        recoveries = self._recoveries
        if recoveries.is_recovering(topic, subscriber):
            await trio.lowlevel.checkpoint()  # the recovery under way adds it
            return NOT_RECOVERED
        history = self._settings.history_for(topic) if since is not None else None
        if since is None or history is None or self._table.is_subscribed(topic, subscriber):
            await self._subscribe_live(topic, subscriber)
            return NOT_RECOVERED
        if self._link.state != "connected":
            self.stats.recoveries_failed += 1
            await self._subscribe_live(topic, subscriber)
            return NOT_RECOVERED
        recovery = await recoveries.recover(topic, subscriber, since, history)
        if recovery is None:  # nothing old: live from now on (no checkpoint before)
            await self._subscribe_live(topic, subscriber)
            return NOT_RECOVERED
        return recovery

    async def _subscribe_live(self, topic: str, subscriber: Subscriber) -> None:
        self._table.add(topic, subscriber)
        await self._channels.join(topic)

    async def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from ``topic``; after the last local subscriber leaves,
        this process unsubscribes from the Redis channel."""
        await trio.lowlevel.checkpoint()
        self._recoveries.forget(topic, subscriber)
        self._table.discard(topic, subscriber)

    async def unsubscribe_all(self, subscriber: Subscriber) -> None:
        """Remove every subscription of ``subscriber`` (the topics it lists), and end its
        recoveries."""
        self._recoveries.forget_subscriber(subscriber)
        self._table.discard_all(subscriber)
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
        # A cancellation point every time, a scheduling point as fan-outs have them (so
        # that publications made together are written together, see TopicTable) and
        # whenever half the queue to Redis waits: a loop of publishes leaves the sender
        # its turns, and does not outrun the bounded queue.
        if self._table.pace() or self._outbound.crowded():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        tracing = self._tracing
        if tracing is not None:
            return await tracing.publish(
                self._outbound.publish, topic, frame, exclude, self._settings.policy
            )
        return await self._outbound.publish(topic, frame, exclude)

    async def publish_binary(
        self, topic: str, data: bytes, *, exclude: Subscriber | None = None
    ) -> int:
        """Publish a binary frame; see :meth:`publish`."""
        return await self.publish(topic, Frame(bytes(data), binary=True), exclude=exclude)

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
        history = self._settings.history_for(topic)
        if history is None:
            raise ValueError(f"topic {topic!r} has no history")
        await trio.lowlevel.checkpoint()
        return await self._recoveries.read(topic, history, since, limit)

    def subscriber_count(self, topic: str) -> int:
        """How many subscribers ``topic`` has **in this process** (not cluster-wide)."""
        return self._table.subscriber_count(topic)

    def _wanted_topics(self) -> list[str]:
        """The topics whose channels this process needs: those with a local subscriber,
        or one recovering."""
        table = self._table
        return table.active_topics() + [t for t in self._recoveries.recovering if t not in table]

    def _release(self, topic: str) -> None:
        """The last local subscriber of ``topic`` left: leave its Redis channel (unless a
        subscriber is recovering on it)."""
        recoveries = self._recoveries
        if topic in recoveries.recovering:
            return
        recoveries.lagging.pop(topic, None)
        self._inbound.forget(topic)
        self._channels.leave(topic)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the Redis connections, reconnecting, until cancelled.

        ``await nursery.start(broker.run)`` returns after the first connection attempt,
        whether it succeeded or not (the broker keeps retrying in the background; local
        delivery works meanwhile). A server runs this in its lifespan; a broker runs once
        at a time. With presence, it also refreshes this process's entries.
        """
        presence = self._presence
        if presence is None:
            await self._session.run(task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(self._session.run)
            nursery.start_soon(presence.maintain)
            task_status.started()

    async def flush(self) -> None:
        """Wait until every queued publish has been acknowledged by Redis or counted as
        lost (at most ``timeout`` seconds)."""
        await self._outbound.flush()

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
