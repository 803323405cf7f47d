"""The native transport: a WebSocket server of its own, over any Trio stream.

The protocol is the sans-I/O ``ServerProtocol`` of the ``websockets`` package (its C
speed-ups, its permessage-deflate); the I/O is ours, on a ``trio.abc.Stream``: plain TCP,
TLS (``trio.SSLStream``) or an in-memory pair in tests. :func:`serve_stream` runs one
connection (handshake, admission by the server, the engine, the closing handshake);
:class:`NativeServer` accepts TCP connections for it.

A :class:`NativeTransport` has three paths to its stream:

* **reading** (the engine's reader): :meth:`~NativeTransport.receive` reads, feeds the
  protocol, reassembles fragmented messages and checks their UTF-8 as they come (invalid
  text fails the connection with 1007 at the first bad fragment). A frame whose header
  announces more than the size limit is refused before its payload is read: ``receive``
  reports a :class:`~._base.Violation` (1009), and the rest of the peer's data is
  discarded. Fragments are charged a fixed overhead each against the same limit, so a
  flood of tiny or empty fragments is refused too. Control frames the protocol answers
  (pongs, the echo of a close) are written at once when the stream allows it without
  waiting, else kept (only the latest pong) for the writer.
* **writing** (the engine's writer): on a :class:`~._streams.NonBlockingStream` (plain
  TCP) every write first goes out without waiting and only the rest is waited for; that
  rest is kept in :attr:`~NativeTransport.pending`, so a send cancelled by an urgent
  close never leaves half a frame: the close frame can always follow. Over other streams
  (TLS) a write is a ``send_all``; a cancelled one ends the connection without a close
  frame, since the stream cannot say how much went out.
* the **fan-out fast path**: :meth:`~NativeTransport.try_send_nowait` writes a frame
  without waiting when nothing is queued, on plain TCP only; the wire bytes of a
  :class:`~trio_wsroutes.Frame` are built once (:meth:`Frame.wire`) and shared.

Compression: by default the server answers permessage-deflate offers with
``server_no_context_takeover`` (RFC 7692 lets a server add it even when the client did
not ask), so each message compresses on its own and to the same bytes for every
connection with the same window: :meth:`Frame.wire_deflated` compresses once per publish.
``"context_takeover"`` keeps a compressor per connection instead. Inflating is bounded by
the size limit before the memory is allocated (``websockets`` inflates with a maximum).

Closing follows RFC 6455: the server sends its close frame, half-closes TCP once the peer
answered (or at once when failing the connection), and waits up to ``close_timeout`` for
the peer to close before it drops the connection.
"""

from __future__ import annotations

import codecs
import email.utils
import http
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, Final, Literal
from urllib.parse import unquote

import attrs
import trio
from websockets.datastructures import Headers as WSHeaders
from websockets.exceptions import ProtocolError as WSProtocolError
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Close, Opcode
from websockets.frames import Frame as WSFrame
from websockets.http11 import Request as WSRequest
from websockets.http11 import Response as WSResponse
from websockets.protocol import CLOSED, CONNECTING, OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.utils import apply_mask

try:  # the C version, as the protocol itself uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its C extension
    pass

from .._codes import CloseCode
from .._containment import must_propagate
from .._frames import Frame, frame_header
from .._request import Headers, Request
from ._base import NEEDS_FLUSH, Disconnect, NeedsFlush, TransportClosed, Violation
from ._handshakes import (
    DEFAULT_MAX_PENDING_HANDSHAKES,
    HandshakeSlots,
    PendingHandshake,
    client_hello_arrived,
    serve_listeners,
)
from ._streams import NonBlockingStream, SocketStream, socket_peer_closed

__all__ = [
    "CompressionMode",
    "NativeOptions",
    "NativeServer",
    "NativeTransport",
    "PlainHTTP",
    "ServeWebSocket",
    "serve_stream",
]

logger = logging.getLogger("trio_wsroutes")

