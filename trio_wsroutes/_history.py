"""History and recovery: bounded per-topic history, stream positions, ``since`` values.

A topic whose name matches a pattern of the server's ``history`` option keeps its last
publications (``History(size, ttl)``), and every text publication on it carries its
position in the envelope::

    {"type": "message", "data": {...}, "topic": "room:a", "offset": 7, "epoch": "Xk3..."}

``offset`` grows by 1 per publication on that topic; ``epoch`` names one unbroken run of
offsets and changes when the topic's history is lost (a restarted process for
:class:`~trio_wsroutes.MemoryBroker`, a flushed or restarted Redis for
:class:`~trio_wsroutes.RedisBroker`). A client that names its last position
(``since=TOPIC@EPOCH:OFFSET`` in the upgrade request, or ``subscribe(topic, since=...)``)
gets every publication after it, then the live ones, with no gap and no duplicate, or
``Recovery(recovered=False, missed=0)`` and nothing old when that is impossible.

This module holds the value types, the pattern policy and the ``since`` parser; the
brokers keep the history, and ``_envelope.py`` writes positions into envelopes.
"""

from __future__ import annotations

import fnmatch
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

import attrs

# The splice that writes a position into an envelope, for the brokers.
from ._envelope import envelope_head as envelope_head
from ._envelope import position_tail as position_tail
from ._envelope import topic_json as topic_json
from ._frames import Frame

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_RECOVERY",
    "DEFAULT_MAX_TOPICS",
    "DEFAULT_TOPIC_MAX_BYTES",
    "MAX_OFFSET",
    "MAX_SINCE_LENGTH",
    "MAX_SINCE_VALUES",
    "NOT_RECOVERED",
    "History",
    "HistoryPage",
    "HistoryPolicy",
    "Position",
    "Publication",
    "Recovery",
    "format_since",
    "is_epoch",
    "new_epoch",
    "parse_since",
]

MAX_OFFSET: Final = 2**53 - 1
"""The largest offset: JavaScript's ``Number.MAX_SAFE_INTEGER``, so that browser clients
read every offset exactly."""
MAX_SINCE_VALUES: Final = 100
"""Default bound on the ``since`` values of one upgrade request."""
MAX_SINCE_LENGTH: Final = 512
"""Default bound on the length of one ``since`` value (topic, epoch and offset)."""
DEFAULT_MAX_TOPICS: Final = 10_000
"""Default bound on the topics with history kept by one in-process broker."""
DEFAULT_TOPIC_MAX_BYTES: Final = 4 * 1024 * 1024
"""Default bound on the bytes of history one topic keeps (:attr:`History.max_bytes`)."""
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
"""Default bound on the bytes of history one in-process broker keeps, all topics
together (:attr:`HistoryPolicy.max_bytes`)."""
DEFAULT_MAX_RECOVERY: Final = 300
"""Default bound on the publications one recovery sends (:attr:`HistoryPolicy.max_recovery`)."""

_EPOCH: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_epoch() -> str:
    """A fresh random epoch: 8 random bytes, URL-safe base64 (11 characters)."""
    return secrets.token_urlsafe(8)


def is_epoch(value: str) -> bool:
    """Whether ``value`` can be an epoch: 1 to 64 characters of ``A-Z a-z 0-9 _ -``
    (URL-safe, no JSON escaping, no separator of the ``since`` syntax)."""
    return _EPOCH.fullmatch(value) is not None


def _check_size(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"History size must be an integer >= 1, not {value!r}")


def _check_ttl(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"History ttl must be a number of seconds > 0 or None, not {value!r}")
    if value == float("inf"):
        raise ValueError("History ttl must be finite; use None for no age limit")


def _check_max_bytes(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"{attribute.name} must be an integer >= 1 or None, not {value!r}")


@attrs.frozen
class History:
    """How much history a topic keeps: the last ``size`` publications, at most
    ``max_bytes`` of them together, each for at most ``ttl`` seconds (``None``: no age
    limit).

    ::

        WebSocketServer([chat], history={"room:*": History(size=100, ttl=300.0)})

    A client that missed more than the history holds (more than ``size`` publications,
    or publications dropped to stay under ``max_bytes``, or older than ``ttl``) cannot
    recover and gets ``Recovery(recovered=False, missed=0)``. A publication larger than
    ``max_bytes`` is delivered but not kept, so a client that missed it cannot recover
    past it either.
    """

    size: int = attrs.field(validator=_check_size)
    """Publications kept per topic (at least 1)."""
    ttl: float | None = attrs.field(default=None, validator=_check_ttl)
    """Seconds a publication stays in the history, or ``None``."""
    max_bytes: int | None = attrs.field(
        default=DEFAULT_TOPIC_MAX_BYTES, validator=_check_max_bytes, kw_only=True
    )
    """Bytes of publications (their envelopes as sent) kept per topic, 4 MiB by
    default; the oldest go first. ``None``: only ``size`` and the broker's bound."""


