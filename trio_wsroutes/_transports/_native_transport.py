"""The native transport: one connection of the native server over a Trio stream, as the
engine's transport (``native.py`` runs it: the handshakes, admission, accepting).

The protocol is :class:`~._codec.ServerCodec` (sans-I/O, on the ``websockets`` package's
protocol); this module is the I/O around it, on a ``trio.abc.Stream``: plain TCP, TLS
(``trio.SSLStream``) or an in-memory pair in tests.

Two transports, one per kind of stream, each with one way to write:

* :class:`NativeTransport`, over any stream (TLS): a write is a ``send_all``; a cancelled
  one ends the connection without a close frame, since the stream cannot say how much
  went out. Control frames the codec owes (pongs, the echo of a close) go out with the
  writer.
* :class:`NonBlockingTransport`, over a :class:`~._streams.NonBlockingStream` (plain TCP,
  the in-memory pair): every write first goes out without waiting and only the rest is
  waited for; that rest is kept in :attr:`~NativeTransport.pending`, so a send cancelled
  by an urgent close never leaves half a frame: the close frame can always follow. It is
  also a :class:`~._base.NonBlockingWriter`: the fan-out fast path writes a frame without
  waiting when nothing is queued, and owed control frames go out as soon as they are
  owed. Reads wait for readiness only once a read has emptied the socket (a TCP socket
  waits through the run's readiness hub, ``_readiness.py``).

Reading (the engine's reader) is the same on both: :meth:`~NativeTransport.receive` reads,
feeds the codec and returns its events; a frame over the size limit is refused from its
header (a :class:`~._base.Violation`, 1009) and the rest of the peer's data is discarded.

Closing follows RFC 6455: the server sends its close frame, half-closes TCP once the peer
answered (or at once when failing the connection), and waits up to ``close_timeout`` for
the peer to close before it drops the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import attrs
import trio

from .._frames import Frame
from .._request import Request
from ._base import NEEDS_FLUSH, Disconnect, NeedsFlush, TransportClosed, Violation
from ._codec import CompressionMode, ServerCodec, UpgradeRequest
from ._handshakes import DEFAULT_MAX_PENDING_HANDSHAKES
from ._streams import NonBlockingStream, SocketStream, socket_peer_closed

__all__ = ["NativeOptions", "NativeTransport", "NonBlockingTransport", "native_transport"]

logger = logging.getLogger("trio_wsroutes")

_RECEIVE_SIZE: Final = 65536
_YIELD_EVERY: Final = 65536
"""Bytes a connection may read in a row before it lets other tasks run, so that a peer
that never stops sending (a ping flood) cannot starve the others."""
_HEAD_TOO_LARGE: Final = b'{"message":"Request Header Fields Too Large","code":"BAD_REQUEST"}'
_FAILED_QUIET: Final = 0.2
"""After failing a connection, how long the peer may stay silent before the connection
is closed (longer than a round trip on any sane network; the close frame is out)."""
_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.frozen
class NativeOptions:
    """Settings of the native transport, from the server's options."""

    max_payload_length: int = 16 * 1024 * 1024
    compression: CompressionMode | None = "shared"
    close_timeout: float = 5.0
    handshake_timeout: float = 10.0
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES


