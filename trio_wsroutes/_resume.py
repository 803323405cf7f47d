"""What a client keeps to resume topics with history, and the caps that bound it.

A client resumes a topic by naming its last position in the upgrade request, as a
``since=TOPIC@EPOCH:OFFSET`` query parameter. Every position kept is sent on every
reconnection, so what is kept must fit in one upgrade request that servers accept:
:class:`PositionBook` keeps positions in least-recently-seen order and drops the least
recently seen past :data:`MAX_RESUME_POSITIONS` or :data:`MAX_RESUME_QUERY_BYTES`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Final
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

import attrs

from ._history import MAX_SINCE_LENGTH, MAX_SINCE_VALUES, Position, format_since

__all__ = [
    "MAX_RESUME_POSITIONS",
    "MAX_RESUME_QUERY_BYTES",
    "PositionBook",
    "RecoveryInfo",
    "ResumeAttempt",
    "prepare_resume",
]

MAX_RESUME_POSITIONS: Final = 64
"""At most this many topics are resumed by one client (the most recently seen ones).

Servers refuse upgrade requests with more than 100 query parameters or 100 ``since``
values by default (``WebSocketServer(max_query_params=...)``); 64 leaves room for the
URL's own parameters."""

MAX_RESUME_QUERY_BYTES: Final = 6144
"""At most this many bytes of URL-encoded ``&since=...`` parameters in one upgrade request.

Common servers refuse a request line over 8 KiB (``414 URI Too Long``: the native
transport, ``websockets``, nginx) and a request head over 16 KiB (``431``: hypercorn);
6 KiB of positions leaves 2 KiB for the rest of the URL. When the URL's own path and
query are longer, fewer positions are sent, so that the request target stays under
:data:`MAX_REQUEST_TARGET_BYTES`."""

MAX_REQUEST_TARGET_BYTES: Final = 8000
"""The request target (path and query) a client with positions keeps under: less than the
8 KiB request line servers commonly accept, with room for ``GET`` and ``HTTP/1.1``."""

SERVER_MAX_QUERY_PARAMS: Final = 100
"""The query parameters a server accepts on an upgrade by default (``max_query_params``)."""

_SINCE_PREFIX: Final = len("&since=")


@attrs.frozen
class RecoveryInfo:
    """Whether a topic the client resumed missed nothing: what ``on_recovery`` gets.

    Decided with the first publication on the topic after a connection that named its
    position (``since``): ``recovered`` is ``True`` when that publication directly follows
    ``since`` in the same epoch, so whatever was missed came from the server's history,
    in order. ``False`` when the history was lost (a new epoch) or no longer reached
    back, or when the position could not be sent at all (``position`` is then ``None``):
    the server refused the upgrade with it and the client connected without it, or it
    did not fit in the upgrade request (see :data:`MAX_RESUME_POSITIONS`). The app
    should then reload what it shows of the topic.
    """

    topic: str
    """The topic."""
    recovered: bool
    """Whether nothing was lost."""
    since: Position
    """The position the client resumed from (or meant to)."""
    position: Position | None
    """The position of the first publication after resuming; ``None`` when the
    position was not sent (no publication was waited for)."""


def since_size(topic: str, position: Position) -> int | None:
    """The bytes ``&since=TOPIC@EPOCH:OFFSET`` takes in a URL, or ``None`` for a position
    no server accepts (an empty topic, a value over ``MAX_SINCE_LENGTH`` characters)."""
    if not topic:
        return None
    value = format_since(topic, position)
    if len(value) > MAX_SINCE_LENGTH:
        return None
    return _SINCE_PREFIX + len(quote_plus(value, safe=""))


class PositionBook:
    """Positions per topic, least recently seen first, within the caps.

    Seeing a topic's position moves it to the end; past ``max_positions`` positions or
    ``max_bytes`` bytes of URL-encoded ``since`` parameters the least recently seen
    ones are dropped.
    """

    __slots__ = ("_bytes", "_entries", "max_bytes", "max_positions")

    def __init__(
        self,
        max_positions: int = MAX_RESUME_POSITIONS,
        max_bytes: int = MAX_RESUME_QUERY_BYTES,
    ) -> None:
        self.max_positions = max_positions
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Position, int]] = OrderedDict()
        self._bytes = 0

    def see(self, topic: str, position: Position) -> dict[str, Position]:
        """Keep ``position`` as ``topic``'s, the most recent; returns what was dropped
        for it (``topic`` itself when its position cannot be resumed)."""
        self.forget(topic)
        size = since_size(topic, position)
        if size is None:
            return {topic: position}
        self._entries[topic] = (position, size)
        self._bytes += size
        dropped: dict[str, Position] = {}
        while len(self._entries) > self.max_positions or self._bytes > self.max_bytes:
            old, (kept, old_size) = self._entries.popitem(last=False)
            self._bytes -= old_size
            dropped[old] = kept
        return dropped

    def forget(self, topic: str) -> Position | None:
        """Drop ``topic``'s position; the position it had, if any."""
        entry = self._entries.pop(topic, None)
        if entry is None:
            return None
        self._bytes -= entry[1]
        return entry[0]

    def get(self, topic: str) -> Position | None:
        entry = self._entries.get(topic)
        return None if entry is None else entry[0]

    def snapshot(self) -> dict[str, Position]:
        """The positions, least recently seen first."""
        return {topic: entry[0] for topic, entry in self._entries.items()}

    def sized(self) -> Iterator[tuple[str, Position, int]]:
        """``(topic, position, since bytes)``, most recently seen first."""
        for topic in reversed(self._entries):
            position, size = self._entries[topic]
            yield topic, position, size

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def query_bytes(self) -> int:
        """The bytes of the ``since`` parameters of every position kept."""
        return self._bytes


@attrs.frozen
class ResumeAttempt:
    """The URL of one connection attempt, and which positions it carries."""

    url: str
    sent: Mapping[str, Position]
    """The positions named in ``url``, least recently seen first."""
    left_out: Mapping[str, Position]
    """The positions kept that did not fit in ``url`` (the least recently seen)."""


def prepare_resume(url: str, book: PositionBook) -> ResumeAttempt:
    """``url`` with a ``since`` parameter per position of ``book``, as many as fit.

    The most recently seen positions go first, while the request stays under
    :data:`SERVER_MAX_QUERY_PARAMS` parameters and :data:`MAX_REQUEST_TARGET_BYTES` of
    path and query; ``since`` parameters already in ``url`` are replaced.
    """
    if not len(book):
        return ResumeAttempt(url, {}, {})
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "since"]
    count_room = min(MAX_RESUME_POSITIONS, MAX_SINCE_VALUES, SERVER_MAX_QUERY_PARAMS - len(query))
    target = len(parts.path or "/") + 1 + len(urlencode(query))
    byte_room = min(MAX_RESUME_QUERY_BYTES, MAX_REQUEST_TARGET_BYTES - target)
    newest_first: list[tuple[str, Position]] = []
    left_out: dict[str, Position] = {}
    for topic, position, size in book.sized():
        if not left_out and len(newest_first) < count_room and size <= byte_room:
            newest_first.append((topic, position))
            byte_room -= size
        else:
            left_out[topic] = position  # and every less recently seen one after it
    sent = dict(reversed(newest_first))
    query += [("since", format_since(topic, position)) for topic, position in sent.items()]
    return ResumeAttempt(urlunsplit(parts._replace(query=urlencode(query))), sent, left_out)
