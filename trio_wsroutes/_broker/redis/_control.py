"""The control channel of a :class:`~trio_wsroutes.RedisBroker`: commands on a user's
connections (:class:`~trio_wsroutes._broker._control.UserCommand`) carried to every
process, their wire format, its strict parser and signatures, and the queue and task that
hand them to the server.

One channel per deployment, ``<channel_prefix>\\x00control``, which no topic's channel can
be (a topic's channel is ``<channel_prefix><topic>``, and a topic that starts with
``\\x00`` gets one more: see ``Settings.channel``). A message on it::

    wsr1 c <origin> <seq> <time>[ <signature>]\\n<command JSON>

``origin`` is the publishing broker's (``<pid>-<hex>``), ``seq`` numbers its control
messages from 1, ``time`` is its clock when it sent the message (UNIX time in
milliseconds), the JSON is the command's (``_broker/_control.py``). With a ``secret``,
``signature`` is the hex HMAC-SHA256 of the kind, the channel, the origin, the seq, the
time and the JSON; a message without a valid one is dropped (``stats.unauthenticated``),
and so is one sent more than a minute before or after this process's clock, or whose seq
is not above the last one seen from its origin (a replay). Anything else that does not
parse is dropped and counted (``stats.control_invalid``); nothing that comes on this
channel can end the broker.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import OrderedDict, deque
from collections.abc import Collection
from typing import Final, NamedTuple

import trio

from .._control import ControlHandler, UserCommand, decode_command, encode_command
from ._common import RedisBrokerStats, Settings, logger
from ._wire import ORIGIN, SEQ, SIGNATURE, WIRE_MAGIC

__all__ = [
    "CONTROL_HEADER",
    "MAX_AGE",
    "Control",
    "ControlMessage",
    "decode_control",
    "encode_control",
    "sign_control",
]

CONTROL_HEADER: Final = WIRE_MAGIC + b"c "
MAX_AGE: Final = 60.0
"""Seconds a signed control message may be away from this process's clock, either way."""
MAX_CONTROL_MESSAGE: Final = 16 * 1024
"""The largest control message taken from Redis, in bytes."""
MAX_QUEUED: Final = 1000
"""Control messages waiting for the server at most; more are dropped and counted."""
_MAX_ORIGINS: Final = 1024
_TIME: Final = re.compile(rb"[1-9][0-9]{0,15}")


class ControlMessage(NamedTuple):
    """A control message read from Redis."""

    origin: bytes
    seq: int
    sent_ms: int
    signature: bytes | None
    body: bytes
    command: UserCommand


def sign_control(
    secret: bytes, channel: bytes, origin: bytes, seq: int, sent_ms: int, body: bytes
) -> bytes:
    """The hex HMAC-SHA256 of a control message."""
    mac = hmac.new(
        secret, b"wsr1\nc\n%s\n%s\n%d\n%d\n" % (channel, origin, seq, sent_ms), "sha256"
    )
    mac.update(body)
    return mac.hexdigest().encode()


def encode_control(
    command: UserCommand,
    origin: bytes,
    seq: int,
    *,
    sent_ms: int | None = None,
    secret: bytes | None = None,
    channel: bytes = b"",
) -> bytes:
    """The bytes published on the control channel for ``command``; signed for
    ``channel`` with ``secret`` if one is given."""
    body = encode_command(command)
    when = round(time.time() * 1000) if sent_ms is None else sent_ms
    header = b"%s%s %d %d" % (CONTROL_HEADER, origin, seq, when)
    if secret is not None:
        header += b" " + sign_control(secret, channel, origin, seq, when, body)
    return header + b"\n" + body


def decode_control(data: bytes) -> ControlMessage | None:
    """Parse a control message, every field strictly; ``None`` if it is malformed or
    names no known command."""
    if len(data) > MAX_CONTROL_MESSAGE or not data.startswith(CONTROL_HEADER):
        return None
    end = data.find(b"\n", len(CONTROL_HEADER), 256)
    if end < 0:
        return None
    fields = data[len(CONTROL_HEADER) : end].split(b" ")
    if len(fields) not in (3, 4):
        return None
    origin, seq_text, sent_text = fields[0], fields[1], fields[2]
    signature = fields[3] if len(fields) == 4 else None
    if (
        ORIGIN.fullmatch(origin) is None
        or SEQ.fullmatch(seq_text) is None
        or seq_text == b"0"
        or _TIME.fullmatch(sent_text) is None
        or (signature is not None and SIGNATURE.fullmatch(signature) is None)
    ):
        return None
    body = data[end + 1 :]
    command = decode_command(body)
    if command is None:
        return None
    return ControlMessage(origin, int(seq_text), int(sent_text), signature, body, command)


class Control:
    """The control channel, both ways: what this process sends (its sequence numbers)
    and what it receives, checked, queued (bounded) and handed to the server's handler
    by :meth:`loop`, one command at a time."""

    def __init__(self, settings: Settings, stats: RedisBrokerStats) -> None:
        self._settings = settings
        self._stats = stats
        self.handler: ControlHandler | None = None
        """The server's ``await handler(command)``; without one, nothing is subscribed."""
        self._seq = 0
        self._last: OrderedDict[bytes, int] = OrderedDict()  # origin -> last seq (signed)
        self._queue: deque[UserCommand] = deque()
        self._lot = trio.lowlevel.ParkingLot()

    def encode(self, command: UserCommand, origin: bytes) -> bytes:
        """The next control message of this process (origin ``origin``)."""
        self._seq += 1
        settings = self._settings
        return encode_control(
            command,
            origin,
            self._seq,
            secret=settings.secret,
            channel=settings.control_channel,
        )

    def received(self, data: bytes, own_origins: Collection[bytes]) -> None:
        """A message on the control channel (from the drain: never waits)."""
        stats = self._stats
        message = decode_control(data)
        if message is None:
            stats.control_invalid += 1
            return
        if message.origin in own_origins:
            return  # ours: the server has acted on its own connections already
        secret = self._settings.secret
        if secret is not None:
            expected = sign_control(
                secret,
                self._settings.control_channel,
                message.origin,
                message.seq,
                message.sent_ms,
                message.body,
            )
            if message.signature is None or not hmac.compare_digest(expected, message.signature):
                stats.unauthenticated += 1
                return
            if abs(time.time() - message.sent_ms / 1000) > MAX_AGE or not self._fresh(message):
                stats.control_invalid += 1  # too old (or from the future), or a replay
                return
        if self.handler is None:
            return
        if len(self._queue) >= MAX_QUEUED:
            stats.receive_dropped += 1
            return
        stats.control_received += 1
        self._queue.append(message.command)
        self._lot.unpark()

    def _fresh(self, message: ControlMessage) -> bool:
        """Whether ``message``'s seq is above the last one seen from its origin."""
        last = self._last.get(message.origin)
        if last is not None and message.seq <= last:
            return False
        self._last[message.origin] = message.seq
        self._last.move_to_end(message.origin)
        while len(self._last) > _MAX_ORIGINS:
            self._last.popitem(last=False)
        return True

    async def loop(self) -> None:
        """Hand the queued commands to the server's handler, in order; a handler that
        fails is logged and the next command goes on."""
        queue = self._queue
        while True:
            if not queue:
                await self._lot.park()
                continue
            command = queue.popleft()
            handler = self.handler
            if handler is None:
                continue
            try:
                await handler(command)
            except Exception:
                logger.exception("redis broker: a control command failed: %r", command)
