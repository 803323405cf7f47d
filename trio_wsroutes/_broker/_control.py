"""Commands on a user's connections that every process of a deployment carries out
(``server.disconnect(user=...)``, ``server.subscribe(user=..., topic=...)``,
``server.unsubscribe(...)``), and their JSON form, parsed strictly.

The server acts on its own connections at once and hands the command to its broker; a
broker that links processes (:class:`~trio_wsroutes.RedisBroker`) carries it to the others,
whose servers act on theirs. A broker that does not (:class:`~trio_wsroutes.MemoryBroker`)
has nothing to do.

The JSON form (compact, keys in this order, no other key)::

    {"op":"disconnect","user":"ada","code":3003,"reason":"banned"}
    {"op":"subscribe","user":42,"topic":"news"}
    {"op":"unsubscribe","user":42,"topic":"news"}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, cast

import attrs
import orjson

__all__ = [
    "MAX_CONTROL_TOPIC",
    "MAX_USER_ID",
    "ControlHandler",
    "UserCommand",
    "check_close",
    "check_user_id",
    "decode_command",
    "encode_command",
]

MAX_USER_ID: Final = 1024
"""The longest user id (characters) a command names."""
MAX_CONTROL_TOPIC: Final = 4096
"""The longest topic (characters) a command names (the server's ``max_topic_length``
applies when the subscription is made)."""
_INT64: Final = 2**63

UserOp = Literal["disconnect", "subscribe", "unsubscribe"]


@attrs.frozen
class UserCommand:
    """Something to do to every connection of one user, in every process."""

    op: UserOp
    user: str | int
    """The user id (what the server's ``user_id`` option gives for ``ctx.user``)."""
    topic: str = ""
    """The topic to subscribe to or leave (``subscribe``, ``unsubscribe``)."""
    code: int = 3003
    """The close code (``disconnect``)."""
    reason: str = ""
    """The close reason (``disconnect``)."""


ControlHandler = Callable[[UserCommand], Awaitable[None]]
"""``await handler(command)``: what a server does with a command from another process."""


def check_user_id(user: object) -> str | int:
    """``user`` if it is a user id (a string of 1 to :data:`MAX_USER_ID` characters, or a
    64-bit integer); a clear :class:`TypeError` or :class:`ValueError` otherwise."""
    if isinstance(user, bool) or not isinstance(user, str | int):
        raise TypeError(
            "user is a user id (a str or an int: what the server's user_id option gives "
            f"for ctx.user), not {type(user).__name__}"
        )
    if isinstance(user, str) and not 0 < len(user) <= MAX_USER_ID:
        raise ValueError(f"a user id is 1 to {MAX_USER_ID} characters")
    if isinstance(user, int) and not -_INT64 <= user < _INT64:
        raise ValueError("an integer user id fits in 64 bits")
    return user


def _valid_code(code: object) -> bool:
    return type(code) is int and (
        code in (1000, 1001, 1008, 1011, 1012, 1013) or 3000 <= code <= 4999
    )


def check_close(code: object, reason: object) -> None:
    """A close code and reason a server may send: 1000, 1001, 1008, 1011, 1012, 1013 or
    3000-4999, and at most 123 bytes of UTF-8 (what fits in a close frame)."""
    if not _valid_code(code):
        raise ValueError(
            f"close code {code!r} cannot be sent: use 1000, 1001, 1008, 1011, 1012, 1013 "
            "or 3000-4999"
        )
    if not isinstance(reason, str) or len(reason.encode()) > 123:
        raise ValueError("the close reason is a str of at most 123 bytes in UTF-8")


def encode_command(command: UserCommand) -> bytes:
    """The JSON form of ``command``."""
    body: dict[str, Any] = {"op": command.op, "user": command.user}
    if command.op == "disconnect":
        body["code"] = command.code
        body["reason"] = command.reason
    else:
        body["topic"] = command.topic
    return orjson.dumps(body)


def decode_command(data: bytes) -> UserCommand | None:
    """Parse the JSON form of a command, strictly: ``None`` unless it is an object with
    exactly the keys of its ``op``, each of its type and within its bounds."""
    try:
        body: object = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict:
        return None
    fields = cast("dict[str, object]", body)
    op, user = fields.get("op"), fields.get("user")
    try:
        user_id = check_user_id(user)
    except (TypeError, ValueError):
        return None
    if op == "disconnect":
        code, reason = fields.get("code"), fields.get("reason")
        if set(fields) != {"op", "user", "code", "reason"}:
            return None
        try:
            check_close(code, reason)
        except ValueError:
            return None
        return UserCommand("disconnect", user_id, code=cast(int, code), reason=cast(str, reason))
    if op in ("subscribe", "unsubscribe"):
        topic = fields.get("topic")
        if set(fields) != {"op", "user", "topic"}:
            return None
        if type(topic) is not str or not 0 < len(topic) <= MAX_CONTROL_TOPIC:
            return None
        return UserCommand(op, user_id, topic=topic)
    return None
