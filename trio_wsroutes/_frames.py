"""Outbound frames: the payload of one WebSocket message, framed (and compressed) once.

A :class:`Frame` is what the engine queues and what brokers hand to every subscriber of a
publish; transports that write WebSocket frames themselves (the native one) turn it into
wire bytes with :meth:`Frame.wire` or :meth:`Frame.wire_deflated`, cached on the frame so
a publish to many connections builds them once.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

__all__ = ["DEFLATE_LEVEL", "MIN_DEFLATE_SIZE", "Frame", "frame_header"]


class Frame:
    """One outbound WebSocket frame, encoded once and shared by every recipient.

    ``payload`` is UTF-8 JSON for a text frame and raw bytes for a binary frame; ``size``
    is what the frame adds to a connection's ``buffered_amount``. Transports that write
    frames themselves (the native one) build the wire bytes once per frame, with
    :meth:`wire` and :meth:`wire_deflated`, so a publish to many connections frames (and
    compresses) the message once.
    """

    __slots__ = ("_caches", "_deflated", "_text", "_wire", "binary", "holders", "payload", "size")

    def __init__(self, payload: bytes, *, binary: bool = False) -> None:
        self.payload: bytes = payload
        self.binary: bool = binary
        self.size: int = len(payload)
        self.holders: int = 0
        """How many queues (and histories) hold this frame: the memory budget counts its
        bytes once, however many hold it."""
        self._caches = True
        self._text: str | None = None
        self._wire: bytes | None = None
        self._deflated: tuple[int, bytes | None] | None = None

    @classmethod
    def kept(cls, payload: bytes) -> Frame:
        """A text frame kept for long (in a topic's history): it never caches its text,
        wire or compressed forms, so it costs its payload and nothing more while kept.
        Each send builds what it needs."""
        frame = cls(payload)
        frame._caches = False
        return frame

    @property
    def text(self) -> str:
        """The payload as ``str`` (text frames); decoded once, then cached."""
        text = self._text
        if text is None:
            text = self.payload.decode()
            if self._caches:
                self._text = text
        return text

    def wire(self) -> bytes:
        """The frame as a server sends it (unmasked, uncompressed): header and payload.

        Built on first use, then shared by every connection that sends this frame.
        """
        wire = self._wire
        if wire is None:
            first = 0x82 if self.binary else 0x81
            wire = frame_header(first, self.size) + self.payload
            if self._caches:
                self._wire = wire
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
        if self._caches:
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