class NativeTransport:
    """One connection of the native server over any stream, as the engine's transport."""

    __slots__ = (
        "_broken",
        "_closed",
        "_flush_requested",
        "_last_activity",
        "_options",
        "_sending",
        "_stream",
        "codec",
        "peer",
        "pending",
        "scheme",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        options: NativeOptions,
        *,
        scheme: str = "ws",
        peer: tuple[str, int] | None = None,
    ) -> None:
        self._stream = stream
        self._options = options
        self.scheme: str = scheme
        self.peer: tuple[str, int] | None = peer
        self.codec: ServerCodec = ServerCodec(
            max_size=options.max_payload_length, compression=options.compression
        )
        self.pending: int = 0
        """Bytes taken and not yet written: a frame being written (or its rest), the
        control frames owed."""
        self._sending = 0  # bytes of the write in progress
        self._broken = False
        self._closed = False
        self._flush_requested = False
        self._last_activity: float | None = None

    # -- the engine's interface -----------------------------------------------------------

    @property
    def last_activity(self) -> float | None:
        """When bytes last came from the peer (any frame, pongs included)."""
        return self._last_activity

    def peer_closed(self) -> bool:
        """Whether the peer closed or reset the connection (the socket says so without
        a read, even behind unread data); over TLS the socket under it is asked."""
        if self.codec.eof_received or self._broken:
            return True
        transport: Any = getattr(self._stream, "transport_stream", None)
        sock: Any = getattr(transport, "socket", None)
        return sock is not None and socket_peer_closed(sock)

    def limit_message_size(self, limit: int) -> bool:
        """Refuse frames and messages over ``limit`` before reading their payload."""
        self.codec.max_message_size = limit
        return True

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        """Send the 101 response prepared by the handshake."""
        if not self.codec.upgrade_prepared() or self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("client left before the upgrade")
        self.codec.accept(subprotocol, headers)
        self._owed_changed()
        await self.flush()

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        """Answer the upgrade request with an HTTP response; the connection then ends."""
        self.codec.deny()
        await self.respond(status, headers, body)

    async def receive(self) -> str | bytes | Violation | Disconnect | NeedsFlush:
        """The next message; fragments are joined, text is checked as UTF-8."""
        codec = self.codec
        while True:
            event = codec.next_event()
            if event is not None:
                if type(event) is Disconnect:
                    self._owed_changed()  # the codec failed it: its close frame is owed
                return event
            if codec.owed and not self._flush_nowait() and not self._flush_requested:
                self._flush_requested = True
                return NEEDS_FLUSH
            if codec.refused:
                await trio.sleep_forever()  # the engine stops reading after a refusal
            if not codec.open or codec.eof_received:
                return codec.ended()
            self._feed(await self._read())
            if codec.owed:
                # Pongs and the echo of a close go out at once where they can.
                self._flush_nowait()

    async def send(self, frame: Frame) -> None:
        """Write ``frame`` (after anything still pending)."""
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("connection closed")
        if not self.codec.open:
            # Closing: no data frame may follow a close frame. The reader reports how
            # the connection ended (the peer's own code, if it closed it).
            await trio.lowlevel.checkpoint()
            return
        await self._write(self.codec.encode(frame))

    async def flush(self) -> None:
        """Write owed control frames, and the half-close."""
        self._flush_requested = False
        owed = self.codec.owed
        while True:
            data = owed.take()
            if data is None:
                break
            self._owed_changed()
            await self._send_all(data)
        if owed.eof and not owed.eof_sent:
            owed.eof_sent = True
            if isinstance(self._stream, trio.abc.HalfCloseableStream):
                try:
                    await self._stream.send_eof()
                except _GONE:
                    self._break()
        else:
            await trio.lowlevel.checkpoint()

    async def ping(self) -> None:
        """Send a WebSocket ping."""
        if self._broken or not self.codec.open:
            await trio.lowlevel.checkpoint()
            return
        self.codec.ping()
        self._owed_changed()
        await self.flush()

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame after what is pending; the closing handshake is finished
        by :meth:`aclose`."""
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("connection closed")
        if not self.codec.open:
            await trio.lowlevel.checkpoint()
            return
        sent = self.codec.close(code, reason)
        if sent[0] != code:
            logger.warning("invalid close code %r; closing with 1011 instead", code)
        self._owed_changed()
        await self.flush()

    async def aclose(self) -> None:
        """Finish the closing handshake (up to ``close_timeout``), then close the stream.
        Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        try:
            with trio.move_on_after(self._options.close_timeout):
                await self._finish()
        finally:
            self._closed = True
            self._break()
            await self._close_stream()

    async def _close_stream(self) -> None:
        await trio.aclose_forcefully(self._stream)

    # -- the handshake and plain HTTP ----------------------------------------------------

    async def read_request(self) -> UpgradeRequest | None:
        """The HTTP request that opens the connection, or ``None`` if none came (an
        error response, if one is due, is sent). A request line and headers over
        :data:`~._codec.MAX_REQUEST_HEAD` get 431."""
        codec = self.codec
        while True:
            request = codec.next_request()
            if request == 431:
                await self.respond(431, [("content-type", "application/json")], _HEAD_TOO_LARGE)
                return None
            if isinstance(request, UpgradeRequest):
                return request
            if request == 400 or codec.eof_received:
                self._owed_changed()
                await self.flush()
                return None
            self._feed(await self._read())

    def prepare(self, request: UpgradeRequest) -> Any:
        """Check the upgrade and negotiate extensions; a 101 response is kept for
        :meth:`accept`, any other (400, 405, 426...) is returned to be sent."""
        return self.codec.prepare(request)

    def make_request(self, request: UpgradeRequest) -> Request:
        """The upgrade request as the server's :class:`~trio_wsroutes.Request`."""
        return ServerCodec.make_request(request, client=self.peer, scheme=self.scheme)

    async def respond(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, *, head: bool = False
    ) -> None:
        """Send an HTTP response (without its body for a ``HEAD``); the connection then
        ends."""
        self.codec.respond(status, headers, body, head=head)
        self._owed_changed()
        await self.flush()

    async def send_response(self, response: Any) -> None:
        """Send a response the codec prepared (an upgrade refused by it)."""
        self.codec.send_response(response)
        self._owed_changed()
        await self.flush()

    # -- reading and writing: any stream --------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if data:
            self._last_activity = trio.current_time()
        self.codec.feed(data)
        self._owed_changed()

    def _owed_changed(self) -> None:
        """The codec's owed bytes changed: they count in :attr:`pending`."""
        self.pending = self.codec.owed.size + self._sending

    async def _read(self) -> bytes:
        try:
            return bytes(await self._stream.receive_some(_RECEIVE_SIZE))
        except _GONE:
            return b""

    def _flush_nowait(self) -> bool:
        """Write what is owed without waiting, where the stream can; ``True`` when all
        is out (or the connection is gone). A plain stream cannot: the writer flushes."""
        return self._broken

    async def _write(self, data: bytes) -> None:
        await self._send_all(data)

    async def _send_all(self, data: bytes) -> None:
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("connection lost")
        self._sending = len(data)
        self._owed_changed()
        try:
            await self._stream.send_all(data)
        except _GONE as exc:
            self._break()
            raise TransportClosed("connection lost") from exc
        except BaseException:
            # Cancelled mid-write: the stream cannot tell how much went out, so no
            # frame may follow (the connection ends without a close frame).
            self._break()
            raise
        self._sending = 0
        self._owed_changed()

    def _break(self) -> None:
        self._broken = True
        self.codec.owed.clear()
        self._sending = 0
        self.pending = 0

    # -- the closing handshake -----------------------------------------------------------

    async def _finish(self) -> None:
        codec = self.codec
        if self._broken:
            return
        if codec.open and not codec.refused:
            # The engine ended without a close frame (its close deadline passed while
            # the peer was not reading): nothing more can reach the peer.
            return
        await self.flush()
        if codec.connecting:
            return  # an HTTP response: the connection ends after it
        # Done when both close frames have crossed (the server then closes TCP first, as
        # RFC 6455 7.1.1 asks), or the peer closed TCP. After a failure (1009, 1007,
        # 1002) keep reading, to discard the rest of what the peer sends, until its EOF:
        # closing with unread data would reset the connection and could destroy the
        # close frame on its way.
        while not codec.eof_received and not self._broken:
            if codec.closing_done:
                break
            if codec.refused and codec.owed.eof_sent:
                # Failed: the peer's close frame is discarded with the rest, so wait
                # only while it keeps sending. Some clients never close TCP first.
                with trio.move_on_after(_FAILED_QUIET):
                    self._feed(await self._read())
                    continue
                break
            self._feed(await self._read())
            codec.discard_events()
            await self.flush()
        await self.flush()


