"""Presence: who is subscribed to a topic, on every worker.

A topic whose name matches a pattern of the server's ``presence`` option lists the
connections subscribed to it (``ws.subscribe``)::

    WebSocketServer([chat], presence={"room:*": Presence(info=seat, events=True)})

Each is an entry: its connection id, its user id (the server's ``user_id`` option applied
to ``ctx.user``) and a small info object the app chooses (``Presence(info=fn)``, an attrs
instance encoded with the server's converter). ``await server.presence(topic)`` lists the
entries and ``await server.presence_stats(topic)`` counts them, across every process
sharing the broker. With ``events=True`` the topic's subscribers get
``{"type":"presence_join","topic":"room:a","data":{"user_id":...,"info":{...}}}`` when a
user's first connection joins and ``presence_leave`` when its last one goes.

This module holds the value types, the pattern policy, the encoding of entries and
events, and :class:`PresenceTracker`, which connections call as they subscribe,
unsubscribe and close; the brokers keep the entries (``_broker/_presence_store.py`` in
memory, ``_broker/redis/_presence.py`` in Redis).
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

import attrs
import orjson

from ._access_log import UserId, default_user_id
from ._codes import FORBIDDEN_TOPIC, INVALID_TOPIC
from ._envelope import topic_json
from ._errors import MessageError
from ._frames import Frame
from ._validation import converter

if TYPE_CHECKING:
    from ._context import Context

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_INFO_BYTES",
    "DEFAULT_PRESENCE_TTL",
    "ENTRY_COST",
    "PRESENCE_JOIN",
    "PRESENCE_LEAVE",
    "PRESENCE_TYPES",
    "Presence",
    "PresenceBroker",
    "PresenceEntry",
    "PresenceJoin",
    "PresenceLeave",
    "PresenceMember",
    "PresencePolicy",
    "PresenceStats",
    "PresenceTracker",
    "adopt_presence",
    "decode_entry",
    "event_frame",
    "user_json",
]

logger = logging.getLogger("trio_wsroutes")

T = TypeVar("T")

PRESENCE_JOIN: Final = "presence_join"
"""The wire type of a join event (reserved, like ``ack``)."""
PRESENCE_LEAVE: Final = "presence_leave"
"""The wire type of a leave event (reserved, like ``ack``)."""
PRESENCE_TYPES: Final = frozenset({PRESENCE_JOIN, PRESENCE_LEAVE})

DEFAULT_PRESENCE_TTL: Final = 30.0
"""Default :attr:`Presence.ttl`, in seconds."""
DEFAULT_MAX_ENTRIES: Final = 10_000
"""Default :attr:`Presence.max_entries`."""
DEFAULT_MAX_INFO_BYTES: Final = 512
"""Default :attr:`Presence.max_info_bytes`."""
ENTRY_COST: Final = 360
"""Bytes one entry holds in memory besides its encoded info (the member, its slots in
the topic's tables, the user's count), counted in the memory budget; measured with
tracemalloc (about 300), the rest is margin."""
_LOGGED_TOPICS: Final = 1024
"""Topics whose cap was logged as reached, remembered so that each is logged once."""

InfoFunction = Callable[["Context[Any]"], Any]
"""``fn(ctx) -> attrs instance | None`` (or an awaitable of it): a connection's info."""


# -- the public value types -------------------------------------------------------------------


def _check_ttl(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    # At least 1 s: entries are refreshed every ttl / 4 seconds.
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        raise ValueError(f"Presence ttl must be a number of seconds >= 1, not {value!r}")
    if not math.isfinite(value):
        raise ValueError("Presence ttl must be finite")


def _check_count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"Presence {attribute.name} must be an integer >= 0, not {value!r}")