CompressionMode = Literal["shared", "context_takeover"]
"""How the native transport compresses: ``"shared"`` (no context takeover, compressed
once per message for all recipients) or ``"context_takeover"`` (per connection)."""

ServeWebSocket = Callable[["NativeTransport", Request], Awaitable[None]]
"""The server's side of an upgrade: admit or deny, run the connection, ``aclose``."""
PlainHTTP = Callable[[str], tuple[int, Sequence[tuple[str, str]], bytes]]
"""The answer to a plain HTTP request for a path: status, headers and body."""

_RECEIVE_SIZE: Final = 65536
_YIELD_EVERY: Final = 65536
"""Bytes a connection may read in a row before it lets other tasks run, so that a peer
that never stops sending (a ping flood) cannot starve the others."""
_FRAGMENT_COST: Final = 64
"""Bytes each fragment of a message is charged beyond its payload: empty or tiny
fragments cost memory and time too."""
_CLIENT_WINDOW_BITS: Final = 12
"""Asked of clients that offer ``client_max_window_bits``: a 4 KiB window keeps the
decompressor of each connection small."""
MAX_REQUEST_HEAD: Final = 16 * 1024
"""The most bytes a request line and its headers may take (as under hypercorn); past
it the request is answered with 431 and the connection ends."""
_HEAD_TOO_LARGE: Final = b'{"message":"Request Header Fields Too Large","code":"BAD_REQUEST"}'
_FAILED_QUIET: Final = 0.2
"""After failing a connection, how long the peer may stay silent before the connection
is closed (longer than a round trip on any sane network; the close frame is out)."""

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_CLOSE = Opcode.CLOSE
_PONG_BYTE: Final = 0x8A  # FIN + pong opcode: the first byte of a pong the server sends
_MAX_PONG_BYTES: Final = 4096
"""Bytes of pongs a connection may owe (about 32 pongs to full-size pings)."""


@attrs.frozen
class NativeOptions:
    """Settings of the native transport, from the server's options."""

    max_payload_length: int = 16 * 1024 * 1024
    compression: CompressionMode | None = "shared"
    close_timeout: float = 5.0
    handshake_timeout: float = 10.0
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES

    def extension_factories(self) -> list[ServerExtensionFactory] | None:
        """What the handshake offers, per ``compression``."""
        if self.compression is None:
            return None
        if self.compression == "shared":
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


class _ServerProtocol(ServerProtocol):
    """``ServerProtocol`` with two changes.

    * An oversized frame is refused without failing at once: ``websockets`` fails the
      connection (close frame, EOF) as soon as a frame header announces more than the
      limit. Here the refusal is recorded instead and the rest of the input is
      discarded, unread into memory, so that the engine can first answer the messages
      that came before; its close then fails the connection with 1009.
    * A close frame between the fragments of a message is a clean close (RFC 6455 5.4
      lets control frames interleave; the unfinished message is dropped), not the
      protocol error ``websockets`` reports.
    """

    refused: tuple[int, str] | None = None

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

    def _discard_refused(self) -> Generator[None]:
        while not (yield from self.reader.at_eof()):
            self.reader.discard()
        self.state = CLOSED
        yield


def _upgrade_requested(headers: WSHeaders) -> bool:
    return any(
        token.strip().lower() == "websocket"
        for value in headers.get_all("Upgrade")
        for token in value.split(",")
    )


def _close_reason(reason: str) -> str:
    # A close frame's payload is at most 125 bytes: 2 for the code, 123 for the reason.
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:123].decode(errors="ignore")


