"""The wire protocol: ``@message``, the envelope, outbound frames and error envelopes.

Client to server, a text frame::

    {"type": "chat", "data": {...}, "id": "42"}

Server to client::

    {"type": "message", "data": {...}, "id": "42"}
    {"type": "error", "error": "...", "code": "VALIDATION_ERROR", "id": "42", "details": [...]}
    {"type": "ack", "id": "42"}

Every envelope with an ``id`` gets exactly one answer: the handler's reply, an error
envelope, or (when the handler returns ``None``) an ``ack``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, NamedTuple, TypeVar, cast

import attrs
import orjson

from ._codes import INVALID_JSON, INVALID_MESSAGE
from ._errors import ErrorDetail, ProtocolError
from ._frames import Frame
from ._validation import converter

__all__ = [
    "Envelope",
    "Frame",
    "MessageId",
    "RESERVED_TYPES",
    "check_declared",
    "encode_ack",
    "encode_error",
    "encode_message",
    "message",
    "message_type",
    "parse_envelope",
]

MessageId = str | int
"""A request id: a JSON string or integer, echoed on the reply."""

RESERVED_TYPES: Final = frozenset({"error", "ack"})
"""Server-to-client wire types the framework uses itself."""

_T = TypeVar("_T")
_TYPE_ATTR: Final = "__wsroutes_message_type__"


def message(type: str) -> Callable[[builtins.type[_T]], builtins.type[_T]]:
    """Tag an attrs class as a server message sent with the wire ``type`` given.

    ::

        @message("pong")
        @attrs.frozen
        class Pong:
            timestamp: float

    ``await ws.send(Pong(timestamp=1.0))`` then sends
    ``{"type": "pong", "data": {"timestamp": 1.0}}``.
    """
    if not isinstance(type, str) or not type:
        raise TypeError("@message needs a non-empty string: the wire type")
    if type in RESERVED_TYPES:
        raise ValueError(
            f"{type!r} is a wire type the framework sends itself (error envelopes and "
            "acknowledgements); choose another name"
        )

    def tag(cls: builtins.type[_T]) -> builtins.type[_T]:
        if not attrs.has(cast(Any, cls)):
            raise TypeError(f"@message({type!r}) decorates attrs classes; {cls!r} is not one")
        setattr(cls, _TYPE_ATTR, type)
        _encoders.pop(cls, None)
        return cls

    return tag


def message_type(cls: type[Any]) -> str | None:
    """The wire type a class was tagged with by :func:`message`, or ``None``."""
    value = cls.__dict__.get(_TYPE_ATTR)
    return value if isinstance(value, str) else None


_Encoder = tuple[str, Callable[[Any], Any]]
_encoders: dict[type[Any], _Encoder] = {}


def _encoder_for(cls: type[Any]) -> _Encoder:
    encoder = _encoders.get(cls)
    if encoder is None:
        wire_type = message_type(cls)
        if wire_type is None:
            raise TypeError(
                f"{cls.__qualname__} is not a server message: decorate it with "
                f'@message("...") to give it a wire type'
            )
        encoder = _encoders[cls] = (wire_type, converter.get_unstructure_hook(cls))
    return encoder


def check_declared(message: object, declared: Collection[type[Any]], path: str) -> None:
    """Refuse (``TypeError``) a message that route ``path`` does not declare in
    ``.server_messages()`` (``declared``; empty: anything goes): what a route's types, and
    the client types generated from them, promise is what goes out."""
    if declared and type(message) not in declared:
        names = ", ".join(sorted(cls.__qualname__ for cls in declared))
        raise TypeError(
            f"{type(message).__qualname__} is not a server message of route {path!r} "
            f"(it declares {names}); add it to .server_messages()"
        )


def encode_message(msg: object, id: MessageId | None = None) -> Frame:
    """Serialise a ``@message`` instance to a text frame (once, for any number of sends)."""
    wire_type, unstructure = _encoder_for(type(msg))
    body: dict[str, Any] = {"type": wire_type, "data": unstructure(msg)}
    if id is not None:
        body["id"] = id
    return Frame(orjson.dumps(body))


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


class Envelope(NamedTuple):
    """A parsed client envelope; ``data`` is still raw JSON."""

    type: str
    data: Any
    id: MessageId | None


def parse_envelope(text: str | bytes) -> Envelope:
    """Parse a text frame into an :class:`Envelope`, or raise a :class:`ProtocolError`."""
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


_MISSING: Final = object()