def _check_info_bytes(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 4:
        raise ValueError(f"Presence max_info_bytes must be an integer >= 4, not {value!r}")


def _check_info(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"Presence info must be a function of the context, not {value!r}")


def _check_events(instance: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"Presence events must be True or False, not {value!r}")


@attrs.frozen
class Presence:
    """How a topic lists who is subscribed to it.

    ::

        @attrs.frozen
        class Seat:
            name: str

        WebSocketServer(
            [chat],
            presence={"room:*": Presence(info=lambda ctx: Seat(ctx.user.name), events=True)},
        )

    * ``info``: ``fn(ctx) -> attrs instance | None`` (sync or async), called when a
      connection subscribes; what it returns is encoded with the server's converter and
      listed with the connection. At most ``max_info_bytes`` bytes of JSON: a larger one
      makes ``ws.subscribe`` raise :class:`ValueError` (logged; the client gets no
      detail). ``None`` (the default) lists no info.
    * ``events``: send ``presence_join`` and ``presence_leave`` to the topic's
      subscribers, once per user (see :class:`PresenceJoin`). Off by default: on a topic
      with thousands of subscribers, every join reaches every one of them; poll
      :meth:`WebSocketServer.presence_stats <trio_wsroutes.WebSocketServer.presence_stats>`
      instead.
    * ``ttl``: with :class:`~trio_wsroutes.RedisBroker`, seconds after which the entries
      of a process that stopped refreshing them (killed, cut off from Redis) are gone,
      leave events included (at least 1). Each process refreshes its entries every ``ttl / 4``
      seconds; an entry lives ``3/4 * ttl`` past its last refresh, so a Redis outage
      shorter than about ``ttl / 2`` loses no entry. In memory, entries go with their
      connections and the ttl plays no part.
    * ``max_entries``: entries listed per topic; a connection subscribing past it is
      subscribed and counted in :class:`PresenceStats` (and in once-per-user events) but
      not listed, and the first time per topic a warning is logged.
    """

    info: InfoFunction | None = attrs.field(default=None, validator=_check_info)
    """``fn(ctx) -> attrs instance | None``: the info listed with a connection."""
    events: bool = attrs.field(default=False, validator=_check_events)
    """Send ``presence_join`` / ``presence_leave`` to the topic's subscribers."""
    ttl: float = attrs.field(default=DEFAULT_PRESENCE_TTL, validator=_check_ttl)
    """Seconds a stopped process's entries outlive it (Redis)."""
    max_entries: int = attrs.field(default=DEFAULT_MAX_ENTRIES, validator=_check_count)
    """Entries listed per topic (more are counted, not listed)."""
    max_info_bytes: int = attrs.field(default=DEFAULT_MAX_INFO_BYTES, validator=_check_info_bytes)
    """The largest info, in bytes of JSON."""


@attrs.frozen
class PresenceEntry:
    """One connection listed in a topic: what :meth:`WebSocketServer.presence
    <trio_wsroutes.WebSocketServer.presence>` returns, one per listed connection, in no
    particular order."""

    connection_id: str
    """The connection's id (``ws.id``)."""
    user_id: str | int | None
    """Its user id (the server's ``user_id`` option applied to ``ctx.user``), or
    ``None`` for a connection without one."""
    info: Any
    """The info of :attr:`Presence.info`, as JSON decoded (a ``dict`` for an attrs
    instance), or ``None``. :meth:`info_as` structures it back into its class."""

    def info_as(self, cls: type[T]) -> T:
        """:attr:`info` as an instance of ``cls`` (with the server's converter)."""
        return converter.structure(self.info, cls)


@attrs.frozen
class PresenceStats:
    """How many are in a topic: what :meth:`WebSocketServer.presence_stats
    <trio_wsroutes.WebSocketServer.presence_stats>` returns."""

    clients: int
    """Connections subscribed (listed or not, every process)."""
    users: int
    """Distinct users among them (a connection without a user id counts as one)."""


@attrs.frozen
class PresenceJoin:
    """A user's first connection joined ``topic``: the ``presence_join`` envelope, as the
    Python client (:mod:`trio_wsroutes.client`) decodes it.

    On the wire::

        {"type": "presence_join", "topic": "room:a", "data": {"user_id": "u1", "info": {...}}}

    Sent to the topic's subscribers but the joining connection (which knows, and reads
    who else is there with ``ws.presence(topic)``) when its :class:`Presence` has
    ``events=True``; once per user, whatever the number of its connections, on every
    worker. Declare it in a route's ``.server_messages(...)`` so
    that type checkers know ``client.receive()`` may return it; the client decodes it on
    any route. The server sends it itself: ``ws.send`` refuses it.
    """

    topic: str
    """The topic joined."""
    user_id: str | int | None
    """The user who joined (``None``: a connection without a user id)."""
    info: Any
    """The info of the connection that joined, as JSON decoded, or ``None``."""


@attrs.frozen
class PresenceLeave:
    """A user's last connection left ``topic``: the ``presence_leave`` envelope (see
    :class:`PresenceJoin`), also when its process stopped and its entries expired."""

    topic: str
    """The topic left."""
    user_id: str | int | None
    """The user who left."""
    info: Any
    """The info of the user's last connection there, as JSON decoded, or ``None``."""


# Tagged with their wire types by hand: ``@message`` refuses reserved names.
PresenceJoin.__wsroutes_message_type__ = PRESENCE_JOIN  # type: ignore[attr-defined]
PresenceLeave.__wsroutes_message_type__ = PRESENCE_LEAVE  # type: ignore[attr-defined]
PresenceJoin.__wsroutes_framework_message__ = True  # type: ignore[attr-defined]
PresenceLeave.__wsroutes_framework_message__ = True  # type: ignore[attr-defined]


# -- the policy -------------------------------------------------------------------------------


def _rules(
    value: Mapping[str, Presence] | Iterable[tuple[str, Presence]],
) -> tuple[tuple[str, Presence], ...]:
    if isinstance(value, Mapping):
        items = list(cast("Mapping[object, object]", value).items())
    else:
        items = list(cast("Iterable[tuple[object, object]]", value))
    rules: list[tuple[str, Presence]] = []
    for pattern, presence in items:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"presence patterns are non-empty strings, not {pattern!r}")
        if not isinstance(presence, Presence):
            raise TypeError(f"presence[{pattern!r}] must be a Presence, not {presence!r}")
        rules.append((pattern, presence))
    return tuple(rules)