class NativeTransport:
    """One connection of the native server, as the engine's transport."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        options: NativeOptions,
        *,
        scheme: str = "ws",
        peer: tuple[str, int] | None = None,
    ) -> None:
        self._stream = stream
        self._nb: NonBlockingStream | None = (
            stream if isinstance(stream, NonBlockingStream) else None
        )
        self._options = options
        self.scheme: str = scheme
        self.peer: tuple[str, int] | None = peer
        self.protocol: _ServerProtocol = _ServerProtocol(
            extensions=options.extension_factories(),
            max_size=options.max_payload_length,
        )
        self.pending: int = 0
        """Bytes taken and not yet written: the rest of a frame, control frames."""
        self._rest: memoryview | None = None  # what the stream did not take of a frame
        self._control: list[bytes] | None = None  # close frames, HTTP responses (rare)
        # Pongs owed, oldest first; bounded in bytes (see _take_output).
        self._pongs: list[bytes] | None = None
        self._pong_bytes = 0
        self._eof_pending = False
        self._eof_sent = False
        self._broken = False
        self._closed = False
        self._flush_requested = False
        # What reading produced and receive() has not returned yet: frames the protocol
        # parsed (control frames, fragments...) and messages the fast path parsed itself.
        self._items: list[WSFrame | WSRequest | str | bytes] = []
        self._next_item = 0
        self._eof_received = False
        self._fragments: list[Any] | None = None
        self._fragment_cost = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._last_activity: float | None = None
        self._emptied = False
        self._unyielded = 0
        self._refusal_reported = False
        self._response: WSResponse | None = None
        self._shared_window_bits: int | None = None
        self._deflate: PerMessageDeflate | None = None

    # -- the engine's interface -----------------------------------------------------------

    @property
    def can_ping(self) -> bool:
        """WebSocket pings: ``True``."""
        return True

    @property
    def last_activity(self) -> float | None:
        """When bytes last came from the peer (any frame, pongs included)."""
        return self._last_activity

    def peer_closed(self) -> bool:
        """Whether the peer closed or reset the connection (the socket says so without
        a read, even behind unread data); over TLS the socket under it is asked."""
        if self._eof_received or self._broken:
            return True
        if self._nb is not None:
            return self._nb.peer_closed()
        transport: Any = getattr(self._stream, "transport_stream", None)
        sock: Any = getattr(transport, "socket", None)
        return sock is not None and socket_peer_closed(sock)

    def limit_message_size(self, limit: int) -> bool:
        """Refuse frames and messages over ``limit`` before reading their payload."""
        self.protocol.max_message_size = limit
        return True

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        """Send the 101 response prepared by the handshake."""
        response = self._response
        if response is None or self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("client left before the upgrade")
        self._response = None
        if subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self.protocol.subprotocol = Subprotocol(subprotocol)
        for name, value in headers:
            response.headers[name] = value
        self.protocol.send_response(response)
        if not self.protocol.reader.buffer:
            # The handshake parser keeps the request it parsed alive for the connection's
            # lifetime; nothing has been read past it, so a fresh frame parser is the
            # same one without it (a kilobyte and more per idle connection).
            self.protocol.parser = Protocol.parse(self.protocol)
            next(self.protocol.parser)
        self._take_output()
        await self.flush()
        for extension in self.protocol.extensions:
            if isinstance(extension, PerMessageDeflate):
                if extension.local_no_context_takeover and self._options.compression == "shared":
                    self._shared_window_bits = extension.local_max_window_bits
                else:
                    self._deflate = extension

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        """Answer the upgrade request with an HTTP response; the connection then ends."""
        self._response = None
        await self.respond(status, headers, body)

    async def receive(self) -> str | bytes | Violation | Disconnect | NeedsFlush:
        """The next message; fragments are joined, text is checked as UTF-8."""
        protocol = self.protocol
        while True:
            items = self._items
            while self._next_item < len(items):
                item = items[self._next_item]
                self._next_item += 1
                if type(item) is str or type(item) is bytes:
                    return item  # parsed by the fast path
                assert isinstance(item, WSFrame)
                result = self._on_event(item)
                if result is not None:
                    return result
            if items:
                self._items = []
                self._next_item = 0
            if self._has_output() and not self._flush_nowait() and not self._flush_requested:
                self._flush_requested = True
                return NEEDS_FLUSH
            if protocol.refused is not None:
                if not self._refusal_reported:
                    self._refusal_reported = True
                    return Violation(*protocol.refused)
                await trio.sleep_forever()  # the engine stops reading after a refusal
            if protocol.state is not OPEN or self._eof_received:
                return self._ended()
            self._feed(await self._read())
            if self._has_output():
                # Pongs and the echo of a close go out at once where they can.
                self._flush_nowait()

    async def send(self, frame: Frame) -> None:
        """Write ``frame`` (after anything still pending)."""
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("connection closed")
        if self.protocol.state is not OPEN:
            # Closing: no data frame may follow a close frame. The reader reports how
            # the connection ended (the peer's own code, if it closed it).
            await trio.lowlevel.checkpoint()
            return
        await self._write(self._encode(frame))

    @property
    def writes_nowait(self) -> bool:
        """Over plain TCP: ``True``."""
        return self._nb is not None

    def try_send_nowait(self, frame: Frame) -> bool:
        """Write ``frame`` now (plain TCP) if nothing is waiting to be written."""
        if self._nb is None or self.pending or self._broken or self.protocol.state is not OPEN:
            return False
        return self._write_nowait(self._encode(frame))

    def try_send_many_nowait(self, frames: Sequence[Frame]) -> bool:
        """Write ``frames`` now, in one call (plain TCP), if nothing is waiting."""
        if self._nb is None or self.pending or self._broken or self.protocol.state is not OPEN:
            return False
        encode = self._encode
        return self._write_nowait(b"".join([encode(frame) for frame in frames]))

    def _write_nowait(self, data: bytes) -> bool:
        nb = self._nb
        assert nb is not None
        try:
            sent = nb.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._break()
            return False  # queued instead: the writer finds the connection gone
        if sent < len(data):
            self._rest = memoryview(data)[sent:]
            self.pending += len(data) - sent
        return True

    async def flush(self) -> None:
        """Write the rest of a frame, owed control frames, and the half-close."""
        self._flush_requested = False
        nb = self._nb
        if nb is None:
            while True:
                data = self._next_control()
                if data is None:
                    break
                await self._send_all(data)
            if self._eof_pending and not self._eof_sent:
                self._eof_sent = True
                if isinstance(self._stream, trio.abc.HalfCloseableStream):
                    try:
                        await self._stream.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._break()
            else:
                await trio.lowlevel.checkpoint()
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            await self._drain()
            if self._flush_nowait():
                break
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def ping(self) -> None:
        """Send a WebSocket ping."""
        if self._broken or self.protocol.state is not OPEN:
            await trio.lowlevel.checkpoint()
            return
        self.protocol.send_ping(os.urandom(4))
        self._take_output()
        await self.flush()

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame after what is pending; the closing handshake is finished
        by :meth:`aclose`."""
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("connection closed")
        protocol = self.protocol
        if protocol.state is not OPEN:
            await trio.lowlevel.checkpoint()
            return
        reason = _close_reason(reason)
        try:
            Close(code, reason).check()
        except WSProtocolError:
            logger.warning("invalid close code %r; closing with 1011 instead", code)
            code, reason = CloseCode.INTERNAL_ERROR, ""
        if protocol.refused is not None:
            protocol.fail_now(code, reason)
        else:
            protocol.send_close(code, reason)
        self._take_output()
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
            await trio.aclose_forcefully(self._stream)

    # -- the handshake and plain HTTP ----------------------------------------------------

    async def read_request(self) -> WSRequest | None:
        """The HTTP request that opens the connection, or ``None`` if none came (an
        error response, if the protocol wrote one, is sent). A request line and headers
        over :data:`MAX_REQUEST_HEAD` get 431."""
        protocol = self.protocol
        received = 0
        while True:
            items, self._items = self._items, []
            request = next((item for item in items if isinstance(item, WSRequest)), None)
            # Once the request is parsed, what the protocol holds came after it.
            head = received if request is None else received - len(protocol.reader.buffer)
            if head > MAX_REQUEST_HEAD:
                # The protocol alone would keep up to 128 lines of 8 KiB (a megabyte).
                await self.respond(431, [("content-type", "application/json")], _HEAD_TOO_LARGE)
                return None
            if request is not None:
                return request
            if protocol.handshake_exc is not None or self._eof_received:
                await self.flush()
                return None
            data = await self._read()
            received += len(data)
            self._feed(data)

    def prepare(self, request: WSRequest) -> WSResponse:
        """Check the upgrade and negotiate extensions; a 101 response is kept for
        :meth:`accept`, any other (400, 405, 426...) is returned to be sent."""
        response = self.protocol.accept(request)
        if response.status_code == 101:
            self._response = response
        return response

    def make_request(self, request: WSRequest) -> Request:
        """The upgrade request as the server's :class:`~trio_wsroutes.Request`."""
        path, _, query = request.path.partition("?")
        subprotocols = [
            token.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for token in value.split(",")
            if token.strip()
        ]
        return Request(
            path=unquote(path),
            headers=Headers(request.headers.raw_items()),
            query_string=query,
            client=self.peer,
            scheme=self.scheme,
            subprotocols=subprotocols,
        )

    async def respond(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        """Send an HTTP response; the connection then ends."""
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        raw = WSHeaders(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
            ]
        )
        for name, value in headers:
            if name.lower() != "content-length":
                raw[name] = value
        await self.send_response(WSResponse(status, phrase, raw, body))

    async def send_response(self, response: WSResponse) -> None:
        """Send a response the protocol prepared (an upgrade refused by it)."""
        self.protocol.send_response(response)
        self._take_output()
        await self.flush()

    # -- reading -------------------------------------------------------------------------

    async def _read(self) -> bytes:
        nb = self._nb
        if nb is None:
            try:
                return bytes(await self._stream.receive_some(_RECEIVE_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
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

    def _feed(self, data: bytes) -> None:
        if self._eof_received:
            return
        protocol = self.protocol
        if data:
            self._last_activity = trio.current_time()
            if (
                protocol.state is OPEN
                and self._fragments is None
                and not protocol.reader.buffer
                and not protocol.extensions
                and protocol.refused is None
            ):
                taken = self._parse_simple_frames(data)
                if taken == len(data):
                    return
                data = data[taken:]
            protocol.receive_data(data)
        else:
            self._eof_received = True
            protocol.receive_eof()
        self._take_output()
        self._items.extend(protocol.events_received())  # type: ignore[arg-type]

    def _parse_simple_frames(self, data: bytes) -> int:
        """The fast path of reading: whole, unfragmented, masked text or binary frames
        with a short header, at the start of ``data``, become messages here without the
        protocol's general parser. Returns how many bytes it took; anything else (control
        frames, fragments, long or oversized frames, a frame cut short, invalid UTF-8) is
        left, from there on, to the protocol, which parses it exactly as it would have."""
        items = self._items
        limit = self.protocol.max_message_size
        size = len(data)
        taken = 0
        while size - taken >= 6:
            first = data[taken]
            second = data[taken + 1]
            if (first != 0x81 and first != 0x82) or not second & 0x80:
                break  # not FIN + text/binary without RSV bits, or not masked
            length = second & 0x7F
            start = taken + 6
            if length == 126:
                if size - taken < 8:
                    break
                length = (data[taken + 2] << 8) | data[taken + 3]
                start = taken + 8
            elif length == 127:
                break
            end = start + length
            if end > size or (limit is not None and length > limit):
                break
            payload = apply_mask(data[start:end], data[start - 4 : start])
            if first == 0x81:
                try:
                    items.append(str(payload, "utf-8"))
                except UnicodeDecodeError:
                    break  # the protocol's path fails it with 1007
            else:
                items.append(payload)
            taken = end
        return taken

    def _on_event(self, event: WSFrame) -> str | bytes | Disconnect | None:
        opcode = event.opcode
        if opcode is _TEXT:
            if event.fin:
                try:
                    return str(event.data, "utf-8")
                except UnicodeDecodeError:
                    return self._fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._fragments = []
            self._fragment_cost = 0
            return self._text_fragment(event)
        if opcode is _BINARY:
            if event.fin:
                return bytes(event.data)
            self._decoder = None
            self._fragments = []
            self._fragment_cost = 0
            return self._binary_fragment(event)
        if opcode is _CONT:
            if self._decoder is not None:
                return self._text_fragment(event)
            return self._binary_fragment(event)
        if opcode is _CLOSE:
            self._fragments = self._decoder = None
            close = self.protocol.close_rcvd
            if close is None:  # pragma: no cover - the protocol always sets it
                return Disconnect(CloseCode.NO_STATUS, "")
            return Disconnect(int(close.code), close.reason)
        return None  # ping (answered by the protocol) or pong (activity, already noted)

    def _charge(self, size: int) -> Disconnect | None:
        self._fragment_cost += size + _FRAGMENT_COST
        limit = self.protocol.max_message_size
        if limit is not None and self._fragment_cost > limit:
            self._fragments = self._decoder = None
            return self._fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
        return None

    def _binary_fragment(self, event: WSFrame) -> bytes | Disconnect | None:
        fragments = self._fragments
        assert fragments is not None
        refused = self._charge(len(event.data))
        if refused is not None:
            return refused
        fragments.append(bytes(event.data))
        if not event.fin:
            return None
        self._fragments = None
        return b"".join(fragments)

    def _text_fragment(self, event: WSFrame) -> str | Disconnect | None:
        assert self._decoder is not None
        assert self._fragments is not None
        refused = self._charge(len(event.data))
        if refused is not None:
            return refused
        try:
            # Checked as it comes: invalid UTF-8 fails at its fragment (RFC 6455 8.1).
            self._fragments.append(self._decoder.decode(event.data, event.fin))
        except UnicodeDecodeError:
            return self._fail(CloseCode.INVALID_DATA, "invalid UTF-8")
        if not event.fin:
            return None
        text = "".join(self._fragments)
        self._fragments = self._decoder = None
        return text

    def _fail(self, code: int, reason: str) -> Disconnect:
        self._items = []
        self._next_item = 0
        self.protocol.fail_now(code, reason)
        self._take_output()
        return Disconnect(code, reason)

    def _ended(self) -> Disconnect:
        protocol = self.protocol
        close = protocol.close_rcvd
        if close is not None:
            return Disconnect(int(close.code), close.reason)
        error = protocol.parser_exc
        sent = protocol.close_sent
        if error is not None and not isinstance(error, EOFError) and sent is not None:
            return Disconnect(int(sent.code), sent.reason)  # the protocol failed it (1002...)
        return Disconnect(CloseCode.ABNORMAL, "")

    # -- writing -------------------------------------------------------------------------

    def _encode(self, frame: Frame) -> bytes:
        bits = self._shared_window_bits
        if bits is not None:
            wire = frame.wire_deflated(bits)
            return frame.wire() if wire is None else wire
        deflate = self._deflate
        if deflate is not None:
            opcode = _BINARY if frame.binary else _TEXT
            data = deflate.encode(WSFrame(opcode, frame.payload)).data
            return frame_header(0xC0 | opcode, len(data)) + data
        return frame.wire()

    def _take_output(self) -> None:
        """Move what the protocol wants written (pongs, close frames, responses, the
        half-close) to the owed output."""
        for data in self.protocol.data_to_send():
            if not data:
                self._eof_pending = True
            elif data[0] == _PONG_BYTE:
                # Every ping gets its pong while few are owed; past the bound, the last
                # owed pong is replaced by the newest (RFC 6455 5.5.3 asks only that the
                # most recent ping be answered), so a peer that pings without reading
                # cannot grow them.
                pongs = self._pongs
                if pongs is None:
                    pongs = self._pongs = []
                elif self._pong_bytes + len(data) > _MAX_PONG_BYTES:
                    replaced = pongs.pop()
                    self._pong_bytes -= len(replaced)
                    self.pending -= len(replaced)
                pongs.append(data)
                self._pong_bytes += len(data)
                self.pending += len(data)
            else:
                if self._control is None:
                    self._control = []
                self._control.append(data)
                self.pending += len(data)

    def _has_output(self) -> bool:
        return bool(
            self._rest is not None
            or self._control
            or self._pongs
            or (self._eof_pending and not self._eof_sent)
        )

    def _next_control(self) -> bytes | None:
        if self._control:
            data = self._control.pop(0)
        elif self._pongs:
            data = self._pongs.pop(0)
            self._pong_bytes -= len(data)
        else:
            return None
        self.pending -= len(data)
        return data

    def _flush_nowait(self) -> bool:
        """Write what is owed without waiting (plain TCP); ``True`` when all is out."""
        nb = self._nb
        if nb is None or self._broken:
            return self._broken
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
                data = self._next_control()
                if data is None:
                    break
                self._rest = memoryview(data)
                self.pending += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._break()
            return True
        if self._eof_pending and not self._eof_sent:
            self._eof_sent = True
            nb.shutdown_write()
        return True

    async def _drain(self) -> None:
        """Wait until the rest of the current frame is written (plain TCP)."""
        nb = self._nb
        assert nb is not None
        while self._rest is not None and not self._broken:
            try:
                await nb.wait_writable()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._break()
                break
            rest: memoryview | None = self._rest
            if rest is None:  # pyright: ignore[reportUnnecessaryComparison]
                break  # the reader wrote it while this task waited
            try:
                sent = nb.send_nowait(rest)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._break()
                break
            self.pending -= sent
            self._rest = rest[sent:] if sent < len(rest) else None
        if self._broken:
            raise TransportClosed("connection lost")

    async def _write(self, data: bytes) -> None:
        nb = self._nb
        if nb is None:
            await self._send_all(data)
            return
        if self._has_output():
            await self.flush()  # what is owed goes first
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sent = nb.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break()
            raise TransportClosed("connection lost") from exc
        if sent < len(data):
            self._rest = memoryview(data)[sent:]
            self.pending += len(data) - sent
            await self._drain()

    async def _send_all(self, data: bytes) -> None:
        if self._broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("connection lost")
        self.pending += len(data)
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._break()
            raise TransportClosed("connection lost") from exc
        except BaseException:
            # Cancelled mid-write: the stream cannot tell how much went out, so no
            # frame may follow (the connection ends without a close frame).
            self._break()
            raise
        self.pending -= len(data)

    def _break(self) -> None:
        self._broken = True
        self._rest = self._pongs = None
        self._pong_bytes = 0
        self._control = None
        self.pending = 0

    # -- the closing handshake -----------------------------------------------------------

    async def _finish(self) -> None:
        protocol = self.protocol
        if self._broken:
            return
        if protocol.state is OPEN and protocol.refused is None:
            # The engine ended without a close frame (its close deadline passed while
            # the peer was not reading): nothing more can reach the peer.
            return
        await self.flush()
        if protocol.state is CONNECTING:
            return  # an HTTP response: the connection ends after it
        # Done when both close frames have crossed (the server then closes TCP first, as
        # RFC 6455 7.1.1 asks), or the peer closed TCP. After a failure (1009, 1007,
        # 1002) keep reading, to discard the rest of what the peer sends, until its EOF:
        # closing with unread data would reset the connection and could destroy the
        # close frame on its way.
        while not self._eof_received and not self._broken:
            if protocol.close_rcvd is not None and protocol.close_sent is not None:
                break
            if protocol.refused is not None and self._eof_sent:
                # Failed: the peer's close frame is discarded with the rest, so wait
                # only while it keeps sending. Some clients never close TCP first.
                with trio.move_on_after(_FAILED_QUIET):
                    self._feed(await self._read())
                    continue
                break
            self._feed(await self._read())
            self._items = []
            self._next_item = 0
            await self.flush()
        await self.flush()


async def serve_stream(
    stream: trio.abc.Stream,
    options: NativeOptions,
    serve_websocket: ServeWebSocket,
    plain_http: PlainHTTP,
    *,
    scheme: str = "ws",
    peer: tuple[str, int] | None = None,
    handshake: PendingHandshake | None = None,
) -> None:
    """Run one connection on ``stream``: the TLS and HTTP handshakes, the server's
    ``serve_websocket`` (admission, the engine), the closing handshake. A request that
    is not an upgrade gets ``plain_http(path)``. Never raises for network errors;
    always closes ``stream``.

    ``handshake`` is the accept loop's record of the connection: its deadline bounds
    the handshakes (else ``handshake_timeout`` from now), it may be dropped to make room,
    and its slot is given back once the request is read."""
    transport = NativeTransport(stream, options, scheme=scheme, peer=peer)
    if handshake is None:
        handshake = PendingHandshake(None, trio.current_time() + options.handshake_timeout)
    try:
        request: WSRequest | None = None
        with handshake.guard():
            if isinstance(stream, trio.SSLStream):
                await stream.do_handshake()
            request = await transport.read_request()
        handshake.done()
        if request is None:
            return
        if not _upgrade_requested(request.headers):
            status, headers, body = plain_http(request.path.partition("?")[0])
            await transport.respond(status, headers, body)
            return
        response = transport.prepare(request)
        if response.status_code != 101:
            await transport.send_response(response)
            return
        upgrade = transport.make_request(request)
        # Held for the whole connection otherwise: the protocol's own copies of the
        # request and response (the server keeps its Request).
        del request, response
        await serve_websocket(transport, upgrade)
    except (trio.BrokenResourceError, trio.ClosedResourceError, TransportClosed):
        pass  # the peer left (or its TLS was broken)
    except BaseException as exc:
        if must_propagate(exc):
            raise
        logger.error("error on a native connection", exc_info=exc)  # noqa: TRY400
    finally:
        await transport.aclose()


class NativeServer:
    """Accepts TCP connections (with TLS when given a context) for :func:`serve_stream`,
    and knows how many are running."""

    def __init__(
        self,
        options: NativeOptions,
        serve_websocket: ServeWebSocket,
        plain_http: PlainHTTP,
        *,
        ssl_context: Any = None,
    ) -> None:
        self._options = options
        self._serve_websocket = serve_websocket
        self._plain_http = plain_http
        self._ssl_context = ssl_context
        self.handshakes: HandshakeSlots = HandshakeSlots(options.max_pending_handshakes)
        """The connections in their TLS or HTTP handshake."""
        self._active = 0
        self._idle = trio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        """Connections being served (closing ones included)."""
        return self._active

    async def wait_idle(self) -> None:
        """Wait until no connection is left."""
        await self._idle.wait()

    async def serve(
        self, listeners: list[trio.SocketListener], *, handler_nursery: trio.Nursery
    ) -> None:
        """Accept on ``listeners`` until cancelled; connections run in
        ``handler_nursery``. At most ``max_pending_handshakes`` connections are in
        their TLS or HTTP handshake at once (see ``_handshakes.py``)."""
        await serve_listeners(
            self._handle,
            listeners,
            slots=self.handshakes,
            handshake_seconds=self._options.handshake_timeout,
            handler_nursery=handler_nursery,
        )

    async def _handle(self, stream: trio.SocketStream, handshake: PendingHandshake) -> None:
        self._active += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            scheme, peer = "ws", _peer_of(stream)
            served: trio.abc.Stream
            if self._ssl_context is not None:
                # The TLS state (tens of KiB) is made once the ClientHello is all there.
                arrived = False
                with handshake.guard():
                    arrived = await client_hello_arrived(stream.socket)
                if not arrived or handshake.evicted:
                    return
                served = trio.SSLStream(stream, self._ssl_context, server_side=True)
                scheme = "wss"
            else:
                # Plain TCP: our own non-blocking I/O on the socket itself.
                served = SocketStream(socket.socket(fileno=stream.socket.detach()))
            await serve_stream(
                served,
                self._options,
                self._serve_websocket,
                self._plain_http,
                scheme=scheme,
                peer=peer,
                handshake=handshake,
            )
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()


def _peer_of(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        address: Any = stream.socket.getpeername()
    except OSError:
        return None
    return str(address[0]), int(address[1])
