"""The native transport: a WebSocket server of its own on Trio sockets.

The protocol is the sans-I/O ``ServerProtocol`` of the ``websockets`` package (its C
speed-ups, its permessage-deflate); the I/O is ours. Each TCP connection gets a
:class:`NativeTransport` that owns the socket and three paths to it:

* **reading**: the engine's reader calls :meth:`~NativeTransport.receive`, which reads
  the socket, feeds the protocol, answers pings, reassembles fragmented messages and
  checks their UTF-8 as they come (invalid text fails the connection with 1007 at the
  first bad fragment). A frame whose header announces more than ``max_payload_length``
  is refused before its payload is read: ``receive`` reports a
  :class:`~._base.Violation` (1009), and the rest of the peer's data is discarded.
* **writing**: every write first tries the socket without waiting; what the socket
  does not take goes to a per-connection buffer that a flusher task drains when the
  socket is writable. :meth:`~NativeTransport.send` waits only while that buffer is
  over its limit, and since the frame is in the buffer before the wait, a cancelled
  send never leaves half a frame: a close frame can always follow.
  :meth:`~NativeTransport.try_send_nowait` is the fan-out fast path: the wire bytes of a
  :class:`~trio_wsroutes.Frame` are built once (:meth:`Frame.wire`) and shared.
* **compression**: by default the server answers permessage-deflate offers with
  ``server_no_context_takeover`` (RFC 7692 lets a server add it even when the client
  did not ask), so each message compresses on its own and to the same bytes for every
  connection with the same window: :meth:`Frame.wire_deflated` compresses once per
  publish. ``"context_takeover"`` keeps a compressor per connection instead (a better
  ratio, a compression per recipient and about 100 KiB per connection).

Closing follows RFC 6455: the server sends its close frame, half-closes TCP once the
peer answered (or at once when failing the connection), and waits up to
``close_timeout`` for the peer to close before it drops the socket.
"""

from __future__ import annotations

import codecs
import email.utils
import http
import logging
import math
import os
import socket
from collections import deque
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

from .._messages import Frame, frame_header
from ._base import Disconnect, TransportClosed, Violation

__all__ = [
    "CompressionMode",
    "NativeOptions",
    "NativeTransport",
    "Scope",
    "serve_connection",
]

logger = logging.getLogger("trio_wsroutes")

CompressionMode = Literal["shared", "context_takeover"]
"""How the native transport compresses: ``"shared"`` (no context takeover, compressed
once per message for all recipients) or ``"context_takeover"`` (per connection)."""

Scope = dict[str, Any]
"""The upgrade request in the shape of an ASGI ``websocket`` scope (path, query_string,
headers, client, scheme, subprotocols), so the server builds its ``Request`` one way."""

_RECEIVE_SIZE: Final = 65536
_MAX_WRITEV: Final = 64
_CLIENT_WINDOW_BITS: Final = 12
"""Asked of clients that offer ``client_max_window_bits``: a 4 KiB window keeps the
decompressor of each connection small."""

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_PING, _PONG, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE


@attrs.frozen
class NativeOptions:
    """Settings of the native transport, taken from the server's options."""

    max_payload_length: int = 16 * 1024 * 1024
    compression: CompressionMode | None = "shared"
    heartbeat_interval: float | None = None
    heartbeat_timeout: float = 20.0
    close_timeout: float = 5.0
    handshake_timeout: float = 10.0
    write_buffer_limit: int = 64 * 1024
    """Bytes a connection's own write buffer holds before ``send`` waits (what the
    socket did not take at once)."""

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


_FAILED_QUIET = 0.2
"""After failing a connection, how long the peer may stay silent before the socket is
closed (longer than a round trip on any sane network; the close frame is out already)."""


