"""``Connection``: one WebSocket connection as handlers see it, and what runs it.

::

    transport.receive() -> [reader] -> inbox ----------> [dispatcher] -> handlers
                                                           |
    transport.send()    <- [writer] <- outbox <------------+-- ws.send / publish / replies

One Trio nursery per connection, three tasks: the reader (``inbound.py``), the writer
(``outbound.py``) and the dispatcher (``dispatch.py``, the connection's own task). Each
is a layer of the connection's class, in its own module (see ``outbound.py`` for why
they are one object at run time); the close state is ``closing.py``'s. This layer keeps
the handler-facing API and the topics the connection is subscribed to: it is the one
owner of its membership.

The engine talks to the network only through :class:`~trio_wsroutes._transports.Transport`
and reads its settings only from a frozen :class:`~trio_wsroutes._spec.RouteSpec`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import trio

from .._codes import FORBIDDEN_TOPIC, INVALID_TOPIC, TOO_MANY_TOPICS, CloseCode
from .._context import Context
from .._errors import MessageError
from .._flow import Inbox, MemoryBudget, RecoveryLimiter
from .._frames import Frame
from .._history import NOT_RECOVERED, Position, Recovery
from .._metrics import ConnectionCounts, RouteCounters
from .._presence import PresenceEntry, PresenceMember, PresenceStats, PresenceTracker
from .._spec import RouteSpec
from .._stats import ServerStats
from .._transports import Transport, TransportClosed
from .closing import CloseEvent
from .dispatch import Dispatch
from .inbound import InboundItem
from .refresh import TokenRefresh

if TYPE_CHECKING:
    from .._broker import Broker
    from .._request import Request
    from .._tracing import MessageTracing

__all__ = [
    "Connection",
    "close_now",
    "connection_counts",
    "new_context",
    "run_connection",
    "subscribe_by_server",
]

logger = logging.getLogger("trio_wsroutes")

ServerT_contra = TypeVar("ServerT_contra", contravariant=True)

# Task names shared by every connection (Trio would otherwise build a string per task).
_WRITER_TASK: Final = "trio_wsroutes connection writer"
_READER_TASK: Final = "trio_wsroutes connection reader"
_REFRESH_TASK: Final = "trio_wsroutes token refresh"
_NO_TOPICS: Final[frozenset[str]] = frozenset()
"""A connection's topics until its first subscription (an empty set costs 216 bytes)."""
_GOODBYE_TIMEOUT: Final = 1.0
"""Seconds a connection cancelled from outside may take to send its 1001."""
_SUBSCRIPTION_COST: Final = 400
"""Bytes a subscription holds besides its topic name (the connection's set, the broker's
table), counted in the memory budget; measured with tracemalloc (about 340 since the
broker keeps no reverse index: the rest is margin)."""