_MATCH_CACHE_SIZE: Final = 4096


@attrs.frozen
class PresencePolicy:
    """Which topics list who is in them: ``fnmatch`` patterns (case-sensitive; ``*``
    matches any characters, ``:`` included) mapped to :class:`Presence`, in order; the
    first pattern that matches a topic wins. The server's ``presence`` option makes one
    from a mapping."""

    rules: tuple[tuple[str, Presence], ...] = attrs.field(converter=_rules)
    """``(pattern, Presence)`` pairs, first match wins."""
    _compiled: tuple[tuple[re.Pattern[str], Presence], ...] = attrs.field(
        init=False, eq=False, repr=False
    )
    _cache: dict[str, Presence | None] = attrs.field(
        init=False, eq=False, repr=False, factory=lambda: dict[str, Presence | None]()
    )

    def __attrs_post_init__(self) -> None:
        compiled = tuple((re.compile(fnmatch.translate(p)), h) for p, h in self.rules)
        object.__setattr__(self, "_compiled", compiled)  # frozen: set once, here

    @classmethod
    def coerce(
        cls, value: PresencePolicy | Mapping[str, Presence] | None
    ) -> PresencePolicy | None:
        """The policy for a server's ``presence`` option: a :class:`PresencePolicy` as it
        is, a mapping of patterns to :class:`Presence` made into one, ``None`` (or an
        empty mapping) for none."""
        if value is None or isinstance(value, PresencePolicy):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                f"presence must map topic patterns to Presence, not {type(value).__name__}"
            )
        return cls(value) if value else None

    @property
    def events(self) -> bool:
        """Whether some pattern sends join and leave events."""
        return any(presence.events for _, presence in self.rules)

    @property
    def shortest_ttl(self) -> float:
        """The smallest ``ttl`` of the patterns."""
        return min(presence.ttl for _, presence in self.rules)

    def match(self, topic: str) -> Presence | None:
        """The :class:`Presence` of ``topic``, or ``None`` when it lists nobody."""
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        found: Presence | None = None
        for pattern, presence in self._compiled:
            if pattern.match(topic) is not None:
                found = presence
                break
        if len(cache) >= _MATCH_CACHE_SIZE:
            cache.clear()  # bounded; the hot topics come back at once
        cache[topic] = found
        return found


def adopt_presence(current: PresencePolicy | None, policy: object) -> PresencePolicy:
    """The policy a broker keeps after ``configure_presence(policy)``: once; the same
    policy again is a no-op, another one an error."""
    if not isinstance(policy, PresencePolicy):
        raise TypeError(f"expected a PresencePolicy, not {type(policy).__name__}")
    if current is not None and current != policy:
        raise RuntimeError("this broker's presence is already configured with another policy")
    return policy


# -- entries and events, encoded ---------------------------------------------------------------


class _Subscriber(Protocol):
    """A broker's subscriber (:class:`~trio_wsroutes.Subscriber`), as presence keeps it."""

    @property
    def topics(self) -> Collection[str]: ...

    def deliver(self, frame: Frame) -> bool: ...


