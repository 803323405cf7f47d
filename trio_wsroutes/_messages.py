"""Server messages: ``@message`` tags an attrs class with its wire type, and
:func:`encode_message` turns an instance into the envelope a client receives
(``{"type": ..., "data": ..., "id": ...}``; the bytes of every envelope are written in
``_envelope.py``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection
from typing import Any, Final, TypeVar, cast

import attrs

from ._envelope import MessageId, encode_envelope
from ._frames import Frame
from ._validation import converter

__all__ = [
    "RESERVED_TYPES",
    "Frame",
    "check_declared",
    "encode_message",
    "message",
    "message_type",
]

RESERVED_TYPES: Final = frozenset({"error", "ack", "refresh", "presence_join", "presence_leave"})
"""Wire types the framework uses itself: error envelopes, acknowledgements, the token
refresh exchange (both ways) and presence events."""

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
            f"{type!r} is a wire type the framework sends itself (error envelopes, "
            "acknowledgements, token refreshes, presence events); choose another name"
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
        if cls.__dict__.get("__wsroutes_framework_message__"):
            raise TypeError(
                f"{cls.__qualname__} is sent by the server itself (presence events); "
                "it cannot be sent or published"
            )
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
        kind = type(message).__qualname__
        if message_type(type(message)) is None:
            raise TypeError(
                f"route {path!r} was given a {kind}: handlers return (and send) instances "
                'of classes decorated with @message("type") that the route declares in '
                ".server_messages()"
            )
        names = ", ".join(sorted(cls.__qualname__ for cls in declared))
        raise TypeError(
            f"{kind} is not a server message of route {path!r} "
            f"(it declares {names}); add it to .server_messages()"
        )


def encode_message(msg: object, id: MessageId | None = None) -> Frame:
    """Serialise a ``@message`` instance to a text frame (once, for any number of sends)."""
    wire_type, unstructure = _encoder_for(type(msg))
    return Frame(encode_envelope(wire_type, unstructure(msg), id))
