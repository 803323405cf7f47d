"""The ``websockets`` package's sans-I/O ``ServerProtocol``, with the native server's
changes (:class:`ServerProtocol`), the extensions its handshake offers, and what a
connection owes the peer besides the frames the engine sends (:class:`Owed`).

Like ``_codec.py``, it touches ``websockets`` internals (the protocol's reader, parser
and state); ``pyproject.toml`` pins the ``websockets`` versions they were checked against.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import Any, Final, Literal

from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode
from websockets.protocol import CLOSED, OPEN, Protocol
from websockets.server import ServerProtocol as WSServerProtocol

from .._codes import CloseCode

__all__ = ["MAX_PONG_BYTES", "CompressionMode", "Owed", "ServerProtocol", "extension_factories"]

CompressionMode = Literal["shared", "context_takeover"]
"""How the native transport compresses: ``"shared"`` (no context takeover, compressed
once per message for all recipients) or ``"context_takeover"`` (per connection)."""

MAX_PONG_BYTES: Final = 4096
"""Bytes of pongs a connection may owe (about 32 pongs to full-size pings)."""
_CLIENT_WINDOW_BITS: Final = 12
"""Asked of clients that offer ``client_max_window_bits``: a 4 KiB window keeps the
decompressor of each connection small."""

_CLOSE, _PONG = Opcode.CLOSE, Opcode.PONG


@functools.cache
def extension_factories(compression: CompressionMode | None) -> list[ServerExtensionFactory]:
    """What the handshake offers, per ``compression``: one list for every connection
    (the factories hold settings only; the protocol never changes the list)."""
    if compression is None:
        return []
    if compression == "shared":
        factory = ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_max_window_bits=_CLIENT_WINDOW_BITS
        )
    else:
        factory = ServerPerMessageDeflateFactory(
            server_max_window_bits=_CLIENT_WINDOW_BITS,
            client_max_window_bits=_CLIENT_WINDOW_BITS,
            compress_settings={"memLevel": 5},
        )
    return [factory]


class Owed:
    """What the codec owes the peer besides the frames the engine sends: HTTP responses
    and close frames (``control``), pongs, and the half-close. ``size`` counts the bytes
    of the first two; pongs are bounded by :data:`MAX_PONG_BYTES`."""

    __slots__ = ("_control", "_pong_bytes", "_pongs", "eof", "eof_sent", "size")

    def __init__(self) -> None:
        self._control: list[bytes] | None = None  # rare: made when needed
        self._pongs: list[bytes] | None = None
        self._pong_bytes = 0
        self.size = 0
        self.eof = False
        """The half-close is owed (after the rest)."""
        self.eof_sent = False

    def __bool__(self) -> bool:
        return bool(self._control or self._pongs or (self.eof and not self.eof_sent))

    def add_control(self, data: bytes) -> None:
        if self._control is None:
            self._control = []
        self._control.append(data)
        self.size += len(data)

    def add_pong(self, data: bytes) -> None:
        # Every ping gets its pong while few are owed; past the bound, the last owed pong
        # is replaced by the newest (RFC 6455 5.5.3 asks only that the most recent ping
        # be answered), so a peer that pings without reading cannot grow them.
        pongs = self._pongs
        if pongs is None:
            pongs = self._pongs = []
        elif self._pong_bytes + len(data) > MAX_PONG_BYTES:
            replaced = pongs.pop()
            self._pong_bytes -= len(replaced)
            self.size -= len(replaced)
        pongs.append(data)
        self._pong_bytes += len(data)
        self.size += len(data)

    def take(self) -> bytes | None:
        """The next bytes owed, oldest control frame first, then pongs; ``None`` when
        only the half-close (see :attr:`eof`) or nothing is left."""
        # An emptied list is dropped: every connection owed a 101 once, and an idle
        # connection would keep the list.
        control = self._control
        pongs = self._pongs
        if control:
            data = control.pop(0)
            if not control:
                self._control = None
        elif pongs:
            data = pongs.pop(0)
            self._pong_bytes -= len(data)
            if not pongs:
                self._pongs = None
        else:
            return None
        self.size -= len(data)
        return data

    def clear(self) -> None:
        """The connection is gone: nothing is owed any more."""
        self._control = self._pongs = None
        self._pong_bytes = self.size = 0


class ServerProtocol(WSServerProtocol):
    """``ServerProtocol`` with the server's changes.

    * An oversized frame is refused without failing at once: ``websockets`` fails the
      connection (close frame, EOF) as soon as a frame header announces more than the
      limit. Here the refusal is recorded instead and the rest of the input is
      discarded, unread into memory, so that the engine can first answer the messages
      that came before; its close then fails the connection with 1009.
    * A close frame between the fragments of a message is a clean close (RFC 6455 5.4
      lets control frames interleave; the unfinished message is dropped), not the
      protocol error ``websockets`` reports.
    * Pongs and the half-close go to :class:`Owed` as what they are, not into the
      protocol's list of bytes to send.
    * The frame parser is made when data needs it (:meth:`rest_parser`).
    """

    refused: tuple[int, str] | None = None

    def __init__(self, owed: Owed, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owed = owed
        # A UUID for websockets' own I/O layers to log; the sans-I/O protocol never reads
        # it, and every connection would keep one.
        del self.id

    def rest_parser(self) -> None:
        """Drop the frame parser until data comes that needs it: parked, it holds two
        generator frames, and the fast path in ``_codec.py`` reads most frames without
        it (an idle connection never needs it)."""
        self.parser = None  # type: ignore[assignment]

    def receive_data(self, data: bytes | bytearray) -> None:
        if self.parser is None:  # pyright: ignore[reportUnnecessaryComparison]
            self._start_parser()
        super().receive_data(data)

    def receive_eof(self) -> None:
        if self.parser is None:  # pyright: ignore[reportUnnecessaryComparison]
            self._start_parser()
        super().receive_eof()

    def _start_parser(self) -> None:
        self.parser = Protocol.parse(self)
        next(self.parser)

    def fail(self, code: int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG and self.state is OPEN and self.refused is None:
            self.refused = (code, "message too big")  # the engine's words on every transport
            self.parser = self._discard_refused()
            next(self.parser)
            return
        super().fail(code, reason)

    def fail_now(self, code: int, reason: str) -> None:
        """Fail the connection (close frame, then EOF), even after a refusal."""
        Protocol.fail(self, code, reason)

    def recv_frame(self, frame: WSFrame) -> None:
        if frame.opcode is _CLOSE:
            self.current_size = None
        super().recv_frame(frame)

    def send_frame(self, frame: WSFrame) -> None:
        if frame.opcode is _PONG:
            self.owed.add_pong(frame.serialize(mask=False, extensions=self.extensions))
            return
        super().send_frame(frame)

    def send_eof(self) -> None:
        assert not self.eof_sent
        self.eof_sent = True
        self.owed.eof = True

    def _discard_refused(self) -> Generator[None]:
        while not (yield from self.reader.at_eof()):
            self.reader.discard()
        self.state = CLOSED
        yield
