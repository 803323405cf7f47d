"""The wire envelope, byte for byte: every envelope the server, the Python client and the
test client write or read is built or parsed here.

Client to server, a text frame::

    {"type": "chat", "data": {...}, "id": "42"}

Server to client::

    {"type": "message", "data": {...}, "id": "42"}
    {"type": "error", "error": "...", "code": "VALIDATION_ERROR", "id": "42", "details": [...]}
    {"type": "ack", "id": "42"}

Every envelope with an ``id`` gets exactly one answer: the handler's reply, an error
envelope, or (when the handler returns ``None``) an ``ack``. A route's envelope heartbeat
(:meth:`WebSocketRoute.heartbeat <trio_wsroutes.WebSocketRoute.heartbeat>`) sends
``{"type":"ping"}`` and answers a ping with ``{"type":"pong"}`` (echoing its ``id``). A
publication on a topic with history carries its position before the closing brace::

    {"type": "message", "data": {...}, "topic": "room:a", "offset": 7, "epoch": "Xk3..."}

The position is spliced into the encoded envelope (:func:`envelope_head`,
:func:`position_tail`) without decoding or re-encoding it.

Which Python class a wire ``type`` stands for, and how its data is (un)structured, is
``_messages.py``'s business; this module only knows JSON envelopes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol, cast

import orjson

from ._codes import INVALID_JSON, INVALID_MESSAGE
from ._errors import ErrorDetail, ProtocolError
from ._frames import Frame

__all__ = [
    "PING",
    "Envelope",
    "MessageId",
    "encode_ack",
    "encode_envelope",
    "encode_error",
    "encode_pong",
    "envelope_head",
    "parse_envelope",
    "position_tail",
    "request_id_of",
    "topic_json",
    "with_position",
]

MessageId = str | int
"""A request id: a JSON string or integer, echoed on the reply."""


# -- writing ----------------------------------------------------------------------------------


def encode_envelope(type: str, data: Any = None, id: MessageId | None = None) -> bytes:
    """``{"type": type, "data": data, "id": id}`` as UTF-8 JSON, without ``data`` or ``id``
    when they are ``None``."""
    body: dict[str, Any] = {"type": type}
    if data is not None:
        body["data"] = data
    if id is not None:
        body["id"] = id
    return orjson.dumps(body)


def encode_ack(id: MessageId) -> Frame:
    """The acknowledgement of an envelope whose handler returned ``None``:
    ``{"type": "ack", "id": ...}``."""
    return Frame(b'{"type":"ack","id":' + orjson.dumps(id) + b"}")


def encode_error(
    code: str,
    message: str,
    id: MessageId | None = None,
    details: Sequence[ErrorDetail] = (),
) -> Frame:
    """An error envelope."""
    body: dict[str, Any] = {"type": "error", "error": message, "code": code}
    if id is not None:
        body["id"] = id
    if details:
        body["details"] = [d.to_json() for d in details]
    return Frame(orjson.dumps(body))


PING: Final = b'{"type":"ping"}'
"""The envelope heartbeat's ping."""


def encode_pong(id: MessageId | None = None) -> bytes:
    """The answer to an envelope ping: ``{"type": "pong"}``, with the ping's ``id``."""
    return encode_envelope("pong", None, id)


# -- reading ----------------------------------------------------------------------------------


class Envelope(NamedTuple):
    """A parsed client envelope; ``data`` is still raw JSON."""

    type: str
    data: Any
    id: MessageId | None


_MISSING: Final = object()


def parse_envelope(text: str | bytes) -> Envelope:
    """Parse a text frame into an :class:`Envelope`, or raise a :class:`ProtocolError`
    (with the frame's ``id`` when it has a valid one, so the error can answer it)."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("Message is not valid JSON", INVALID_JSON) from None
    if type(body) is not dict:
        raise ProtocolError("Message must be a JSON object with a 'type'", INVALID_MESSAGE)
    envelope = cast("dict[str, Any]", body)
    msg_id: Any = envelope.get("id")
    if msg_id is not None and type(msg_id) is not str and type(msg_id) is not int:
        raise ProtocolError("Message 'id' must be a string or an integer", INVALID_MESSAGE)
    wire_type: Any = envelope.get("type")
    if type(wire_type) is not str:
        raise ProtocolError("Message 'type' must be a string", INVALID_MESSAGE, request_id=msg_id)
    data: Any = envelope.get("data", _MISSING)
    return Envelope(wire_type, {} if data is _MISSING else data, msg_id)


def request_id_of(text: str | bytes) -> MessageId | None:
    """The ``id`` of a frame, whatever else is wrong with it: that of a JSON object whose
    ``id`` is a string or an integer, else ``None``. An answer to a frame refused as a
    whole (rate limit, bad envelope) carries it, so the sender can match it."""
    try:
        return parse_envelope(text).id
    except ProtocolError as error:
        return error.request_id


# -- positions on topics with history ---------------------------------------------------------

_WHITESPACE: Final = frozenset(b" \t\r\n")


def topic_json(topic: str) -> bytes:
    """``topic`` as a JSON string; :class:`ValueError` if it is not valid Unicode."""
    try:
        return orjson.dumps(topic)
    except (orjson.JSONEncodeError, TypeError):
        raise ValueError(f"topic {topic!r} cannot be sent in JSON") from None


def envelope_head(payload: bytes, topic_json: bytes) -> bytes | None:
    """The first part of ``payload`` with a position added: the JSON object without its
    closing brace, then ``,"topic":<topic_json>,"offset":`` (the offset, the epoch and the
    brace follow). ``topic_json`` is the topic as a JSON string (:func:`topic_json`).

    Returns ``None`` when ``payload`` is not a JSON object by its first and last bytes
    (only those are checked: the payload is never parsed or re-encoded).
    """
    end = len(payload)
    while end and payload[end - 1] in _WHITESPACE:
        end -= 1
    if end < 2 or payload[0] != 0x7B or payload[end - 1] != 0x7D:  # { ... }
        return None
    last = end - 2
    while last > 0 and payload[last] in _WHITESPACE:
        last -= 1
    separator = b"" if last == 0 else b","  # "{}": no member before ours
    return b'%s%s"topic":%s,"offset":' % (payload[: end - 1], separator, topic_json)


def position_tail(offset: int, epoch_json: bytes) -> bytes:
    """What follows :func:`envelope_head`: the offset, the epoch and the closing brace."""
    return b'%d,"epoch":%s}' % (offset, epoch_json)


class _Position(Protocol):
    """A stream position (:class:`~trio_wsroutes.Position`)."""

    @property
    def epoch(self) -> str: ...

    @property
    def offset(self) -> int: ...


def with_position(payload: bytes, topic: str, position: _Position) -> bytes | None:
    """``payload`` (an encoded envelope, ``{"type":...,"data":...}``) with ``"topic"``,
    ``"offset"`` and ``"epoch"`` added before its closing brace, without decoding or
    re-encoding the rest; ``None`` when it is not a JSON object.

    >>> from trio_wsroutes import Position
    >>> with_position(b'{"type":"t","data":{}}', "room:a", Position("e1", 7))
    b'{"type":"t","data":{},"topic":"room:a","offset":7,"epoch":"e1"}'
    """
    head = envelope_head(payload, topic_json(topic))
    if head is None:
        return None
    return head + position_tail(position.offset, orjson.dumps(position.epoch))