class Connection(Dispatch, Generic[ServerT_contra]):
    """One WebSocket connection, as handlers see it.

    ``Connection[ServerMessage]`` accepts only ``ServerMessage`` in :meth:`send` and
    :meth:`publish`. Methods that may wait are async. The server creates connections;
    handlers receive them.
    """

    __trio_wsroutes_connection__ = True  # how route checks know Connection[...] annotations

    __slots__ = (
        "_broker",
        "_on_gone",
        "_presence",
        "_recoveries",
        "_since",
        "_subscribed_bytes",
        "_topics",
        "_topics_snapshot",
        "subprotocol",
    )

    def __init__(
        self,
        *,
        transport: Transport,
        spec: RouteSpec,
        context: Context[Any],
        broker: Broker,
        stats: ServerStats | None = None,
        budget: MemoryBudget | None = None,
        recoveries: RecoveryLimiter | None = None,
        subprotocol: str | None = None,
        since: dict[str, Position] | None = None,
        on_gone: Callable[[Connection[Any]], None] = lambda _: None,
        counters: RouteCounters | None = None,
        tracing: MessageTracing | None = None,
        presence: PresenceTracker | None = None,
        refresh: TokenRefresh | None = None,
    ) -> None:
        super().__init__(
            transport,
            spec,
            context,
            budget=budget if budget is not None else MemoryBudget(),
            stats=stats if stats is not None else ServerStats(),
            counters=counters,
            tracing=tracing,
        )
        self.subprotocol: str | None = subprotocol
        """The subprotocol selected at the upgrade, if the route declares any."""
        self._broker = broker
        self._on_gone = on_gone
        self._recoveries = recoveries
        self._presence = presence
        # Made when needed (most connections name no position, many never subscribe).
        self._since: dict[str, Position] | None = since or None
        self._topics: set[str] | frozenset[str] = _NO_TOPICS
        self._topics_snapshot: frozenset[str] | None = None  # what ``topics`` returned
        self._subscribed_bytes = 0  # held by subscriptions, in the memory budget
        self._refresh = refresh

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Connection {self.id} {self._spec.path!r} {state}>"

    # -- public API --------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The route path this connection came in on (the pattern, e.g. ``/chat/:room``)."""
        return self._spec.path

    @property
    def user(self) -> Any:
        """Shortcut for ``ws.context.user``."""
        return self.context.user

    @property
    def topics(self) -> frozenset[str]:
        """The topics this connection is subscribed to."""
        # The same snapshot until they change: the broker reads it too (the connection
        # is the one owner of its membership), and a loop may unsubscribe while iterating.
        snapshot = self._topics_snapshot
        if snapshot is None:
            snapshot = self._topics_snapshot = frozenset(self._topics)
        return snapshot

    async def send(self, message: ServerT_contra) -> None:
        """Send a server message to this client.

        Waits while more than ``backpressure_limit`` bytes are queued for this client.
        Raises :class:`ConnectionClosed` if the connection has closed.
        """
        frame = self._encode(message)
        self._counters.sent_message(type(message))
        await self._send_frame(frame)

    async def send_binary(self, data: bytes) -> None:
        """Send a binary frame; waits like :meth:`send`."""
        await self._send_frame(Frame(bytes(data), binary=True))

    async def send_text(self, text: str) -> None:
        """Send a raw text frame, not an envelope (for clients that speak another
        protocol; see ``on_text``); waits like :meth:`send`."""
        if not isinstance(text, str):
            raise TypeError("send_text takes a str")
        await self._send_frame(Frame(text.encode()))

    async def publish(
        self, topic: str, message: ServerT_contra, *, include_self: bool = False
    ) -> int:
        """Publish to every subscriber of ``topic``, skipping this connection unless
        ``include_self``. The message is encoded once. Returns the local recipient count.
        Subscribers get what is published before this task yields in one write (see
        :meth:`WebSocketServer.publish <trio_wsroutes.WebSocketServer.publish>`).
        """
        self._stats.publishes += 1
        return await self._broker.publish(
            topic, self._encode(message), exclude=None if include_self else self
        )

    async def publish_binary(self, topic: str, data: bytes, *, include_self: bool = False) -> int:
        """Publish a binary frame to ``topic``; see :meth:`publish`."""
        self._stats.publishes += 1
        return await self._broker.publish(
            topic, Frame(bytes(data), binary=True), exclude=None if include_self else self
        )

    async def subscribe(self, topic: str, *, since: Position | None = None) -> Recovery:
        """Subscribe to ``topic``; subscriptions end when the connection closes.

        On a topic with history (the server's ``history`` option), a position, either
        ``since`` or the one the client named for ``topic`` in the upgrade request (its
        ``since`` query parameter), makes the subscription recover: every kept
        publication after that position is sent first, in order, then the live ones,
        with no gap and no duplicate, and the result is ``Recovery(True, missed)``. If the
        epoch differs or the history no longer reaches back, nothing old is sent and the
        result is ``Recovery(False, 0)``: send the app's own snapshot then. Without a
        position: ``Recovery(False, 0)``.

        A recovery goes through the backpressure limit like any publish, except that it
        never drops a message: one that does not fit closes the connection with 1013,
        once those that fitted are sent (the client reconnects and recovers from where
        it got to). A recovery sends at most the server's ``max_recovery`` publications
        (a client that missed more is not recovered), and what recoveries send to one
        client address is limited by ``recovery_rate``: past it, ``Recovery(False, 0)``.

        Raises :class:`MessageError` (``INVALID_TOPIC``, ``TOO_MANY_TOPICS``,
        ``FORBIDDEN_TOPIC``) past the server's ``max_topic_length`` and
        ``max_topics_per_connection`` (or its ``memory_budget``), or when the route's
        ``authorize_subscribe`` says no; raised in a handler, it reaches the client as an
        error envelope.
        """
        return await self._subscribe(topic, since, authorize=True)

    async def _subscribe(self, topic: str, since: Position | None, *, authorize: bool) -> Recovery:
        if not isinstance(topic, str):
            raise TypeError("topic must be a string")
        self._check_open()
        options = self._spec.options
        if not 0 < len(topic) <= options.max_topic_length:
            raise MessageError(
                f"Topic names are 1 to {options.max_topic_length} characters", INVALID_TOPIC
            )
        new = topic not in self._topics
        if new and len(self._topics) >= options.max_topics_per_connection:
            raise MessageError(
                f"At most {options.max_topics_per_connection} subscriptions per connection",
                TOO_MANY_TOPICS,
            )
        if new and self._budget.exceeded:
            raise MessageError("The server cannot take more subscriptions now", TOO_MANY_TOPICS)
        check = self._spec.authorize_subscribe if authorize else None
        if check is not None and new:
            allowed = check(self, topic, self.context)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                raise MessageError("Not allowed to subscribe to this topic", FORBIDDEN_TOPIC)
            self._check_open()
        presence = self._presence
        member = None
        if presence is not None and new:
            member = await presence.member(topic, self)  # may refuse: before anything
            self._check_open()
        # A position named in the upgrade request is used once: a later subscribe to the
        # same topic on this connection starts live.
        position = since
        if position is None and self._since is not None:
            position = self._since.pop(topic, None)
        topics = self._topics
        if topic not in topics:
            # Listed before the broker is asked: what the broker holds is always listed.
            if isinstance(topics, frozenset):
                topics = self._topics = set()
            topics.add(topic)
            self._topics_snapshot = None
            cost = _SUBSCRIPTION_COST + len(topic)
            self._subscribed_bytes += cost
            self._budget.take(cost)
        limiter = self._recoveries
        address = self._address()
        if position is not None and limiter is not None and not limiter.allows(address):
            position = None  # this address has had its share of recoveries for now
            self._stats.recoveries_limited += 1
        if position is None:
            await self._broker.subscribe(topic, self)
            if member is not None:
                await self._present(topic, member)
            return NOT_RECOVERED
        self._recovering = True
        self._recovered_bytes = 0
        try:
            recovery = await self._broker.subscribe(topic, self, since=position)
        finally:
            self._recovering = False
        if member is not None:
            await self._present(topic, member)
        if limiter is not None:
            limiter.charge(address, recovery.missed, self._recovered_bytes)
        stats = self._stats
        if recovery.recovered:
            stats.recoveries += 1
            stats.recovered_messages += recovery.missed
        else:
            stats.recoveries_failed += 1
        return recovery

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe from ``topic`` (no error if not subscribed)."""
        await self._broker.unsubscribe(topic, self)
        # Unlisted only once the broker has let go (a cancelled unsubscribe keeps it).
        topics = self._topics
        if topic in topics and isinstance(topics, set):
            topics.discard(topic)
            self._topics_snapshot = None
            cost = _SUBSCRIPTION_COST + len(topic)
            self._subscribed_bytes -= cost
            self._budget.release(cost)
            if self._presence is not None:
                await self._presence.leave(topic, self.id)

    async def presence(self, topic: str) -> list[PresenceEntry]:
        """Who is in ``topic`` (every worker): one :class:`PresenceEntry` per listed
        connection (see the server's ``presence`` option and
        :meth:`WebSocketServer.presence <trio_wsroutes.WebSocketServer.presence>`).

        A connection sees the presence of the topics it may subscribe to: those it is
        subscribed to, and those the route's ``authorize_subscribe`` allows. Raises
        :class:`MessageError` (``FORBIDDEN_TOPIC``, ``INVALID_TOPIC``) otherwise, and
        :class:`ValueError` for a topic without presence.
        """
        tracker = await self._presence_of(topic)
        return await tracker.entries(topic)

    async def presence_stats(self, topic: str) -> PresenceStats:
        """How many connections and distinct users are in ``topic`` (every worker);
        checked as :meth:`presence` is."""
        tracker = await self._presence_of(topic)
        return await tracker.stats(topic)

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the connection after the frames already queued are sent.

        Handlers of this connection are cancelled once the close frame is out.
        """
        self._advance(CloseEvent.CLOSE, code, reason)
        await trio.lowlevel.checkpoint()

    # -- internals ---------------------------------------------------------------------

    async def _present(self, topic: str, member: PresenceMember) -> None:
        """List this connection in ``topic``, once subscribed."""
        tracker = self._presence
        assert tracker is not None
        await tracker.join(topic, member)
        if self.closed or topic not in self._topics:
            # Closed or unsubscribed meanwhile (from another task): take it back.
            with trio.CancelScope(shield=True):
                await tracker.leave(topic, self.id)

    async def _presence_of(self, topic: str) -> PresenceTracker:
        tracker = self._presence
        if tracker is None:
            raise ValueError(f"topic {topic!r} has no presence (see the server's presence option)")
        await tracker.check_visible(
            self, topic, self._spec.authorize_subscribe, self._spec.options.max_topic_length
        )
        return tracker

    def _address(self) -> str:
        client = self.context.request.client
        return client[0] if client is not None else ""

    def _overflow(self, *, flush: bool) -> None:
        """Evicted as a slow consumer: close with 1013 and leave the registry at once;
        the queued frames are dropped, or with ``flush`` sent first (within
        ``close_timeout``). The broker drops it from its topics once ``deliver`` has
        returned ``False``, reading ``topics``: they stay listed until the end."""
        logger.warning("evicting slow consumer %s: %d bytes queued", self.id, self.buffered_amount)
        super()._overflow(flush=flush)
        self._on_gone(self)

    def lost_publications(self, topic: str) -> None:
        """The broker lost publications on ``topic`` (a topic with history) on their way
        to this process: close with 1012 once what is queued is sent, and leave the
        registry at once, so that the client reconnects and resumes ``topic`` from its
        position, recovering what it missed or hearing ``recovered=False``, rather than
        go on past a gap. The broker drops its subscriptions, as for a slow consumer."""
        if self._close.code is not None:
            return
        logger.info("closing %s: publications on %r were lost on their way", self.id, topic)
        self._advance(CloseEvent.CLOSE, CloseCode.SERVICE_RESTART, "missed publications")
        self._on_gone(self)

    def _expired(self, reason: str) -> None:
        """No valid token came in time (or a refused one): close with 3000."""
        logger.info("closing %s: %s", self.id, reason)
        self._advance(CloseEvent.CLOSE, CloseCode.UNAUTHORIZED, reason)

    def _set_user(self, user: Any) -> None:
        """A new token was accepted: ``ctx.user`` is the user it gave (same id)."""
        self.context._user = user  # pyright: ignore[reportPrivateUsage]

    def _forget_topics(self) -> None:
        """The broker has dropped every subscription: forget them, give their memory
        back."""
        self._topics = _NO_TOPICS
        self._topics_snapshot = None
        self._budget.release(self._subscribed_bytes)
        self._subscribed_bytes = 0

    async def _run(self) -> None:
        """Run the connection until it closes; ``on_close`` runs exactly once."""
        spec = self._spec
        inbox: Inbox[InboundItem] = Inbox()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._write, name=_WRITER_TASK)
                nursery.start_soon(self._read, inbox, name=_READER_TASK)
                if self._refresh is not None:
                    nursery.start_soon(
                        self._refresh.run,
                        self._enqueue,
                        self._expired,
                        self._set_user,
                        name=_REFRESH_TASK,
                    )
                await self._dispatch(inbox)
        except trio.Cancelled:
            # Cancelled from outside (the connection ends its own nursery itself): the
            # server is going away without having closed it. Say so, briefly.
            steps = self._close.advance(
                CloseEvent.CANCELLED, CloseCode.GOING_AWAY, "server shutdown"
            )
            if steps.send_goodbye:
                with trio.CancelScope(shield=True), trio.move_on_after(_GOODBYE_TIMEOUT):
                    try:
                        await self._transport.close(CloseCode.GOING_AWAY, "server shutdown")
                    except TransportClosed:
                        pass
            raise
        finally:
            self._stats.connections_closed += 1
            self._close.advance(CloseEvent.ENDED)
            self._drop_outbound()
            self._release_inbox()  # what the inbox still held
            self._on_gone(self)
            # Most connections of a busy server never subscribe and have no on_close:
            # their end needs no shielded scope (a tenth of a handshake's scopes).
            if self._topics or spec.on_close is not None:
                with trio.CancelScope(shield=True):
                    await self._leave_and_say_goodbye(spec)

    async def _leave_and_say_goodbye(self, spec: RouteSpec) -> None:
        """Leave every topic (the broker, presence), then call ``on_close``."""
        if self._topics:  # the broker holds only what is listed here (see _subscribe)
            try:
                await self._broker.unsubscribe_all(self)  # it reads self.topics
            finally:
                try:
                    if self._presence is not None:
                        await self._presence.leave_all(self.id, tuple(self._topics))
                finally:
                    self._forget_topics()
        if spec.on_close is not None:
            with trio.move_on_after(spec.options.close_timeout):
                state = self._close
                assert state.code is not None
                await self._call(
                    "on_close", spec.on_close(self, state.code, state.reason, self.context)
                )