class _ServerProtocol(ServerProtocol):
    """``ServerProtocol`` that refuses an oversized frame without failing at once.

    ``websockets`` fails the connection (close frame, EOF) as soon as a frame header
    announces more than ``max_size``. Here the refusal is recorded instead and the rest
    of the input is discarded, unread into memory, so that the engine can first answer
    the messages that came before; its close then fails the connection with 1009.
    """

    refused: tuple[int, str] | None = None

    def fail(self, code: int, reason: str = "") -> None:
        if code == 1009 and self.state is OPEN and self.refused is None:
            self.refused = (code, reason)
            self.parser = self._discard_refused()
            next(self.parser)
            return
        super().fail(code, reason)

    def fail_now(self, code: int, reason: str) -> None:
        """Fail the connection (close frame, then EOF), even after a refusal."""
        Protocol.fail(self, code, reason)

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

    def __init__(self, sock: socket.socket, options: NativeOptions, nursery: trio.Nursery) -> None:
        self._sock = sock
        self._options = options
        self._nursery = nursery
        self.protocol: _ServerProtocol = _ServerProtocol(
            extensions=options.extension_factories(),
            max_size=options.max_payload_length,
        )
        self._out: deque[bytes | memoryview] = deque()
        self._out_size = 0
        self._limit = options.write_buffer_limit
        self._eof_pending = False
        self._eof_sent = False
        self._broken = False
        self._aborted = False
        self._has_output = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()
        self._events: deque[Any] = deque()
        self._eof_received = False
        self._fragments: list[Any] | None = None
        self._decoder: codecs.IncrementalDecoder | None = None
        self._last_activity: float | None = None
        self._reading = False
        self._emptied = False
        self._dead: Disconnect | None = None
        self._refusal_reported = False
        self._response: WSResponse | None = None
        self._shared_window_bits: int | None = None
        self._deflate: PerMessageDeflate | None = None

    # -- the engine's interface -----------------------------------------------------------

    @property
    def last_activity(self) -> float | None:
        """When bytes last came from the peer (any frame, pongs included)."""
        return self._last_activity

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        """Send the 101 response prepared by the handshake."""
        await trio.lowlevel.checkpoint()
        response = self._response
        if response is None or self._broken:
            raise TransportClosed("client left before the upgrade")
        self._response = None
        if subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self.protocol.subprotocol = Subprotocol(subprotocol)
        for name, value in headers:
            response.headers[name] = value
        self.protocol.send_response(response)
        self._flush_protocol()
        for extension in self.protocol.extensions:
            if isinstance(extension, PerMessageDeflate):
                if extension.local_no_context_takeover and self._options.compression == "shared":
                    self._shared_window_bits = extension.local_max_window_bits
                else:
                    self._deflate = extension
        if self._options.heartbeat_interval is not None:
            self._nursery.start_soon(
                self._heartbeat, self._options.heartbeat_interval, self._options.heartbeat_timeout
            )

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        """Answer the upgrade request with an HTTP response and close."""
        await trio.lowlevel.checkpoint()
        self._response = None
        self.respond(status, headers, body)

    async def receive(self) -> str | bytes | Violation | Disconnect:
        """The next message; fragments are joined, text is checked as UTF-8."""
        protocol = self.protocol
        events = self._events
        while True:
            while events:
                result = self._on_event(events.popleft())
                if result is not None:
                    return result
            if protocol.refused is not None:
                if not self._refusal_reported:
                    self._refusal_reported = True
                    return Violation(*protocol.refused)
                await trio.sleep_forever()  # the engine stops reading after a refusal
            if self._dead is not None:
                return self._dead
            if protocol.state is not OPEN or self._eof_received:
                return self._ended()
            data = await self._recv()
            self._feed(data)
            events.extend(protocol.events_received())

    async def send(self, frame: Frame) -> None:
        """Write ``frame``; wait while this connection's write buffer is over its limit.

        The frame is in the buffer before the wait, so cancelling the wait never cuts a
        frame.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._broken:
            raise TransportClosed("connection closed")
        if self.protocol.state is not OPEN:
            # Closing: no data frame may follow a close frame. The reader reports how
            # the connection ended (the peer's own code, if it closed it).
            return
        self._write(self._encode(frame))
        while self._out_size > self._limit and not self._broken:
            await self._drained.park()

    def try_send_nowait(self, frame: Frame) -> bool:
        """Write ``frame`` now if nothing is waiting in the write buffer."""
        if self._out or self._broken or self.protocol.state is not OPEN:
            return False
        self._write(self._encode(frame))
        return True

    async def close(self, code: int, reason: str) -> None:
        """Queue the close frame (after what is buffered); the closing handshake is
        finished by :func:`serve_connection`."""
        await trio.lowlevel.checkpoint()
        if self._broken:
            raise TransportClosed("connection closed")
        protocol = self.protocol
        if protocol.state is not OPEN:
            return
        reason = _close_reason(reason)
        try:
            Close(code, reason).check()
        except WSProtocolError:
            logger.warning("invalid close code %r; closing with 1011 instead", code)
            code, reason = 1011, ""
        if protocol.refused is not None:
            protocol.fail_now(code, reason)
        else:
            protocol.send_close(code, reason)
        self._flush_protocol()

    # -- the handshake and plain HTTP ----------------------------------------------------

    async def read_request(self) -> WSRequest | None:
        """The HTTP request that opens the connection, or ``None`` if none came."""
        protocol = self.protocol
        while True:
            for event in protocol.events_received():
                if isinstance(event, WSRequest):
                    return event
            if protocol.handshake_exc is not None or self._eof_received:
                self._flush_protocol()  # an error response, if the protocol wrote one
                return None
            self._feed(await self._recv())

    def prepare(self, request: WSRequest) -> WSResponse:
        """Check the upgrade and negotiate extensions; a 101 response is kept for
        :meth:`accept`, any other (400, 405, 426...) is returned to be sent."""
        response = self.protocol.accept(request)
        if response.status_code == 101:
            self._response = response
        return response

    def respond(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        """Send an HTTP response and end the connection."""
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
        self.send_response(WSResponse(status, phrase, raw, body))

    def send_response(self, response: WSResponse) -> None:
        """Send a response the protocol prepared (an upgrade refused by it)."""
        self.protocol.send_response(response)
        self._flush_protocol()

    async def finish(self, grace: float) -> None:
        """After the engine: flush, wait for the peer's close (or EOF) up to ``grace``."""
        protocol = self.protocol
        if self._broken:
            return
        if protocol.state is OPEN and protocol.refused is None:
            # The engine ended without a close frame (its close deadline passed while
            # the peer was not reading): nothing more can reach the peer.
            return
        with trio.move_on_after(grace):
            # Done when both close frames have crossed (the server then closes TCP
            # first, as RFC 6455 7.1.1 asks), or the peer closed TCP. After a failure
            # (1009, 1007, 1002) keep reading, to discard the rest of what the peer
            # sends, until its EOF: closing with unread data would reset the connection
            # and could destroy the close frame on its way.
            while not self._eof_received and not self._broken:
                if protocol.close_rcvd is not None and protocol.close_sent is not None:
                    break
                if protocol.refused is not None and self._eof_sent:
                    # Failed: the peer's close frame is discarded with the rest, so wait
                    # only while it keeps sending. Some clients never close TCP first.
                    with trio.move_on_after(_FAILED_QUIET):
                        self._feed(await self._recv())
                        continue
                    break
                self._feed(await self._recv())
                self._events.clear()
                protocol.events_received()
            await self.wait_flushed()

    async def wait_flushed(self) -> None:
        """Wait until everything written has gone to the socket."""
        while (self._out or (self._eof_pending and not self._eof_sent)) and not self._broken:
            await self._drained.park()

    # -- reading -------------------------------------------------------------------------

    async def _recv(self) -> bytes:
        sock = self._sock
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._aborted:
            # A read shorter than the buffer emptied the socket: wait for readiness
            # instead of spending a recv on EAGAIN first (as libuv does). On a
            # request/response connection that is one syscall less per message.
            if not self._emptied:
                try:
                    data = sock.recv(_RECEIVE_SIZE)
                except BlockingIOError:
                    pass
                except OSError:
                    return b""  # reset by the peer: the same as an EOF without a close frame
                else:
                    self._emptied = 0 < len(data) < _RECEIVE_SIZE
                    return data
            self._emptied = False
            self._reading = True
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                break
            finally:
                self._reading = False
        return b""

    def _feed(self, data: bytes) -> None:
        if self._eof_received:
            return
        if data:
            self._last_activity = trio.current_time()
            self.protocol.receive_data(data)
        else:
            self._eof_received = True
            self.protocol.receive_eof()
        self._flush_protocol()

    def _on_event(self, event: WSFrame) -> str | bytes | Disconnect | None:
        opcode = event.opcode
        if opcode is _TEXT:
            if event.fin:
                try:
                    return str(event.data, "utf-8")
                except UnicodeDecodeError:
                    return self._fail(1007, "invalid UTF-8")
            self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._fragments = []
            return self._text_fragment(event)
        if opcode is _BINARY:
            if event.fin:
                return bytes(event.data)
            self._decoder = None
            self._fragments = [bytes(event.data)]
            return None
        if opcode is _CONT:
            if self._decoder is not None:
                return self._text_fragment(event)
            assert self._fragments is not None
            self._fragments.append(bytes(event.data))
            if event.fin:
                data = b"".join(self._fragments)
                self._fragments = None
                return data
            return None
        if opcode is _CLOSE:
            close = self.protocol.close_rcvd
            if close is None:  # pragma: no cover - the protocol always sets it
                return Disconnect(1005, "")
            return Disconnect(int(close.code), close.reason)
        return None  # ping (answered by the protocol) or pong (activity, already noted)

    def _text_fragment(self, event: WSFrame) -> str | Disconnect | None:
        assert self._decoder is not None
        assert self._fragments is not None
        try:
            # Checked as it comes: invalid UTF-8 fails at its fragment (RFC 6455 8.1).
            self._fragments.append(self._decoder.decode(event.data, event.fin))
        except UnicodeDecodeError:
            return self._fail(1007, "invalid UTF-8")
        if not event.fin:
            return None
        text = "".join(self._fragments)
        self._fragments = self._decoder = None
        return text

    def _fail(self, code: int, reason: str) -> Disconnect:
        self.protocol.fail(code, reason)
        self._flush_protocol()
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
        return Disconnect(1006, "")

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

    def _flush_protocol(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self._write(data)
            else:
                self._eof_pending = True
                if not self._out:
                    self._shutdown_write()
                else:
                    self._has_output.unpark()

    def _write(self, data: bytes) -> None:
        if self._broken:
            return
        if not self._out:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._break()
                return
            if sent == len(data):
                return
            self._out.append(memoryview(data)[sent:])
            self._out_size += len(data) - sent
            self._has_output.unpark()
            return
        self._out.append(data)
        self._out_size += len(data)

    def _shutdown_write(self) -> None:
        if self._eof_sent or self._broken:
            return
        self._eof_sent = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._break()
        self._drained.unpark_all()

    async def flusher(self) -> None:
        """Drain the write buffer whenever the socket can take more (one per connection)."""
        sock = self._sock
        out = self._out
        while not self._broken:
            if not out:
                if self._eof_pending:
                    self._shutdown_write()
                self._drained.unpark_all()
                await self._has_output.park()
                continue
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError:
                return
            try:
                sent = sock.sendmsg([out[i] for i in range(min(len(out), _MAX_WRITEV))])
            except BlockingIOError:
                continue
            except OSError:
                self._break()
                return
            self._out_size -= sent
            while sent:
                head = out[0]
                if len(head) <= sent:
                    sent -= len(head)
                    out.popleft()
                else:
                    out[0] = memoryview(head)[sent:]
                    sent = 0
            if self._out_size <= self._limit:
                self._drained.unpark_all()

    def _break(self) -> None:
        self._broken = True
        self._out.clear()
        self._out_size = 0
        self._drained.unpark_all()
        self._has_output.unpark_all()

    # -- heartbeat and teardown ----------------------------------------------------------

    async def _heartbeat(self, interval: float, pong_timeout: float) -> None:
        """A ping every ``interval``; a peer that sends nothing (no pong) for
        ``pong_timeout`` after a ping is dead: fail the connection with 1011."""
        protocol = self.protocol
        next_ping = trio.current_time() + interval
        sent_at: float | None = None
        while True:
            wake = next_ping if sent_at is None else min(next_ping, sent_at + pong_timeout)
            await trio.sleep_until(wake)
            if protocol.state is not OPEN or self._broken:
                return
            now = trio.current_time()
            if sent_at is not None and (self._last_activity or -math.inf) >= sent_at:
                sent_at = None  # answered, or something else came: alive
            if sent_at is not None and now >= sent_at + pong_timeout:
                if not self._reading:
                    sent_at = None  # the engine is busy, not reading: a pong may be waiting
                else:
                    logger.info("closing a connection whose peer did not answer a ping")
                    self._dead = Disconnect(1011, "heartbeat timeout")
                    protocol.fail_now(1011, "heartbeat timeout")
                    self._flush_protocol()
                    self.abort()
                    return
            if now >= next_ping:
                if sent_at is None:
                    protocol.send_ping(os.urandom(4))
                    self._flush_protocol()
                    sent_at = now
                next_ping = now + interval

    def abort(self) -> None:
        """Stop all I/O on the socket (tasks waiting on it wake up); idempotent."""
        if self._aborted:
            return
        self._aborted = True
        self._break()
        trio.lowlevel.notify_closing(self._sock)


async def serve_connection(
    sock: socket.socket,
    options: NativeOptions,
    admit: Callable[[NativeTransport, Scope], Awaitable[None]],
    plain_http: Callable[[str], tuple[int, list[tuple[str, str]], bytes]],
) -> None:
    """Run one TCP connection: the handshake, ``admit`` (routing, auth, the engine),
    the closing handshake. ``plain_http(path)`` answers requests that are not upgrades.
    Never raises for network errors; always closes ``sock``."""
    sock.setblocking(False)
    try:
        async with trio.open_nursery() as nursery:
            transport = NativeTransport(sock, options, nursery)
            nursery.start_soon(transport.flusher)
            try:
                await _run(transport, sock, options, admit, plain_http)
            except Exception:
                logger.exception("error on a native connection")
            finally:
                transport.abort()
                nursery.cancel_scope.cancel()
    finally:
        sock.close()


async def _run(
    transport: NativeTransport,
    sock: socket.socket,
    options: NativeOptions,
    admit: Callable[[NativeTransport, Scope], Awaitable[None]],
    plain_http: Callable[[str], tuple[int, list[tuple[str, str]], bytes]],
) -> None:
    request: WSRequest | None = None
    with trio.move_on_after(options.handshake_timeout):
        request = await transport.read_request()
    if request is None:
        with trio.move_on_after(options.close_timeout):
            await transport.wait_flushed()
        return
    if not _upgrade_requested(request.headers):
        path = request.path.partition("?")[0]
        status, headers, body = plain_http(path)
        transport.respond(status, headers, body)
    else:
        response = transport.prepare(request)
        if response.status_code != 101:
            transport.send_response(response)
        else:
            await admit(transport, _scope(request, sock))
            if transport.protocol.state is not CONNECTING:  # accepted (not denied)
                await transport.finish(options.close_timeout)
                return
    with trio.move_on_after(options.close_timeout):
        await transport.wait_flushed()


def _scope(request: WSRequest, sock: socket.socket) -> Scope:
    path, _, query = request.path.partition("?")
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in request.headers.raw_items()
    ]
    subprotocols = [
        token.strip()
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for token in value.split(",")
        if token.strip()
    ]
    try:
        peer: Any = sock.getpeername()
        client: tuple[str, int] | None = (str(peer[0]), int(peer[1]))
    except OSError:
        client = None
    return {
        "type": "websocket",
        "http_version": "1.1",
        "scheme": "ws",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "headers": headers,
        "client": client,
        "subprotocols": subprotocols,
    }
