"""The native server: WebSocket connections over any Trio stream, on the native
transport (``_native_transport.py``).

:func:`serve_stream` runs one connection (the TLS and HTTP handshakes, admission by the
server, the engine, the closing handshake); :class:`NativeServer` accepts TCP
connections for it, with TLS when given a context, and bounds the connections in their
handshakes (``_handshakes.py``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from .._containment import must_propagate
from .._request import Request
from ._base import TransportClosed
from ._codec import MAX_REQUEST_HEAD as MAX_REQUEST_HEAD
from ._codec import CompressionMode as CompressionMode
from ._codec import UpgradeRequest, upgrade_requested
from ._handshakes import (
    HandshakeSlots,
    PendingHandshake,
    client_hello_arrived,
    serve_listeners,
)
from ._native_transport import NativeOptions as NativeOptions
from ._native_transport import NativeTransport as NativeTransport
from ._native_transport import NonBlockingTransport as NonBlockingTransport
from ._native_transport import native_transport as native_transport
from ._streams import SocketStream

__all__ = [
    "MAX_REQUEST_HEAD",
    "CompressionMode",
    "NativeOptions",
    "NativeServer",
    "NativeTransport",
    "NonBlockingTransport",
    "PlainHTTP",
    "ServeWebSocket",
    "native_transport",
    "serve_stream",
]

logger = logging.getLogger("trio_wsroutes")

ServeWebSocket = Callable[["NativeTransport", Request], Awaitable[None]]
"""The server's side of an upgrade: admit or deny, run the connection, ``aclose``."""
PlainHTTP = Callable[[Request], Awaitable[tuple[int, Sequence[tuple[str, str]], bytes]]]
"""The answer to a plain HTTP request for a path: status, headers and body."""


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
    transport = native_transport(stream, options, scheme=scheme, peer=peer)
    if handshake is None:
        handshake = PendingHandshake(None, trio.current_time() + options.handshake_timeout)
    try:
        request: UpgradeRequest | None = None
        with handshake.guard():
            if isinstance(stream, trio.SSLStream):
                await stream.do_handshake()
            request = await transport.read_request()
        handshake.done()
        if request is None:
            return
        if not upgrade_requested(request):
            status, headers, body = await plain_http(transport.make_request(request))
            await transport.respond(status, headers, body, head=request.method == "HEAD")
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

    async def _handle(self, accepted: trio.SocketStream, handshake: PendingHandshake) -> None:
        self._active += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        # Closed at the end, whatever happens (see serve_listeners); None once detached.
        sock: trio.socket.SocketType | None = accepted.socket
        try:
            scheme, peer = "ws", _peer_of(accepted)
            served: trio.abc.Stream
            if self._ssl_context is not None:
                # The TLS state (tens of KiB) is made once the ClientHello is all there.
                arrived = False
                with handshake.guard():
                    arrived = await client_hello_arrived(accepted.socket)
                if not arrived or handshake.evicted:
                    return
                served = trio.SSLStream(accepted, self._ssl_context, server_side=True)
                scheme = "wss"
            else:
                # Plain TCP: our own non-blocking I/O on the socket itself. This frame
                # lasts as long as the connection: it lets go of Trio's stream and socket.
                served = SocketStream(socket.socket(fileno=accepted.socket.detach()))
                sock = None
            del accepted
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
            handshake.done()
            if sock is not None:
                # What SocketStream.aclose does, without its checkpoint: the task ends
                # here, and aclose_forcefully's cancelled scope and Cancelled would cost
                # a few per cent of a handshake.
                sock.close()
            self._active -= 1
            if self._active == 0:
                self._idle.set()


def _peer_of(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        address: Any = stream.socket.getpeername()
    except OSError:
        return None
    return str(address[0]), int(address[1])