def connection_counts(connection: Connection[Any]) -> ConnectionCounts:
    """``connection``'s counts: read at the end for the access log and the route's
    totals, and for open connections when the metrics are read."""
    c = connection
    return ConnectionCounts(
        c._received,  # pyright: ignore[reportPrivateUsage]
        c._received_bytes,  # pyright: ignore[reportPrivateUsage]
        c._sent + c._sent_other,  # pyright: ignore[reportPrivateUsage]
        c._sent_direct + c._sent_other,  # pyright: ignore[reportPrivateUsage]
        c._sent_bytes,  # pyright: ignore[reportPrivateUsage]
        c._close.code,  # pyright: ignore[reportPrivateUsage]
        c._close.by,  # pyright: ignore[reportPrivateUsage]
    )


def new_context(connection_id: str, user: Any, request: Request) -> Context[Any]:
    """A fresh context for an accepted connection."""
    return Context(
        connection_id=connection_id,
        connected_at=datetime.now(UTC),
        user=user,
        request=request,
    )


def run_connection(connection: Connection[Any]) -> Coroutine[Any, Any, None]:
    """Run an accepted connection until it ends (the server's entry into the engine):
    await what it returns. Not a coroutine function itself, so that the connection's
    task has no frame of its own here for the connection's whole life."""
    return connection._run()  # pyright: ignore[reportPrivateUsage]


async def subscribe_by_server(connection: Connection[Any], topic: str) -> None:
    """Subscribe ``connection`` to ``topic`` on the server's own decision
    (``server.subscribe(user=...)``): the route's ``authorize_subscribe`` is not asked,
    every limit still applies."""
    await connection._subscribe(topic, None, authorize=False)  # pyright: ignore[reportPrivateUsage]


def close_now(connection: Connection[Any], code: int, reason: str) -> None:
    """Close ``connection`` at once: queued frames are dropped and a send in progress is
    cancelled, so the close frame goes out next (server shutdown)."""
    connection._advance(CloseEvent.CLOSE_NOW, code, reason)  # pyright: ignore[reportPrivateUsage]