def _check_epoch(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not is_epoch(value):
        raise ValueError(f"an epoch is 1 to 64 characters of A-Z a-z 0-9 _ -, not {value!r}")


def _check_offset(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_OFFSET:
        raise ValueError(f"an offset is an integer from 0 to 2**53 - 1, not {value!r}")


@attrs.frozen
class Position:
    """A place in a topic's stream of publications: the ``offset`` of a publication in
    the run of offsets named ``epoch``.

    A client keeps the position of the last publication it received on each topic and
    hands it back to resume (``since``). Offset 0 is the position before the first
    publication of an epoch.
    """

    epoch: str = attrs.field(validator=_check_epoch)
    """The run of offsets; it changes when the topic's history is lost."""
    offset: int = attrs.field(validator=_check_offset)
    """The publication's number in the epoch, from 1 (0: none yet)."""


@attrs.frozen
class Recovery:
    """What ``subscribe(topic, since=...)`` could do.

    ``recovered`` is ``True`` when every publication after the position was sent (there
    were ``missed`` of them, possibly 0), before any live one. ``False`` means nothing
    from the history was sent: no position was given, the topic has no history, the
    epoch differs, or the history no longer reaches back; the app may send a snapshot.
    """

    recovered: bool
    """Whether the subscriber got every publication after its position."""
    missed: int
    """How many publications were sent from the history (0 unless ``recovered``)."""


NOT_RECOVERED: Final = Recovery(recovered=False, missed=0)
"""The result of a subscribe without a position, or one that could not recover."""


@attrs.frozen
class Publication:
    """One publication kept in a topic's history."""

    position: Position
    """Where it stands in the topic's stream."""
    payload: bytes
    """The envelope exactly as subscribers received it (with ``topic``, ``offset`` and
    ``epoch``): UTF-8 JSON."""

    @property
    def text(self) -> str:
        """The payload as ``str``, for ``send_text``."""
        return self.payload.decode()

    def frame(self) -> Frame:
        """The payload as a text :class:`~trio_wsroutes.Frame`."""
        return Frame(self.payload)


@attrs.frozen
class HistoryPage:
    """What ``history(topic, since=..., limit=...)`` returns.

    ``position`` is the topic's latest position (the last publication's, or offset 0 in
    a fresh epoch) even when ``publications`` is empty, so an app that sends a snapshot
    can tell the client where the snapshot stands; the client resumes from there.
    """

    topic: str
    position: Position
    """The topic's latest position when the history was read."""
    publications: tuple[Publication, ...]
    """Oldest first."""
    recovered: bool
    """With ``since``: whether the history reached back to it in the same epoch (when
    ``False``, ``publications`` is empty). Without ``since``: always ``True``."""


def _rules(
    value: Mapping[str, History] | Iterable[tuple[str, History]],
) -> tuple[tuple[str, History], ...]:
    if isinstance(value, Mapping):
        items = list(cast("Mapping[object, object]", value).items())
    else:
        items = list(cast("Iterable[tuple[object, object]]", value))
    rules: list[tuple[str, History]] = []
    for pattern, history in items:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"history patterns are non-empty strings, not {pattern!r}")
        if not isinstance(history, History):
            raise TypeError(f"history[{pattern!r}] must be a History, not {history!r}")
        rules.append((pattern, history))
    return tuple(rules)


def _check_max_topics(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, not {value!r}")


_MATCH_CACHE_SIZE: Final = 4096


@attrs.frozen
class HistoryPolicy:
    """Which topics keep history, and how much: ``fnmatch`` patterns (case-sensitive;
    ``*`` matches any characters, ``:`` included) mapped to :class:`History`, in order;
    the first pattern that matches a topic wins.

    Bounds of the whole history:

    * ``max_topics`` bounds the topics with history one
      :class:`~trio_wsroutes.MemoryBroker` keeps. Past it, the history of the topic least
      recently published to is dropped: its next publication starts a new epoch, so its
      clients get ``recovered=False``.
    * ``max_bytes`` bounds the bytes of publications one :class:`~trio_wsroutes.MemoryBroker`
      keeps, all topics together (64 MiB). Past it, the oldest publications of the topics
      least recently published to are dropped first. These bytes count against the
      server's ``memory_budget``.
    * ``max_recovery`` bounds the publications one recovery sends (300, as Centrifugo's
      default): a client that missed more gets ``Recovery(recovered=False, missed=0)``
      and nothing old, so the app sends it a snapshot instead. The server's
      ``max_recovery`` option sets it.

    (:class:`~trio_wsroutes.RedisBroker` keeps history in Redis, bounded per topic by
    ``size``, ``max_bytes`` and key expiry; ``max_topics`` and ``max_bytes`` of the policy
    do not apply there: Redis' ``maxmemory`` does.)
    """

    rules: tuple[tuple[str, History], ...] = attrs.field(converter=_rules)
    """``(pattern, History)`` pairs, first match wins."""
    max_topics: int = attrs.field(default=DEFAULT_MAX_TOPICS, validator=_check_max_topics)
    """Topics with history in one process (memory broker); least recently published
    evicted first."""
    max_bytes: int = attrs.field(default=DEFAULT_MAX_BYTES, validator=_check_max_topics)
    """Bytes of history in one process (memory broker), all topics together; the
    oldest publications of the least recently published topics are dropped first."""
    max_recovery: int = attrs.field(default=DEFAULT_MAX_RECOVERY, validator=_check_max_topics)
    """Publications one recovery may send; a client that missed more is not recovered."""
    _compiled: tuple[tuple[re.Pattern[str], History], ...] = attrs.field(
        init=False, eq=False, repr=False
    )
    _cache: dict[str, History | None] = attrs.field(
        init=False, eq=False, repr=False, factory=lambda: dict[str, History | None]()
    )

    def __attrs_post_init__(self) -> None:
        compiled = tuple((re.compile(fnmatch.translate(p)), h) for p, h in self.rules)
        object.__setattr__(self, "_compiled", compiled)  # frozen: set once, here

    @classmethod
    def coerce(
        cls,
        value: HistoryPolicy | Mapping[str, History] | None,
        *,
        max_recovery: int | None = None,
    ) -> HistoryPolicy | None:
        """The policy for a server's ``history`` option: a :class:`HistoryPolicy` as it
        is, a mapping of patterns to :class:`History` made into one, ``None`` (or an
        empty mapping) for no history. ``max_recovery``, when given, replaces the
        policy's."""
        if value is None:
            return None
        if isinstance(value, HistoryPolicy):
            policy = value
        elif not isinstance(value, Mapping):
            raise TypeError(
                f"history must map topic patterns to History, not {type(value).__name__}"
            )
        elif not value:
            return None
        else:
            policy = cls(value)
        if max_recovery is not None and max_recovery != policy.max_recovery:
            policy = attrs.evolve(policy, max_recovery=max_recovery)
        return policy

    def match(self, topic: str) -> History | None:
        """The :class:`History` of ``topic``, or ``None`` when it keeps none."""
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        found: History | None = None
        for pattern, history in self._compiled:
            if pattern.match(topic) is not None:
                found = history
                break
        if len(cache) >= _MATCH_CACHE_SIZE:
            cache.clear()  # bounded; the hot topics come back at once
        cache[topic] = found
        return found


def adopt_policy(current: HistoryPolicy | None, policy: object) -> HistoryPolicy:
    """The policy a broker keeps after ``configure_history(policy)``: brokers are
    configured once; the same policy again is a no-op, another one an error."""
    if not isinstance(policy, HistoryPolicy):
        raise TypeError(f"expected a HistoryPolicy, not {type(policy).__name__}")
    if current is not None and current != policy:
        raise RuntimeError("this broker's history is already configured with another policy")
    return policy


# -- since ------------------------------------------------------------------------------------


def parse_since(
    values: Iterable[str],
    *,
    max_values: int = MAX_SINCE_VALUES,
    max_length: int = MAX_SINCE_LENGTH,
) -> dict[str, Position]:
    """Parse the ``since`` query values of an upgrade request, each ``TOPIC@EPOCH:OFFSET``
    (already URL-decoded), into the position per topic.

    The topic may contain ``@`` and ``:``: a value is split at its last ``:`` and then
    the last ``@``. Raises :class:`ValueError` with a message fit for a 400 response body
    (it does not echo the value) for a malformed value, an epoch that is not 1 to 64 of
    ``A-Z a-z 0-9 _ -``, an offset that is not a decimal integer from 0 to 2**53 - 1,
    more than ``max_values`` values, a value over ``max_length`` characters, or a topic
    named twice.
    """
    positions: dict[str, Position] = {}
    for index, value in enumerate(values, 1):
        if index > max_values:
            raise ValueError(f"at most {max_values} 'since' values are accepted")
        where = f"'since' value {index}"
        if not isinstance(value, str):
            raise TypeError(f"{where} is not a str")
        if len(value) > max_length:
            raise ValueError(f"{where} is longer than {max_length} characters")
        rest, colon, offset_text = value.rpartition(":")
        topic, at, epoch = rest.rpartition("@")
        if not colon or not at or not topic:
            raise ValueError(f"{where} is not TOPIC@EPOCH:OFFSET")
        if not is_epoch(epoch):
            raise ValueError(f"{where}: the epoch must be 1 to 64 characters of A-Z a-z 0-9 _ -")
        # isdecimal() accepts other scripts' digits; the offset is ASCII digits only.
        if not (offset_text.isascii() and offset_text.isdigit()) or len(offset_text) > 16:
            raise ValueError(f"{where}: the offset must be a non-negative decimal integer")
        offset = int(offset_text)
        if offset > MAX_OFFSET:
            raise ValueError(f"{where}: the offset must be at most 2**53 - 1")
        if topic in positions:
            raise ValueError(f"{where} names a topic already given")
        positions[topic] = Position(epoch, offset)
    return positions


def format_since(topic: str, position: Position) -> str:
    """The ``since`` value for ``topic`` at ``position``: ``TOPIC@EPOCH:OFFSET``.

    URL-encode it as any query value, e.g.
    ``urllib.parse.urlencode([("since", format_since(topic, pos))])``.
    """
    if not isinstance(topic, str) or not topic:
        raise ValueError("a topic is a non-empty string")
    return f"{topic}@{position.epoch}:{position.offset}"