class PresenceMember:
    """One connection in one topic, as brokers keep it: its ids and its entry encoded
    once, when it subscribes."""

    __slots__ = (
        "announced",
        "connection_id",
        "entry",
        "info",
        "listed",
        "subscriber",
        "user_id",
        "user_key",
    )

    def __init__(
        self,
        connection_id: str,
        user_id: str | int | None,
        info: bytes,
        subscriber: _Subscriber | None = None,
    ) -> None:
        self.connection_id: str = connection_id
        self.subscriber: _Subscriber | None = subscriber
        """The connection, skipped by its own join event."""
        self.user_id: str | int | None = user_id
        self.info: bytes = info
        """The info as JSON (``null`` without one)."""
        # A connection without a user id is a user of its own: "#" never starts JSON.
        self.user_key: str = (
            "#" + connection_id if user_id is None else orjson.dumps(user_id).decode()
        )
        """What tells users apart: the user id as JSON, or ``#<connection id>``."""
        self.entry: bytes = b"[%s,%s]" % (user_json(self.user_key), info)
        """``[user_id, info]`` as JSON: the entry listed under the connection id."""
        self.listed: bool = False
        """Whether it is listed (not over the topic's ``max_entries``)."""
        self.announced: bool = False
        """Whether its join was decided on (its event sent, or not needed)."""

    @property
    def size(self) -> int:
        """Bytes it holds, for the memory budget."""
        return ENTRY_COST + len(self.entry) + len(self.user_key)


def user_json(user_key: str) -> bytes:
    """The user id of a user key as JSON (``null`` for a connection without one)."""
    return b"null" if user_key.startswith("#") else user_key.encode()


def decode_entry(connection_id: str, entry: bytes) -> PresenceEntry | None:
    """A :class:`PresenceEntry` from its stored JSON, or ``None`` if it is not one."""
    try:
        value: object = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    items = cast("list[object]", value)
    if len(items) != 2:
        return None
    raw, info = items
    user_id: str | int | None
    if raw is None or (isinstance(raw, str | int) and not isinstance(raw, bool)):
        user_id = raw
    else:
        return None
    return PresenceEntry(connection_id, user_id, info)


def event_frame(kind: str, topic: str, user: bytes, info: bytes, *, with_topic: bool) -> Frame:
    """The ``presence_join`` / ``presence_leave`` envelope. ``with_topic`` is ``False`` on
    a topic with history, whose publications get ``topic`` with their position."""
    data = b'{"user_id":%s,"info":%s}' % (user, info or b"null")
    if with_topic:
        return Frame(
            b'{"type":"%s","topic":%s,"data":%s}' % (kind.encode(), topic_json(topic), data)
        )
    return Frame(b'{"type":"%s","data":%s}' % (kind.encode(), data))


# -- what the server and its connections use ---------------------------------------------------


class PresenceBroker(Protocol):
    """What a broker offers for presence (:class:`~trio_wsroutes.MemoryBroker` and
    :class:`~trio_wsroutes.RedisBroker` both do)."""

    def configure_presence(self, policy: PresencePolicy) -> None: ...

    async def presence_join(self, topic: str, member: PresenceMember) -> None: ...

    async def presence_leave(self, topic: str, connection_id: str) -> None: ...

    async def presence(self, topic: str) -> list[PresenceEntry]: ...

    async def presence_stats(self, topic: str) -> PresenceStats: ...


class _Subscribing(_Subscriber, Protocol):
    """What :class:`PresenceTracker` reads of a connection (a broker's subscriber)."""

    @property
    def id(self) -> str: ...

    @property
    def context(self) -> Context[Any]: ...


SubscribeCheck = Callable[[Any, str, Any], Any]


