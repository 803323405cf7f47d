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
    "MAX_TRACESTATE",
    "WIRE_MAGIC",
    "WireMessage",
    "authentic",
    "decode_wire",
    "encode_wire",
    "entry_problem",
    "sign",
    "sign_extensions",
    "sign_position",
    "wire_extensions",
]

WIRE_MAGIC: Final = b"wsr1 "
"""The first bytes of every message this broker publishes (format version 1)."""
HISTORY_HEADER: Final = WIRE_MAGIC + b"h "
MAX_HEADER: Final = 1024
"""The longest header line a message may have."""
MAX_TRACESTATE: Final = 256
"""The longest ``tracestate`` a message carries (a longer one is left out)."""

ORIGIN: Final = re.compile(rb"[0-9]{1,10}-[0-9a-f]{1,32}")
SEQ: Final = re.compile(rb"0|[1-9][0-9]{0,18}")
_OFFSET: Final = re.compile(rb"[1-9][0-9]{0,18}")
SIGNATURE: Final = re.compile(rb"[0-9a-f]{64}")
_EXTENSION: Final = re.compile(rb"([a-z]{1,16})=([\x21-\x7e]*)")
_TIME: Final = re.compile(rb"0|[1-9][0-9]{0,15}")
_TRACEPARENT: Final = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
# A W3C tracestate list-member without spaces (the header's separator): OpenTelemetry's
# own pattern, so that its parser never refuses (and logs) what this one let through.
_TRACESTATE_MEMBER: Final = re.compile(
    rb"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    rb"=[\x21-\x2b\x2d-\x3c\x3e-\x7e]{1,256}"
)
_MAX_TRACESTATE_MEMBERS: Final = 32
# The header most messages have (unsigned, a publish time and nothing else), in one
# match: the same fields as the full parser's, which reads every other header.
_PLAIN_HEADER: Final = re.compile(
    rb"wsr1 ([tb]) ([0-9]{1,10}-[0-9a-f]{1,32}) (0|[1-9][0-9]{0,18}) t=(0|[1-9][0-9]{0,15})\n"
)


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
    published: int = 0
    """When it was published (the ``t`` extension field: Unix time in ms, the
    publisher's clock), else 0."""
    traceparent: bytes | None = None
    """The W3C ``traceparent`` of the publish span (the ``tp`` field), else ``None``."""
    tracestate: bytes | None = None
    """Its W3C ``tracestate`` (the ``ts`` field), else ``None``."""
    extensions: bytes = b""
    """The extension fields as they came, without ``x``: what ``x`` signs."""
    extensions_signature: bytes | None = None
    """The ``x`` field: the HMAC-SHA256 of the extension fields (with a secret)."""
    ignored: bool = False
    """An extension field this version knows was malformed or oversized, and is left
    out (the message is delivered without it)."""

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


def sign_extensions(secret: bytes, signature: bytes, extensions: bytes) -> bytes:
    """The hex HMAC-SHA256 of a message's extension fields (the ``x`` field): bound to
    the message by its ``signature``, which covers everything else."""
    mac = hmac.new(secret, b"wsr1 x\n%s\n" % signature, "sha256")
    mac.update(extensions)
    return mac.hexdigest().encode()


def wire_extensions(
    published_ms: int, traceparent: bytes | None = None, tracestate: bytes = b""
) -> bytes:
    """The extension fields of a message: ``t=<published_ms>``, and with a trace context
    ``tp=<traceparent>`` and ``ts=<tracestate>`` (left out when empty, longer than
    :data:`MAX_TRACESTATE` or not sendable in the header)."""
    if traceparent is None:
        return b"t=%d" % published_ms
    if tracestate and _tracestate_ok(tracestate):
        return b"t=%d tp=%s ts=%s" % (published_ms, traceparent, tracestate)
    return b"t=%d tp=%s" % (published_ms, traceparent)


