"""The wire format of :class:`~trio_wsroutes.RedisBroker`: messages on Redis channels, their
strict parser, and their HMAC-SHA256 signatures (see the ``redis`` package documentation
for the format itself)."""

from __future__ import annotations

import hmac
import re
from typing import Final, NamedTuple

from ..._history import is_epoch, position_tail
from ..._messages import Frame

__all__ = [
    "MAX_HEADER",
    "WIRE_MAGIC",
    "WireMessage",
    "authentic",
    "decode_wire",
    "encode_wire",
    "entry_problem",
    "sign",
    "sign_position",
]

WIRE_MAGIC: Final = b"wsr1 "
"""The first bytes of every message this broker publishes (format version 1)."""
HISTORY_HEADER: Final = WIRE_MAGIC + b"h "
MAX_HEADER: Final = 256
"""The longest header line a message may have."""

ORIGIN: Final = re.compile(rb"[0-9]{1,10}-[0-9a-f]{1,32}")
SEQ: Final = re.compile(rb"0|[1-9][0-9]{0,18}")
_OFFSET: Final = re.compile(rb"[1-9][0-9]{0,18}")
SIGNATURE: Final = re.compile(rb"[0-9a-f]{64}")


class WireMessage(NamedTuple):
    """A message read from a Redis channel."""

    binary: bool
    origin: bytes | None
    seq: int
    payload: bytes
    offset: int = 0
    """The history offset (``h`` messages), else 0."""
    epoch: str | None = None
    """The history epoch (``h`` messages), else ``None``."""
    signature: bytes | None = None
    """The hex HMAC-SHA256 the publisher added (with a secret), else ``None``."""

    @property
    def kind(self) -> bytes:
        """``t``, ``b`` or ``h``."""
        return b"b" if self.binary else b"t" if self.epoch is None else b"h"


def sign(
    secret: bytes, kind: bytes, channel: bytes, origin: bytes, seq: int, body: bytes
) -> bytes:
    """The hex HMAC-SHA256 of a ``t`` or ``b`` message (``body``: its payload)."""
    mac = hmac.new(secret, b"wsr1\n%s\n%s\n%s\n%d\n" % (kind, channel, origin, seq), "sha256")
    mac.update(body)
    return mac.hexdigest().encode()


def sign_position(
    secret: bytes,
    channel: bytes,
    origin: bytes,
    seq: int,
    epoch: bytes,
    offset: int,
    payload: bytes,
) -> bytes:
    """The hex HMAC-SHA256 of an ``h`` message or history entry: its channel, origin,
    seq, epoch, offset and the payload with its position (so none of them can be
    changed, and an entry cannot be moved to another topic or position)."""
    mac = hmac.new(
        secret, b"wsr1\nh\n%s\n%s\n%d\n%s\n%d\n" % (channel, origin, seq, epoch, offset), "sha256"
    )
    mac.update(payload)
    return mac.hexdigest().encode()


def encode_wire(
    frame: Frame,
    origin: bytes = b"-",
    seq: int = 0,
    *,
    secret: bytes | None = None,
    channel: bytes = b"",
) -> bytes:
    """The bytes published on Redis for ``frame``: header line, then the payload; signed
    for ``channel`` with ``secret`` if one is given."""
    kind = b"b" if frame.binary else b"t"
    if secret is None:
        return b"%s%s %s %d\n%s" % (WIRE_MAGIC, kind, origin, seq, frame.payload)
    signature = sign(secret, kind, channel, origin, seq, frame.payload)
    return b"%s%s %s %d %s\n%s" % (WIRE_MAGIC, kind, origin, seq, signature, frame.payload)


def decode_wire(data: bytes) -> WireMessage | None:
    """Parse a message read from Redis; ``None`` if it is malformed.

    Data without the ``wsr1`` header is a text frame as it stands (valid UTF-8 only).
    Every header field is parsed strictly: an origin is ``-`` (with seq ``0``) or
    ``<digits>-<hex>``, numbers are decimal without leading zeros and at most 19 digits,
    a signature is 64 lowercase hex digits, an epoch is an epoch.
    """
    if not data.startswith(WIRE_MAGIC):
        try:
            data.decode()
        except UnicodeDecodeError:
            return None
        return WireMessage(False, None, 0, data)
    end = data.find(b"\n", len(WIRE_MAGIC), MAX_HEADER)
    if end < 0:
        return None
    fields = data[len(WIRE_MAGIC) : end].split(b" ")
    kind = fields[0]
    offset, epoch, signature = 0, None, None
    if kind == b"h" and len(fields) in (5, 6):
        offset_text, epoch_bytes = fields[-2], fields[-1]
        if _OFFSET.fullmatch(offset_text) is None or not epoch_bytes.isascii():
            return None
        epoch = epoch_bytes.decode("ascii")
        if not is_epoch(epoch):
            return None
        offset = int(offset_text)
        if len(fields) == 6:
            signature = fields[3]
    elif kind in (b"t", b"b") and len(fields) in (3, 4):
        if len(fields) == 4:
            signature = fields[3]
    else:
        return None
    origin, seq_text = fields[1], fields[2]
    if SEQ.fullmatch(seq_text) is None:
        return None
    if origin == b"-":
        if seq_text != b"0":
            return None
    elif ORIGIN.fullmatch(origin) is None:
        return None
    if signature is not None and SIGNATURE.fullmatch(signature) is None:
        return None
    payload = data[end + 1 :]
    binary = kind == b"b"
    if not binary:
        try:
            payload.decode()
        except UnicodeDecodeError:
            return None
    origin_id = None if origin == b"-" else origin
    return WireMessage(binary, origin_id, int(seq_text), payload, offset, epoch, signature)


def authentic(secret: bytes, channel: bytes, message: WireMessage) -> bool:
    """Whether ``message`` carries the signature ``secret`` gives it on ``channel`` (for
    ``h``: at its position, which its payload must carry too)."""
    if message.signature is None or message.origin is None:
        return False
    if message.kind == b"h":
        assert message.epoch is not None
        epoch = message.epoch.encode()
        if not message.payload.endswith(position_tail(message.offset, b'"%s"' % epoch)):
            return False
        expected = sign_position(
            secret, channel, message.origin, message.seq, epoch, message.offset, message.payload
        )
    else:
        kind, origin, seq = message.kind, message.origin, message.seq
        expected = sign(secret, kind, channel, origin, seq, message.payload)
    return hmac.compare_digest(expected, message.signature)


def entry_problem(
    secret: bytes | None,
    channel: bytes,
    epoch: bytes,
    offset: int,
    payload: bytes,
    signed: bytes,
    max_size: int,
) -> str | None:
    """The stats counter a history entry at ``offset`` fails on, or ``None`` if it
    passes: its size, its position (the one its payload carries must be the one it is
    stored at), UTF-8, and with a ``secret`` its signature (``signed``: the entry's
    ``<origin> <seq> <signature>``)."""
    if len(payload) > max_size:
        return "oversized"
    if not payload.endswith(position_tail(offset, b'"%s"' % epoch)):
        return "malformed"
    try:
        payload.decode()
    except UnicodeDecodeError:
        return "malformed"
    if secret is None:
        return None
    fields = signed.split(b" ")
    if (
        len(fields) != 3
        or ORIGIN.fullmatch(fields[0]) is None
        or SEQ.fullmatch(fields[1]) is None
        or SIGNATURE.fullmatch(fields[2]) is None
    ):
        return "unauthenticated"
    expected = sign_position(secret, channel, fields[0], int(fields[1]), epoch, offset, payload)
    if not hmac.compare_digest(expected, fields[2]):
        return "unauthenticated"
    return None