class PresenceTracker:
    """The server's presence: makes a connection's entry when it subscribes, and hands
    joins, leaves and reads to the broker."""

    __slots__ = ("_user_id", "broker", "policy")

    def __init__(
        self, policy: PresencePolicy, broker: PresenceBroker, user_id: UserId | None = None
    ) -> None:
        self.policy: PresencePolicy = policy
        self.broker: PresenceBroker = broker
        self._user_id: UserId = user_id if user_id is not None else default_user_id

    def presence_of(self, topic: str) -> Presence:
        """``topic``'s :class:`Presence`; :class:`ValueError` if it has none."""
        presence = self.policy.match(topic) if isinstance(topic, str) else None
        if presence is None:
            raise ValueError(f"topic {topic!r} has no presence (see the server's presence option)")
        return presence

    async def member(self, topic: str, connection: _Subscribing) -> PresenceMember | None:
        """The entry of ``connection`` in ``topic``, or ``None`` if the topic lists
        nobody. Raises :class:`ValueError` for an info over ``max_info_bytes`` (logged),
        :class:`TypeError` for one that is not an attrs instance or a bad user id."""
        presence = self.policy.match(topic)
        if presence is None:
            return None
        context = connection.context
        user_id: object = self._user_id(context.user)
        if user_id is not None and (
            isinstance(user_id, bool) or not isinstance(user_id, str | int)
        ):
            raise TypeError(
                f"the server's user_id function returned {type(user_id).__name__}: "
                "presence needs a str, an int or None"
            )
        info = b"null"
        if presence.info is not None:
            value: object = presence.info(context)
            if inspect.isawaitable(value):
                value = await cast("Awaitable[object]", value)
            if value is not None:
                if not attrs.has(type(value)):
                    raise TypeError(
                        f"the presence info function of topic {topic!r} returned a "
                        f"{type(value).__qualname__}: it returns an attrs instance or None"
                    )
                info = orjson.dumps(converter.unstructure(value))
                if len(info) > presence.max_info_bytes:
                    logger.warning(
                        "presence: connection %s refused on topic %r: its info is %d bytes "
                        "of JSON, over max_info_bytes=%d",
                        connection.id,
                        topic,
                        len(info),
                        presence.max_info_bytes,
                    )
                    raise ValueError(
                        f"presence info for topic {topic!r} is {len(info)} bytes of JSON, "
                        f"over max_info_bytes={presence.max_info_bytes}"
                    )
        return PresenceMember(connection.id, user_id, info, connection)

    async def join(self, topic: str, member: PresenceMember) -> None:
        """List ``member`` in ``topic`` (the connection is subscribed)."""
        await self.broker.presence_join(topic, member)

    async def leave(self, topic: str, connection_id: str) -> None:
        """Unlist the connection from ``topic`` (idempotent)."""
        if self.policy.match(topic) is not None:
            await self.broker.presence_leave(topic, connection_id)

    async def leave_all(self, connection_id: str, topics: Iterable[str]) -> None:
        """Unlist the connection from every topic of ``topics`` with presence."""
        for topic in topics:
            await self.leave(topic, connection_id)

    async def check_visible(
        self, connection: _Subscribing, topic: str, check: SubscribeCheck | None, max_length: int
    ) -> None:
        """Let a connection read the presence of ``topic`` only if it may subscribe to it:
        it is subscribed, or ``check`` (the route's ``authorize_subscribe``) allows it.
        Raises :class:`MessageError` (``INVALID_TOPIC``, ``FORBIDDEN_TOPIC``) otherwise."""
        if not isinstance(topic, str):
            raise TypeError("topic must be a string")
        if not 0 < len(topic) <= max_length:
            raise MessageError(f"Topic names are 1 to {max_length} characters", INVALID_TOPIC)
        self.presence_of(topic)
        if check is None or topic in connection.topics:
            return
        allowed = check(connection, topic, connection.context)
        if inspect.isawaitable(allowed):
            allowed = await cast("Awaitable[object]", allowed)
        if not allowed:
            raise MessageError("Not allowed to see this topic", FORBIDDEN_TOPIC)

    async def entries(self, topic: str) -> list[PresenceEntry]:
        """Who is listed in ``topic``, every process."""
        self.presence_of(topic)
        return await self.broker.presence(topic)

    async def stats(self, topic: str) -> PresenceStats:
        """How many are in ``topic``, every process."""
        self.presence_of(topic)
        return await self.broker.presence_stats(topic)


class OverCapLog:
    """Logs once per topic (for a bounded number of topics) that its ``max_entries``
    was reached."""

    __slots__ = ("_topics",)

    def __init__(self) -> None:
        self._topics: dict[str, None] = {}

    def note(self, topic: str, presence: Presence) -> None:
        """A connection of ``topic`` was counted but not listed."""
        if topic in self._topics:
            return
        if len(self._topics) >= _LOGGED_TOPICS:
            del self._topics[next(iter(self._topics))]
        self._topics[topic] = None
        logger.warning(
            "presence: topic %r has reached max_entries=%d; further connections are "
            "counted but not listed",
            topic,
            presence.max_entries,
        )
