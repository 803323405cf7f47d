"""The native transport's WebSocket codec, without I/O: bytes in, events out; frames out
as bytes.

:class:`ServerCodec` wraps the sans-I/O ``ServerProtocol`` of the ``websockets`` package
(its C speed-ups, its permessage-deflate) and adds what the server needs on top: a request
head bounded in bytes, a fast path for the messages that make up nearly all traffic
(whole, masked text or binary frames with a short header), fragments joined and their
UTF-8 checked as they come, each fragment charged against the size limit, a refusal of an
oversized frame that lets the engine answer what came before, pongs owed bounded in
bytes, and each published frame encoded (and compressed) once for every connection that
negotiated the same settings.

The protocol with the server's changes, and what a connection owes the peer, are in
``_ws_protocol.py``; the fast path is in ``_fast_frames.py``. This module and
``_ws_protocol.py`` are the only ones that touch ``websockets`` internals (the protocol's
reader, parser and state); ``pyproject.toml`` pins the ``websockets`` versions they were
checked against, and ``tests/transports/test_codec.py`` checks the fast path against the
protocol's own parser on random frames.
"""

from __future__ import annotations

import codecs
import email.utils
import http
import os
import sys
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import unquote

from websockets.datastructures import Headers as WSHeaders
from websockets.exceptions import ProtocolError as WSProtocolError
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Close, Opcode
from websockets.frames import Frame as WSFrame
from websockets.http11 import Request as WSRequest
from websockets.http11 import Response as WSResponse
from websockets.protocol import CONNECTING, OPEN
from websockets.typing import Subprotocol

from .._codes import CloseCode
from .._frames import Frame, frame_header
from .._request import Headers, Request
from ._base import Disconnect, Violation
from ._fast_frames import parse_simple_frames
from ._ws_protocol import MAX_PONG_BYTES as MAX_PONG_BYTES
from ._ws_protocol import CompressionMode as CompressionMode
from ._ws_protocol import Owed as Owed
from ._ws_protocol import ServerProtocol, extension_factories

__all__ = [
    "MAX_PONG_BYTES",
    "MAX_REQUEST_HEAD",
    "CompressionMode",
    "Owed",
    "ServerCodec",
    "UpgradeRequest",
    "upgrade_requested",
]

UpgradeRequest = WSRequest
"""An HTTP request as the codec parsed it."""

MAX_REQUEST_HEAD: Final = 16 * 1024
"""The most bytes a request line and its headers may take (as under hypercorn); past
it the request is answered with 431 and the connection ends."""
_FRAGMENT_COST: Final = 64
"""Bytes each fragment of a message is charged beyond its payload: empty or tiny
fragments cost memory and time too."""

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_CLOSE = Opcode.CLOSE


def upgrade_requested(request: UpgradeRequest) -> bool:
    """Whether ``request`` asks for a WebSocket (any other gets a plain answer)."""
    return any(
        token.strip().lower() == "websocket"
        for value in request.headers.get_all("Upgrade")
        for token in value.split(",")
    )


def _close_reason(reason: str) -> str:
    # A close frame's payload is at most 125 bytes: 2 for the code, 123 for the reason.
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:123].decode(errors="ignore")