class NonBlockingTransport(NativeTransport):
    """The native transport over a :class:`~._streams.NonBlockingStream` (plain TCP, the
    in-memory pair): writes go out without waiting first, and the fan-out fast path."""

    __slots__ = ("_emptied", "_nb", "_rest", "_unyielded")

    def __init__(
        self,
        stream: NonBlockingStream,
        options: NativeOptions,
        *,
        scheme: str = "ws",
        peer: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(stream, options, scheme=scheme, peer=peer)
        self._nb = stream
        self._rest: memoryview | None = None  # what the stream did not take of a write
        self._emptied = False
        self._unyielded = 0

    def peer_closed(self) -> bool:
        """Whether the peer closed or reset the connection (the socket says so without
        a read, even behind unread data)."""
        return self.codec.eof_received or self._broken or self._nb.peer_closed()

    async def receive(self) -> str | bytes | Violation | Disconnect | NeedsFlush:
        """The next message; fragments are joined, text is checked as UTF-8."""
        # NativeTransport.receive, with the read inlined: an idle connection's reader
        # waits for readiness right here, with no frame of a read method on its stack.
        codec = self.codec
        nb = self._nb
        while True:
            event = codec.next_event()
            if event is not None:
                if type(event) is Disconnect:
                    self._owed_changed()  # the codec failed it: its close frame is owed
                return event
            if codec.owed and not self._flush_nowait() and not self._flush_requested:
                self._flush_requested = True
                return NEEDS_FLUSH
            if codec.refused:
                await trio.sleep_forever()  # the engine stops reading after a refusal
            if not codec.open or codec.eof_received:
                return codec.ended()
            if self._unyielded >= _YIELD_EVERY:
                # The peer keeps the socket full: let the other connections run.
                self._unyielded = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            data = None if self._emptied else nb.receive_nowait(_RECEIVE_SIZE)
            if data is None:
                self._emptied = False
                self._unyielded = 0
                try:
                    await nb.readable()
                except trio.ClosedResourceError:
                    pass  # closed meanwhile: the next read reports the end
                continue
            # A read shorter than the buffer emptied the socket (see _read).
            self._emptied = 0 < len(data) < _RECEIVE_SIZE
            self._unyielded += len(data)
            self._feed(data)
            if codec.owed:
                # Pongs and the echo of a close go out at once where they can.
                self._flush_nowait()

    def try_send_nowait(self, frame: Frame) -> bool:
        """Write ``frame`` now if nothing is waiting to be written."""
        if self.pending or self._broken or not self.codec.open:
            return False
        return self._write_nowait(self.codec.encode(frame))

    def try_send_many_nowait(self, frames: Sequence[Frame]) -> bool:
        """Write ``frames`` now, in one call, if nothing is waiting."""
        if self.pending or self._broken or not self.codec.open:
            return False
        encode = self.codec.encode
        return self._write_nowait(b"".join([encode(frame) for frame in frames]))

    async def flush(self) -> None:
        """Write the rest of a frame, owed control frames, and the half-close."""
        self._flush_requested = False
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            await self._drain()
            if self._flush_nowait():
                break
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- reading and writing without waiting -------------------------------------------

    def _owed_changed(self) -> None:
        rest = self._rest
        self.pending = self.codec.owed.size + (0 if rest is None else len(rest))

    async def _read(self) -> bytes:
        nb = self._nb
        if self._unyielded >= _YIELD_EVERY:
            # The peer keeps the socket full: let the other connections run.
            self._unyielded = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            # A read shorter than the buffer emptied the socket: wait for readiness
            # instead of spending a recv on EAGAIN first (as libuv does). On a
            # request/response connection that is one syscall less per message.
            if not self._emptied:
                data = nb.receive_nowait(_RECEIVE_SIZE)
                if data is not None:
                    self._emptied = 0 < len(data) < _RECEIVE_SIZE
                    self._unyielded += len(data)
                    return data
            self._emptied = False
            self._unyielded = 0
            await nb.wait_readable()

    def _write_nowait(self, data: bytes) -> bool:
        try:
            sent = self._nb.send_nowait(data)
        except _GONE:
            self._break()
            return False  # queued instead: the writer finds the connection gone
        if sent < len(data):
            self._rest = memoryview(data)[sent:]
            self.pending += len(data) - sent
        return True

    def _flush_nowait(self) -> bool:
        """Write what is owed without waiting; ``True`` when all is out."""
        if self._broken:
            return True
        nb = self._nb
        owed = self.codec.owed
        try:
            while True:
                rest = self._rest
                if rest is not None:
                    sent = nb.send_nowait(rest)
                    self.pending -= sent
                    if sent < len(rest):
                        self._rest = rest[sent:]
                        return False
                    self._rest = None
                data = owed.take()
                if data is None:
                    break
                self._rest = memoryview(data)  # still pending: owed to rest
        except _GONE:
            self._break()
            return True
        if owed.eof and not owed.eof_sent:
            owed.eof_sent = True
            nb.shutdown_write()
        return True

    async def _drain(self) -> None:
        """Wait until the rest of the current write is out."""
        nb = self._nb
        while self._rest is not None and not self._broken:
            try:
                await nb.wait_writable()
            except _GONE:
                self._break()
                break
            rest: memoryview | None = self._rest
            if rest is None:  # pyright: ignore[reportUnnecessaryComparison]
                break  # the reader wrote it while this task waited
            try:
                sent = nb.send_nowait(rest)
            except _GONE:
                self._break()
                break
            self.pending -= sent
            self._rest = rest[sent:] if sent < len(rest) else None
        if self._broken:
            raise TransportClosed("connection lost")

    async def _write(self, data: bytes) -> None:
        if self.codec.owed or self._rest is not None:
            await self.flush()  # what is owed goes first
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sent = self._nb.send_nowait(data)
        except _GONE as exc:
            self._break()
            raise TransportClosed("connection lost") from exc
        if sent < len(data):
            self._rest = memoryview(data)[sent:]
            self.pending += len(data) - sent
            await self._drain()

    def _break(self) -> None:
        super()._break()
        self._rest = None

    async def _close_stream(self) -> None:
        nb = self._nb
        if isinstance(nb, SocketStream):
            # What its aclose does, without the checkpoint that aclose_forcefully cancels
            # (a scope and an exception, a few per cent of a handshake).
            nb.abort()
        else:
            await super()._close_stream()


def native_transport(
    stream: trio.abc.Stream,
    options: NativeOptions,
    *,
    scheme: str = "ws",
    peer: tuple[str, int] | None = None,
) -> NativeTransport:
    """The native transport for ``stream``: the non-blocking one where it can be."""
    if isinstance(stream, NonBlockingStream):
        return NonBlockingTransport(stream, options, scheme=scheme, peer=peer)
    return NativeTransport(stream, options, scheme=scheme, peer=peer)
