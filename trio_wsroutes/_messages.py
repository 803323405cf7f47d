"""The wire protocol: ``@message``, the envelope, outbound frames and error envelopes.

Client to server, a text frame::

    {"type": "chat", "data": {...}, "id": "42"}

Server to client::

    {"type": "message", "data": {...}, "id": "42"}
    {"type": "error", "error": "...", "code": "VALIDATION_ERROR", "id": "42", "details": [...]}
"""

from __future__ import annotations

import builtins
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, TypeVar, cast

import attrs
import orjson

from ._errors import INVALID_JSON, INVALID_MESSAGE, ErrorDetail, ProtocolError
from ._validation import converter

__all__ = [
    "Envelope",
    "Frame",
    "MessageId",
    "encode_error",
    "encode_message",
    "frame_header",
    "message",
    "message_type",
    "parse_envelope",
]

MessageId = str | int
"""A request id: a JSON string or integer, echoed on the reply."""

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
    if type == "error":
        raise ValueError('"error" is the wire type of error envelopes; choose another name')

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


class Frame:
    """One outbound WebSocket frame, encoded once and shared by every recipient.

    ``payload`` is UTF-8 JSON for a text frame and raw bytes for a binary frame; ``size``
    is what the frame adds to a connection's ``buffered_amount``. Transports that write
    frames themselves (the native one) build the wire bytes once per frame, with
    :meth:`wire` and :meth:`wire_deflated`, so a publish to many connections frames (and
    compresses) the message once.
    """

    __slots__ = ("_deflated", "_text", "_wire", "binary", "payload", "size")

    def __init__(self, payload: bytes, *, binary: bool = False) -> None:
        self.payload: bytes = payload
        self.binary: bool = binary
        self.size: int = len(payload)
        self._text: str | None = None
        self._wire: bytes | None = None
        self._deflated: tuple[int, bytes | None] | None = None

    @property
    def text(self) -> str:
        """The payload as ``str`` (text frames); decoded once, then cached."""
        text = self._text
        if text is None:
            text = self._text = self.payload.decode()
        return text

    def wire(self) -> bytes:
        """The frame as a server sends it (unmasked, uncompressed): header and payload.

        Built on first use, then shared by every connection that sends this frame.
        """
        wire = self._wire
        if wire is None:
            first = 0x82 if self.binary else 0x81
            wire = self._wire = frame_header(first, self.size) + self.payload
        return wire

    def wire_deflated(self, window_bits: int) -> bytes | None:
        """The frame compressed with permessage-deflate (RFC 7692) without context
        takeover, for connections that negotiated ``server_no_context_takeover`` and a
        server window of ``window_bits``: the same bytes for every such connection,
        compressed once. ``None`` when compressing does not pay (a payload under
        ``MIN_DEFLATE_SIZE`` bytes, or one that does not shrink); send :meth:`wire`.
        """
        cached = self._deflated
        if cached is not None and cached[0] == window_bits:
            return cached[1]
        wire: bytes | None = None
        if self.size >= MIN_DEFLATE_SIZE:
            compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -window_bits)
            data = compressor.compress(self.payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
            data = data[:-4]  # the empty stored block 00 00 ff ff, per RFC 7692 7.2.1
            if len(data) < self.size:
                first = 0xC2 if self.binary else 0xC1  # FIN, RSV1 (compressed), opcode
                wire = frame_header(first, len(data)) + data
        self._deflated = (window_bits, wire)
        return wire

    def __repr__(self) -> str:
        kind = "binary" if self.binary else "text"
        return f"<Frame {kind} {self.size} bytes>"


MIN_DEFLATE_SIZE: Final = 128
"""Payloads shorter than this go uncompressed (RFC 7692 lets a sender choose per
message): compressing them costs more than it saves."""
DEFLATE_LEVEL: Final = 6
"""zlib level of permessage-deflate (the same for every recipient of a frame)."""


def frame_header(first: int, length: int) -> bytes:
    """A server frame's header: ``first`` is FIN, RSV and opcode bits; no mask."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


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


def encode_message(msg: object, id: MessageId | None = None) -> Frame:
    """Serialise a ``@message`` instance to a text frame (once, for any number of sends)."""
    wire_type, unstructure = _encoder_for(type(msg))
    body: dict[str, Any] = {"type": wire_type, "data": unstructure(msg)}
    if id is not None:
        body["id"] = id
    return Frame(orjson.dumps(body))


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
