"""The in-memory connection to the native transport (for
:class:`trio_wsroutes.testing.TestClient` with ``transport="native"``): the server's
``serve_stream`` on one end of an in-memory byte stream, the typed client's WebSocket
(``websockets``' Trio client) on the other."""

# The wire reads whether its connection is paused.
# pyright: reportPrivateUsage=false

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import trio
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.protocol import OPEN
from websockets.trio.client import ClientConnection
from websockets.typing import Subprotocol

from ._client_errors import ConnectionDenied, HandshakeFailed
from ._client_websocket import open_websocket
from ._server import WebSocketServer, native_endpoints
from ._testing_connection import Closed, TestConnection
from ._transports._memory import MemoryStream, memory_stream_pair
from ._transports.native import serve_stream

__all__ = ["NativeConnection", "Wire"]


class Wire(trio.abc.HalfCloseableStream):
    """The client end of an in-memory connection as the client's WebSocket reads it:
    it counts what is written, and a paused client reads nothing (its bytes stay in the
    buffer, as in a socket nobody reads)."""

    def __init__(self, stream: MemoryStream, connection: NativeConnection) -> None:
        self.stream = stream
        self.written = 0
        self._connection = connection

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)
        self.written += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await self.stream.wait_readable()
        connection = self._connection
        if connection.accepted:
            await connection._reading.wait()
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


class NativeConnection(TestConnection):
    """A connection to the native transport over an in-memory byte stream; the client
    side is the typed client's WebSocket (``websockets``' Trio client)."""

    __test__ = False

    def __init__(
        self,
        default_timeout: float,
        *,
        resource: str,
        headers: Sequence[tuple[str, str]],
        subprotocols: Sequence[str],
        peer: tuple[str, int],
        compression: bool,
    ) -> None:
        super().__init__(default_timeout)
        stream, self._server_stream = memory_stream_pair(peer)
        self._wire = Wire(stream, self)
        self._resource = resource
        self._headers = headers
        self._subprotocols = subprotocols
        self._compression = compression
        self._ws: ClientConnection | None = None
        self._frame_ends: list[int] = []
        self._close_asked: tuple[int, str] | None = None
        self._closing = trio.Event()

    @property
    def unread_by_server(self) -> int:
        consumed = self._wire.stream.read_by_peer
        self._frame_ends = [end for end in self._frame_ends if end > consumed]
        return len(self._frame_ends)

    async def _send_message(self, text: str | None, data: bytes | None) -> None:
        ws = self._ws
        if ws is None or ws.protocol.state is not OPEN:
            raise RuntimeError("send on a closed WebSocket")
        try:
            await ws.send(text if text is not None else cast(bytes, data))
        except ConnectionClosed:
            raise RuntimeError("send on a closed WebSocket") from None
        # The frame ends where the bytes written so far end.
        self._frame_ends.append(self._wire.written)

    async def _send_close(self, code: int, reason: str) -> None:
        # The client's task runs the closing handshake; close() waits for the server.
        if self._close_asked is None:
            self._close_asked = (code, reason)
            self._closing.set()
        await trio.lowlevel.checkpoint()

    async def _close_when_asked(self, ws: ClientConnection) -> None:
        await self._closing.wait()
        assert self._close_asked is not None
        await ws.aclose(*self._close_asked)

    async def _run_server(self, server: WebSocketServer, peer: tuple[str, int]) -> None:
        options, serve_websocket, plain_http = native_endpoints(server)
        try:
            await serve_stream(
                self._server_stream, options, serve_websocket, plain_http, peer=peer
            )
        finally:
            # What the server answered, if anything, the client's task reads.
            self._app_done.set()

    async def _run_client(self) -> None:
        try:
            async with open_websocket(
                f"ws://testserver{self._resource}",
                stream=self._wire,
                additional_headers=list(self._headers),
                user_agent_header=None,
                subprotocols=[Subprotocol(name) for name in self._subprotocols] or None,
                compression=None,
                extensions=[ClientPerMessageDeflateFactory()] if self._compression else None,
                max_size=None,
                ping_interval=None,
                open_timeout=None,  # TestClient.connect bounds the handshake
                close_timeout=self._timeout,
            ) as ws:
                self._ws = ws
                self.accepted = True
                self.subprotocol = ws.subprotocol
                response = ws.response
                assert response is not None
                self.response_headers = [
                    (name.lower(), value) for name, value in response.headers.raw_items()
                ]
                self._handshake.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._close_when_asked, ws)
                    try:
                        while True:
                            self._from_app_send.send_nowait(await ws.recv())
                    except ConnectionClosed as closed:
                        if closed.rcvd is not None:
                            code, reason = int(closed.rcvd.code), closed.rcvd.reason
                            self._server_closes(Closed(code, reason))
                    nursery.cancel_scope.cancel()
        except ConnectionDenied as denied:
            self.denied = denied
            self._server_closed = Closed(1006, "")
            self._handshake.set()
        except (HandshakeFailed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if not self._handshake.is_set():
                self.denied = ConnectionDenied(502)
                self._handshake.set()
            if self.accepted:
                self._server_closes(Closed(1006, ""))