class ServerCodec:
    """One connection's WebSocket protocol, server side, without I/O.

    Feed it what the peer sent (:meth:`feed`, ``b""`` for the end of the stream), take
    events (:meth:`next_request` while connecting, then :meth:`next_event`), encode
    frames (:meth:`encode`), and write what :attr:`owed` holds.
    """

    __slots__ = (
        "_decoder",
        "_deflate",
        "_fragment_cost",
        "_fragments",
        "_head",
        "_items",
        "_next_item",
        "_protocol",
        "_refusal_reported",
        "_response",
        "_shared_window_bits",
        "compression",
        "eof_received",
        "owed",
    )

    def __init__(self, *, max_size: int, compression: CompressionMode | None) -> None:
        self.owed = Owed()
        self.compression: CompressionMode | None = compression
        self._protocol = ServerProtocol(
            self.owed, extensions=extension_factories(compression), max_size=max_size
        )
        # What feeding produced and next_event() has not returned yet: frames the
        # protocol parsed (control frames, fragments...) and messages the fast path
        # parsed itself.
        self._items: list[WSFrame | WSRequest | str | bytes] = []
        self._next_item = 0
        self._head = 0  # bytes fed while connecting
        self._fragments: list[Any] | None = None
        self._fragment_cost = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._refusal_reported = False
        self._response: WSResponse | None = None
        self._shared_window_bits: int | None = None
        self._deflate: PerMessageDeflate | None = None
        self.eof_received = False

    # -- state ---------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Upgraded, and no close frame sent or received."""
        return self._protocol.state is OPEN

    @property
    def connecting(self) -> bool:
        """Before the 101 response (an HTTP response ends the connection)."""
        return self._protocol.state is CONNECTING

    @property
    def refused(self) -> bool:
        """A frame over the limit was refused (the rest of the input is discarded)."""
        return self._protocol.refused is not None

    @property
    def closing_done(self) -> bool:
        """Both close frames have crossed."""
        protocol = self._protocol
        return protocol.close_rcvd is not None and protocol.close_sent is not None

    @property
    def max_message_size(self) -> int | None:
        """The largest message taken; larger is refused from its frame header."""
        return self._protocol.max_message_size

    @max_message_size.setter
    def max_message_size(self, limit: int | None) -> None:
        self._protocol.max_message_size = limit

    def ended(self) -> Disconnect:
        """How the connection ended, once it has (the peer's close, a failure, a loss)."""
        protocol = self._protocol
        close = protocol.close_rcvd
        if close is not None:
            return Disconnect(int(close.code), close.reason)
        error = protocol.parser_exc
        sent = protocol.close_sent
        if error is not None and not isinstance(error, EOFError) and sent is not None:
            return Disconnect(int(sent.code), sent.reason)  # the protocol failed it (1002...)
        return Disconnect(CloseCode.ABNORMAL, "")

    # -- the handshake -------------------------------------------------------------------

    def next_request(self) -> UpgradeRequest | int | None:
        """The request that opens the connection once it is all there; ``431`` when its
        head is over :data:`MAX_REQUEST_HEAD`, ``400`` when it is malformed (the
        protocol has queued its answer), ``None`` while more is needed."""
        items, self._items = self._items, []
        request = next((item for item in items if isinstance(item, WSRequest)), None)
        # Once the request is parsed, what the protocol holds came after it.
        head = self._head if request is None else self._head - len(self._protocol.reader.buffer)
        if head > MAX_REQUEST_HEAD:
            # The protocol alone would keep up to 128 lines of 8 KiB (a megabyte).
            return 431
        if request is not None:
            return request
        if self._protocol.handshake_exc is not None:
            self._take_control()
            return 400
        return None

    def prepare(self, request: UpgradeRequest) -> WSResponse:
        """Check the upgrade and negotiate extensions; a 101 response is kept for
        :meth:`accept`, any other (400, 405, 426...) is returned, to be answered with
        :meth:`send_response`."""
        response = self._protocol.accept(request)
        if response.status_code == 101:
            self._response = response
        return response

    def upgrade_prepared(self) -> bool:
        """Whether :meth:`accept` can send a 101 (and has not yet)."""
        return self._response is not None

    def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        """Owe the 101 response :meth:`prepare` kept; the connection is open after it."""
        response = self._response
        assert response is not None
        self._response = None
        protocol = self._protocol
        if subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            protocol.subprotocol = Subprotocol(subprotocol)
        for name, value in headers:
            response.headers[name] = value
        protocol.send_response(response)
        if not protocol.reader.buffer:
            # The handshake parser keeps the request it parsed alive for the connection's
            # lifetime; nothing has been read past it, so a fresh frame parser, made when
            # data needs it, is the same one without it (a kilobyte and more per idle
            # connection).
            protocol.rest_parser()
        self._take_control()
        for extension in protocol.extensions:
            if isinstance(extension, PerMessageDeflate):
                if extension.local_no_context_takeover and self.compression == "shared":
                    self._shared_window_bits = extension.local_max_window_bits
                else:
                    self._deflate = extension

    def deny(self) -> None:
        """The upgrade will not be accepted (an HTTP answer follows)."""
        self._response = None

    def respond(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, *, head: bool = False
    ) -> None:
        """Owe an HTTP response; the connection ends after it. ``head``: the answer to a
        ``HEAD`` request, whose ``Content-Length`` is the body's and that has none."""
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
            if name.lower() == "connection":
                # One Connection header: the answer's options (a 426 names "Upgrade") and
                # "close", since the connection ends after it.
                del raw["Connection"]
                raw["Connection"] = f"{value}, close"
            elif name.lower() != "content-length":
                raw[name] = value
        self.send_response(WSResponse(status, phrase, raw, b"" if head else body))

    def send_response(self, response: WSResponse) -> None:
        """Owe a response the protocol prepared (an upgrade it refused)."""
        self._protocol.send_response(response)
        self._take_control()

    @staticmethod
    def make_request(
        request: UpgradeRequest, *, client: tuple[str, int] | None, scheme: str
    ) -> Request:
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
            client=client,
            scheme=scheme,
            subprotocols=subprotocols,
            method=sys.intern(request.method),  # one "GET" for every connection
        )

    # -- reading -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """What the peer sent (``b""``: the end of the stream)."""
        if self.eof_received:
            return
        protocol = self._protocol
        if data:
            state = protocol.state
            if state is CONNECTING:
                self._head += len(data)
            elif (
                state is OPEN
                and self._fragments is None
                and not protocol.reader.buffer
                and not protocol.extensions
                and protocol.refused is None
            ):
                taken = parse_simple_frames(data, protocol.max_message_size, self._items)
                if taken == len(data):
                    return
                data = data[taken:]
            protocol.receive_data(data)
        else:
            self.eof_received = True
            protocol.receive_eof()
        self._take_control()
        self._items.extend(protocol.events_received())  # type: ignore[arg-type]

    def next_event(self) -> str | bytes | Violation | Disconnect | None:
        """The next message (``str`` text, ``bytes`` binary), a :class:`Violation` (a
        frame over the limit, once), a :class:`Disconnect` (the peer's close, or a failure
        the codec detected: invalid UTF-8, too many fragments); ``None`` when what was
        fed holds no more (see :meth:`ended` for a stream that ended)."""
        items = self._items
        while self._next_item < len(items):
            item = items[self._next_item]
            self._next_item += 1
            if type(item) is str or type(item) is bytes:
                return item  # parsed by the fast path
            assert isinstance(item, WSFrame)
            result = self._on_frame(item)
            if result is not None:
                return result
        if items:
            self._items = []
            self._next_item = 0
        refused = self._protocol.refused
        if refused is not None and not self._refusal_reported:
            self._refusal_reported = True
            return Violation(*refused)
        return None

    def discard_events(self) -> None:
        """Drop what was parsed and not taken (while closing)."""
        self._items = []
        self._next_item = 0

    def _on_frame(self, event: WSFrame) -> str | bytes | Disconnect | None:
        opcode = event.opcode
        if opcode is _TEXT:
            if event.fin:
                try:
                    return str(event.data, "utf-8")
                except UnicodeDecodeError:
                    return self.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
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
            close = self._protocol.close_rcvd
            if close is None:  # pragma: no cover - the protocol always sets it
                return Disconnect(CloseCode.NO_STATUS, "")
            return Disconnect(int(close.code), close.reason)
        return None  # ping (answered by the protocol) or pong (activity, already noted)

    def _charge(self, size: int) -> Disconnect | None:
        self._fragment_cost += size + _FRAGMENT_COST
        limit = self._protocol.max_message_size
        if limit is not None and self._fragment_cost > limit:
            self._fragments = self._decoder = None
            return self.fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
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
            return self.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
        if not event.fin:
            return None
        text = "".join(self._fragments)
        self._fragments = self._decoder = None
        return text

    # -- writing -------------------------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        """``frame`` as wire bytes for this connection (compressed as negotiated)."""
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

    def ping(self) -> None:
        """Owe a ping."""
        self._protocol.send_ping(os.urandom(4))
        self._take_control()

    def close(self, code: int, reason: str) -> tuple[int, str]:
        """Owe the close frame (failing the connection after a refusal); returns the code
        and reason sent (1011 for a code the protocol does not allow)."""
        reason = _close_reason(reason)
        try:
            Close(code, reason).check()
        except WSProtocolError:
            code, reason = CloseCode.INTERNAL_ERROR, ""
        protocol = self._protocol
        if protocol.refused is not None:
            protocol.fail_now(code, reason)
        else:
            protocol.send_close(code, reason)
        self._take_control()
        return code, reason

    def fail(self, code: int, reason: str) -> Disconnect:
        """Fail the connection (close frame, then the half-close) and drop what was
        parsed; the :class:`Disconnect` the engine reports."""
        self.discard_events()
        self._protocol.fail_now(code, reason)
        self._take_control()
        return Disconnect(code, reason)

    def _take_control(self) -> None:
        """Move the protocol's own output (responses, close frames) to :attr:`owed`."""
        for data in self._protocol.data_to_send():
            self.owed.add_control(data)