def _tracestate_ok(value: bytes) -> bool:
    if len(value) > MAX_TRACESTATE:
        return False
    members = value.split(b",")
    if len(members) > _MAX_TRACESTATE_MEMBERS:
        return False
    keys: set[bytes] = set()
    for member in members:
        if _TRACESTATE_MEMBER.fullmatch(member) is None:
            return False
        key = member.partition(b"=")[0]
        if key in keys:
            return False
        keys.add(key)
    return True


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
    extensions: bytes = b"",
) -> bytes:
    """The bytes published on Redis for ``frame``: header line (with the
    ``extensions`` fields, see :func:`wire_extensions`), then the payload; signed for
    ``channel`` with ``secret`` if one is given."""
    kind = b"b" if frame.binary else b"t"
    payload = frame.payload
    if secret is None:
        if extensions:
            return b"%s%s %s %d %s\n%s" % (WIRE_MAGIC, kind, origin, seq, extensions, payload)
        return b"%s%s %s %d\n%s" % (WIRE_MAGIC, kind, origin, seq, payload)
    signature = sign(secret, kind, channel, origin, seq, payload)
    if extensions:
        mac = sign_extensions(secret, signature, extensions)
        return b"%s%s %s %d %s %s x=%s\n%s" % (
            WIRE_MAGIC,
            kind,
            origin,
            seq,
            signature,
            extensions,
            mac,
            payload,
        )
    return b"%s%s %s %d %s\n%s" % (WIRE_MAGIC, kind, origin, seq, signature, payload)


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` may go out as a text frame."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def decode_wire(data: bytes) -> WireMessage | None:
    """Parse a message read from Redis; ``None`` if it is malformed.

    Data without the ``wsr1`` header is a text frame as it stands (valid UTF-8 only).
    Every header field is parsed strictly: an origin is ``-`` (with seq ``0``) or
    ``<digits>-<hex>``, numbers are decimal without leading zeros and at most 19 digits,
    a signature is 64 lowercase hex digits, an epoch is an epoch, an extension field is
    ``<a-z>=<printable ASCII>``, each name once, ``x`` last. An extension field this
    version knows with a value it refuses is left out (``ignored``); one it does not
    know is skipped (a later version's), though ``x`` still signs it.
    """
    plain = _PLAIN_HEADER.match(data)
    if plain is not None:
        kind, origin, seq_text, published = plain.groups()
        payload = data[plain.end() :]
        binary = kind == b"b"
        if not binary and not _is_utf8(payload):
            return None
        return WireMessage(
            binary, origin, int(seq_text), payload, 0, None, None, int(published), None, None,
            b"t=" + published,
        )  # fmt: skip
    if not data.startswith(WIRE_MAGIC):
        return WireMessage(False, None, 0, data) if _is_utf8(data) else None
    end = data.find(b"\n", len(WIRE_MAGIC), MAX_HEADER)
    if end < 0:
        return None
    fields = data[len(WIRE_MAGIC) : end].split(b" ")
    kind = fields[0]
    offset, epoch = 0, None
    if kind == b"h" and len(fields) >= 5:
        offset_text, epoch_bytes = fields[-2], fields[-1]
        if _OFFSET.fullmatch(offset_text) is None or not epoch_bytes.isascii():
            return None
        epoch = epoch_bytes.decode("ascii")
        if not is_epoch(epoch):
            return None
        offset = int(offset_text)
        optional = fields[3:-2]
    elif kind in (b"t", b"b") and len(fields) >= 3:
        optional = fields[3:]
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
    signature = None
    if optional and b"=" not in optional[0]:
        signature = optional.pop(0)
        if SIGNATURE.fullmatch(signature) is None:
            return None
    payload = data[end + 1 :]
    binary = kind == b"b"
    if not binary and not _is_utf8(payload):
        return None
    origin_id = None if origin == b"-" else origin
    seq = int(seq_text)
    if not optional:
        return WireMessage(binary, origin_id, seq, payload, offset, epoch, signature)
    extensions = _parse_extensions(optional)
    if extensions is None:
        return None
    return WireMessage(binary, origin_id, seq, payload, offset, epoch, signature, *extensions)


_Extensions = tuple[int, bytes | None, bytes | None, bytes, bytes | None, bool]


def _parse_extensions(tokens: list[bytes]) -> _Extensions | None:
    published, traceparent, tracestate, mac, ignored = 0, None, None, None, False
    names: set[bytes] = set()
    for token in tokens:
        match = _EXTENSION.fullmatch(token)
        if match is None or mac is not None:
            return None  # not a field, or one after x
        name, value = match.groups()
        if name in names:
            return None
        names.add(name)
        if name == b"x":
            if SIGNATURE.fullmatch(value) is None:
                return None
            mac = value
        elif name == b"t":
            if _TIME.fullmatch(value) is None:
                ignored = True
            else:
                published = int(value)
        elif name == b"tp":
            if _TRACEPARENT.fullmatch(value) is None:
                ignored = True
            else:
                traceparent = value
        elif name == b"ts":
            if _tracestate_ok(value):
                tracestate = value
            else:
                ignored = True
    if traceparent is None:
        tracestate = None  # a state without its trace means nothing
    signed = tokens[:-1] if mac is not None else tokens
    return published, traceparent, tracestate, b" ".join(signed), mac, ignored


def authentic(secret: bytes, channel: bytes, message: WireMessage) -> bool:
    """Whether ``message`` carries the signature ``secret`` gives it on ``channel`` (for
    ``h``: at its position, which its payload must carry too), and its extension fields,
    if any, the signature ``x`` that binds them to it."""
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
    if not hmac.compare_digest(expected, message.signature):
        return False
    if not message.extensions and message.extensions_signature is None:
        return True
    # Extension fields are optional, but signed when present: none may be added, altered
    # or moved from another message.
    mac = message.extensions_signature
    return mac is not None and hmac.compare_digest(
        sign_extensions(secret, message.signature, message.extensions), mac
    )


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
