"""Test your routes without sockets: an in-memory client for either transport.

::

    from trio_wsroutes.testing import TestClient

    async def test_ping():
        async with TestClient(server) as client, client.connect("/chat/general") as ws:
            reply = await ws.request("ping", {"timestamp": 1.0})
            assert reply["type"] == "pong"

``TestClient(server)`` speaks ASGI to the server exactly as hypercorn does (same scope,
same events, including the ``websocket.http.response`` extension for denials).
``TestClient(server, transport="native")`` runs the native transport instead, over an
in-memory byte stream with a bounded buffer each way (like a socket's): the real
handshake, frames, close codes, pings, 1009 before a payload is read, and backpressure
when the client stops reading. Either way everything above the socket is exercised.

The typed client of :mod:`trio_wsroutes.client` runs in memory too, over the native
transport: ``async with client.client(route, path) as typed`` gives the same ``Client``
as ``connect(url, route)``. A :class:`ClientFactory` opens such clients in memory
(:meth:`TestClient.client`) or live (:func:`live_clients`), so a test moves from one to
the other by changing one fixture. With pytest-trio, the fixtures ``ws_client``,
``ws_live_server``, ``ws_typed_client`` and ``ws_typed_live_client`` (from the plugin this
package registers) need only a ``ws_server`` fixture of yours.
"""

# TestClient drives its connections' private sides.
# pyright: reportPrivateUsage=false

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Literal, Protocol, TypedDict, TypeVar, Unpack, cast
from urllib.parse import unquote, urlencode

import attrs
import orjson
import trio
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.protocol import OPEN
from websockets.trio.client import ClientConnection
from websockets.typing import Subprotocol

from . import client as _client
from ._client_websocket import open_websocket
from ._envelope import MessageId, encode_envelope, request_id_of
from ._history import Position
from ._lifespan import LifespanDriver
from ._routes import WebSocketRoute
from ._server import BoundAddress, WebSocketServer, native_endpoints
from ._transports._memory import MemoryStream, memory_stream_pair
from ._transports.native import serve_stream
from ._types import ASGIApp
from .client import (
    Backoff,
    Client,
    HandshakeFailed,
    RecoveryInfo,
    connect,
    open_streams_with,
)

# The client's exceptions, raised by the test connections too: a test catches the same
# classes in memory and live.
from .client import ConnectionDenied as ConnectionDenied
from .client import WebSocketClosed as WebSocketClosed

__all__ = [
    "ClientFactory",
    "ClientOptions",
    "ConnectionDenied",
    "RequestTimeout",
    "TestClient",
    "TestConnection",
    "TransportName",
    "WebSocketClosed",
    "live_clients",
]

ServerT = TypeVar("ServerT")

TransportName = Literal["asgi", "native"]
"""Which transport a :class:`TestClient` drives."""


@attrs.frozen
class _Closed:
    code: int
    reason: str


@attrs.frozen
class _Held:
    """A frame from the server, with the ``id`` of its envelope (if it is one)."""

    item: str | bytes | _Closed
    id: MessageId | None

    @classmethod
    def of(cls, item: str | bytes | _Closed) -> _Held:
        return cls(item, request_id_of(item) if isinstance(item, str) else None)

    def parsed(self) -> dict[str, Any]:
        assert isinstance(self.item, str)
        return cast("dict[str, Any]", orjson.loads(self.item))


class RequestTimeout(_client.RequestTimeout, trio.TooSlowError):
    """No answer to :meth:`TestConnection.request` ``id`` within ``timeout`` seconds.

    The message names the ``id`` and what arrived meanwhile (still queued for
    :meth:`TestConnection.receive`); ``received`` holds those frames. A
    :class:`trio_wsroutes.client.RequestTimeout` (so a ``TimeoutError``) and a
    ``trio.TooSlowError``.
    """

    def __init__(
        self, id: MessageId, timeout: float, received: Sequence[str | bytes] = ()
    ) -> None:
        self.received: tuple[str | bytes, ...] = tuple(received)
        """The frames that arrived while the request waited, as sent."""
        if self.received:
            shown = ", ".join(_describe(frame) for frame in self.received[:10])
            more = len(self.received) - 10
            meanwhile = f"{shown}{f' and {more} more' if more > 0 else ''}"
            noun = "frame" if len(self.received) == 1 else "frames"
            detail = f"{len(self.received)} other {noun} arrived meanwhile: {meanwhile}"
        else:
            detail = "nothing arrived meanwhile"
        _client.ClientError.__init__(
            self, f"no reply to request {id!r} within {timeout:g} s; {detail}"
        )
        self.id = id
        self.timeout = timeout


def _describe(frame: str | bytes) -> str:
    """A frame in a few words, for error messages."""
    if isinstance(frame, bytes):
        return f"{len(frame)} binary bytes"
    try:
        value: Any = orjson.loads(frame)
    except orjson.JSONDecodeError:
        value = None
    body = cast("dict[str, Any]", value) if type(value) is dict else {}
    if not isinstance(body.get("type"), str):
        return f"text {frame[:40]!r}"
    text = repr(body["type"])
    if body["type"] == "error" and isinstance(body.get("code"), str):
        text = f"error {body['code']}"
    if "id" in body:
        text += f" (id {body['id']!r})"
    return text


class TestConnection:
    """The client end of one in-memory WebSocket connection (either transport)."""

    __test__ = False  # not a pytest test class

    def __init__(self, default_timeout: float) -> None:
        self._from_app_send, self._from_app_receive = trio.open_memory_channel[
            str | bytes | _Closed
        ](math.inf)
        self._handshake = trio.Event()
        self._app_done = trio.Event()
        self.accepted: bool = False
        """Whether the server accepted the upgrade."""
        self.subprotocol: str | None = None
        """The subprotocol the server selected."""
        self.response_headers: list[tuple[str, str]] = []
        """Headers the server added to its 101 response (names lower-cased)."""
        self.denied: ConnectionDenied | None = None
        """The server's refusal, if it refused the upgrade."""
        self._server_closed: _Closed | None = None
        self._client_closed = False
        self._timeout = default_timeout
        self._ids = itertools.count(1)
        self._reading = trio.Event()
        self._reading.set()
        # Frames taken from the app and not yet returned: receive() takes the first,
        # request() takes its reply wherever it is. One task at a time pulls more.
        self._held: deque[_Held] = deque()
        self._pulling = False
        self._pulled = trio.lowlevel.ParkingLot()
        self._watchers: list[list[str | bytes]] = []  # frames seen by waiting requests
        self._waiting: set[MessageId] = set()  # ids of requests waiting for an answer
        self._abandoned: set[MessageId] = set()  # ids of requests that timed out

    # -- what each transport provides ---------------------------------------------------

    async def _send_message(self, text: str | None, data: bytes | None) -> None:
        raise NotImplementedError

    async def _send_close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    @property
    def unread_by_server(self) -> int:
        """Messages this client sent that the server has not read yet.

        Grows when the server stops reading because its handlers are behind: the
        inbound backpressure a real client sees as a full TCP window.
        """
        raise NotImplementedError

    def _server_closes(self, closed: _Closed) -> None:
        """The server closed the connection (or it was lost)."""
        if self._server_closed is None:
            self._server_closed = closed
            self._from_app_send.send_nowait(closed)

    # -- the client's API ---------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        """The code the server closed with, once it has."""
        return self._server_closed.code if self._server_closed else None

    @property
    def close_reason(self) -> str | None:
        """The reason the server closed with, once it has."""
        return self._server_closed.reason if self._server_closed else None

    def pause_reading(self) -> None:
        """Stop taking frames, like a client that stopped reading its socket: the
        server's sends to this connection back up until :meth:`resume_reading`."""
        if self._reading.is_set():
            self._reading = trio.Event()

    def resume_reading(self) -> None:
        """Take frames again after :meth:`pause_reading`."""
        self._reading.set()

    async def send_text(self, text: str) -> None:
        """Send a text frame."""
        self._check_open()
        await self._send_message(text, None)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame."""
        self._check_open()
        await self._send_message(None, bytes(data))

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as a JSON text frame."""
        await self.send_text(orjson.dumps(value).decode())

    async def send(self, type: str, data: Any = None, *, id: str | int | None = None) -> None:
        """Send an envelope ``{"type": type, "data": data, "id": id}`` (omitting ``None``)."""
        await self.send_text(encode_envelope(type, data, id).decode())

    async def request(
        self, type: str, data: Any = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send an envelope with a fresh ``id`` (``"req-1"``, ``"req-2"``, ...) and return
        the answer carrying that ``id``: the handler's reply, an error envelope, or the
        server's ``{"type": "ack", "id": ...}`` for a handler that returns ``None``.

        Messages without that ``id`` that arrive meanwhile stay queued for
        :meth:`receive`, in order. Raises :class:`RequestTimeout` (naming the ``id`` and
        what arrived meanwhile) after ``timeout`` seconds (default: the client's); a late
        answer is then dropped. Raises :class:`WebSocketClosed` if the server closes
        first.
        """
        request_id = f"req-{next(self._ids)}"
        seconds = self._timeout if timeout is None else timeout
        seen: list[str | bytes] = []
        self._watchers.append(seen)
        self._waiting.add(request_id)  # from now on receive() leaves its answer alone
        try:
            await self.send(type, data, id=request_id)
            with trio.move_on_after(seconds):
                while (reply := self._take_answer(request_id)) is None:
                    await self._pull()
                return reply
            reply = self._take_answer(request_id)  # arrived as the time ran out
            if reply is not None:
                return reply
        finally:
            self._watchers.remove(seen)
            self._waiting.discard(request_id)
        self._abandoned.add(request_id)
        raise RequestTimeout(request_id, seconds, seen)

    def _take_answer(self, request_id: str) -> dict[str, Any] | None:
        """Remove and return the held answer to ``request_id``, if it has arrived;
        raise :class:`WebSocketClosed` if the server closed before it."""
        for index, held in enumerate(self._held):
            if held.id == request_id:
                del self._held[index]
                return held.parsed()
            if isinstance(held.item, _Closed):
                closed = WebSocketClosed(held.item.code, held.item.reason)
                closed.add_note(f"request {request_id!r} got no answer")
                raise closed
        return None

    async def _pull(self) -> None:
        """Take the next frame from the server into the held frames; if another task is
        already waiting for one, wait for it to arrive instead."""
        if self._pulling:
            await self._pulled.park()
            return
        self._pulling = True
        try:
            while True:
                item = await self._from_app_receive.receive()
                held = _Held.of(item)
                if held.id is not None and held.id in self._abandoned:
                    self._abandoned.discard(held.id)  # the late answer of a timed-out request
                    continue
                self._held.append(held)
                if not isinstance(item, _Closed):
                    for seen in self._watchers:
                        seen.append(item)
                return
        finally:
            self._pulling = False
            self._pulled.unpark_all()

    async def receive_any(self, *, timeout: float | None = None) -> str | bytes:
        """The next frame: ``str`` for text, ``bytes`` for binary.

        Raises :class:`WebSocketClosed` when the server has closed and nothing is left,
        ``trio.TooSlowError`` after ``timeout`` seconds (default: the client's).
        """
        with trio.fail_after(self._timeout if timeout is None else timeout):
            while (index := self._next_unclaimed()) is None:
                await self._pull()
        item = self._held[index].item
        if isinstance(item, _Closed):
            # Kept: later calls raise too.
            raise WebSocketClosed(item.code, item.reason)
        del self._held[index]
        return item

    def _next_unclaimed(self) -> int | None:
        """The index of the first held frame that no waiting request claims."""
        for index, held in enumerate(self._held):
            if held.id is None or held.id not in self._waiting:
                return index
        return None

    async def receive_text(self, *, timeout: float | None = None) -> str:
        """The next frame, which must be text."""
        item = await self.receive_any(timeout=timeout)
        if not isinstance(item, str):
            raise AssertionError(f"expected a text frame, got {len(item)} binary bytes")
        return item

    async def receive_bytes(self, *, timeout: float | None = None) -> bytes:
        """The next frame, which must be binary."""
        item = await self.receive_any(timeout=timeout)
        if not isinstance(item, bytes):
            raise AssertionError(f"expected a binary frame, got text {item[:80]!r}")
        return item

    async def receive(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The next text frame parsed as a JSON object."""
        value: Any = orjson.loads(await self.receive_text(timeout=timeout))
        if not isinstance(value, dict):
            raise AssertionError(f"expected a JSON object, got {value!r}")
        return cast("dict[str, Any]", value)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client side and wait for the server's handlers to finish."""
        self._reading.set()
        if not self._client_closed and self._server_closed is None:
            self._client_closed = True
            await self._send_close(code, reason)
        with trio.fail_after(self._timeout):
            await self._app_done.wait()

    async def wait_closed(self, *, timeout: float | None = None) -> int:
        """Wait until the server closes; return its close code (frames are discarded)."""
        with trio.fail_after(self._timeout if timeout is None else timeout):
            while True:
                try:
                    await self.receive_any(timeout=math.inf)
                except WebSocketClosed as closed:
                    return closed.code

    def _check_open(self) -> None:
        if self._client_closed:
            raise RuntimeError("this test connection was closed by the client")


class _ASGIConnection(TestConnection):
    """A connection that speaks ASGI to the app, as hypercorn does."""

    __test__ = False

    def __init__(self, default_timeout: float) -> None:
        super().__init__(default_timeout)
        self._to_app_send, self._to_app_receive = trio.open_memory_channel[
            MutableMapping[str, Any]
        ](math.inf)
        self._deny_status = 0
        self._deny_headers: list[tuple[str, str]] = []
        self._deny_body = bytearray()

    @property
    def unread_by_server(self) -> int:
        return self._to_app_send.statistics().current_buffer_used

    async def _send_message(self, text: str | None, data: bytes | None) -> None:
        event: dict[str, Any] = {"type": "websocket.receive"}
        if text is not None:
            event["text"] = text
        else:
            event["bytes"] = data
        await self._to_app_send.send(event)

    async def _send_close(self, code: int, reason: str) -> None:
        await self._to_app_send.send(
            {"type": "websocket.disconnect", "code": code, "reason": reason}
        )

    async def _app_receive(self) -> MutableMapping[str, Any]:
        return await self._to_app_receive.receive()

    async def _app_send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if self._server_closed is not None or (self._client_closed and kind == "websocket.send"):
            raise RuntimeError("send on a closed WebSocket")
        if kind == "websocket.accept":
            self.accepted = True
            self.subprotocol = message.get("subprotocol")
            self.response_headers = [
                (k.decode("latin-1").lower(), v.decode("latin-1"))
                for k, v in message.get("headers", ())
            ]
            self._handshake.set()
        elif kind == "websocket.send":
            # A paused client is one whose socket buffer is full: the server's send waits.
            await self._reading.wait()
            if self._server_closed is not None or self._client_closed:
                raise RuntimeError("send on a closed WebSocket")
            text = message.get("text")
            self._from_app_send.send_nowait(text if text is not None else bytes(message["bytes"]))
        elif kind == "websocket.close":
            closed = _Closed(int(message.get("code", 1000)), message.get("reason") or "")
            if not self.accepted:
                # As hypercorn does: a close before accept is an HTTP 403.
                self._server_closed = closed
                self.denied = ConnectionDenied(403)
                self._handshake.set()
                return
            self._server_closes(closed)
            self._to_app_send.send_nowait(
                {"type": "websocket.disconnect", "code": closed.code, "reason": closed.reason}
            )
        elif kind == "websocket.http.response.start":
            self._deny_status = int(message["status"])
            self._deny_headers = [
                (k.decode("latin-1").lower(), v.decode("latin-1"))
                for k, v in message.get("headers", ())
            ]
        elif kind == "websocket.http.response.body":
            self._deny_body += message.get("body", b"")
            if not message.get("more_body", False):
                self.denied = ConnectionDenied(
                    self._deny_status, bytes(self._deny_body), self._deny_headers
                )
                self._server_closed = _Closed(1006, "")
                self._handshake.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    async def _run(self, app: ASGIApp, scope: MutableMapping[str, Any]) -> None:
        self._to_app_send.send_nowait({"type": "websocket.connect"})
        try:
            await app(scope, self._app_receive, self._app_send)
        finally:
            self._app_done.set()
            if not self._handshake.is_set():
                # The app returned without answering: servers answer 500.
                self.denied = ConnectionDenied(500)
                self._handshake.set()
            if not self._client_closed:
                self._server_closes(_Closed(1006, ""))


class _Wire(trio.abc.HalfCloseableStream):
    """The client end of an in-memory connection as the client's WebSocket reads it:
    it counts what is written, and a paused client reads nothing (its bytes stay in the
    buffer, as in a socket nobody reads)."""

    def __init__(self, stream: MemoryStream, connection: _NativeConnection) -> None:
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


class _NativeConnection(TestConnection):
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
        self._wire = _Wire(stream, self)
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
                            self._server_closes(_Closed(code, reason))
                    nursery.cancel_scope.cancel()
        except ConnectionDenied as denied:
            self.denied = denied
            self._server_closed = _Closed(1006, "")
            self._handshake.set()
        except (HandshakeFailed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if not self._handshake.is_set():
                self.denied = ConnectionDenied(502)
                self._handshake.set()
            if self.accepted:
                self._server_closes(_Closed(1006, ""))


@asynccontextmanager
async def _task_host() -> AsyncGenerator[trio.Nursery, None]:
    """A nursery for the app's tasks that lets the body's own exception through as it is.

    A plain nursery would wrap an exception raised in the ``async with`` body (say an
    assertion, or ``ConnectionDenied``) in an ``ExceptionGroup``; tests want the original.
    """
    manager = trio.open_nursery()
    nursery = await manager.__aenter__()
    try:
        yield nursery
    except BaseException:
        nursery.cancel_scope.cancel()
        await manager.__aexit__(None, None, None)
        raise
    await manager.__aexit__(None, None, None)


class TestClient:
    """An in-memory client for a :class:`~trio_wsroutes.WebSocketServer` (or, with the
    ASGI transport, any ASGI app).

    ``transport="asgi"`` (default) drives the app as hypercorn does;
    ``transport="native"`` runs the server's native transport over an in-memory stream.
    Use it as ``async with TestClient(server) as client`` to run the app's lifespan
    startup and shutdown around the test; ``client.connect()`` also works without.
    """

    __test__ = False

    def __init__(
        self,
        app: ASGIApp,
        *,
        transport: TransportName = "asgi",
        client: tuple[str, int] = ("127.0.0.1", 50000),
        timeout: float = 5.0,
        compression: bool = False,
    ) -> None:
        if transport not in ("asgi", "native"):
            raise ValueError('transport is "asgi" or "native"')
        if transport == "native" and not isinstance(app, WebSocketServer):
            raise TypeError("the native transport serves a WebSocketServer")
        self.app = app
        self.transport: TransportName = transport
        """The transport this client drives."""
        self.client_address = client
        self.timeout = timeout
        self.compression = compression
        """Whether native connections offer permessage-deflate (the ASGI side never
        sees compression)."""
        self._exit_stack = AsyncExitStack()
        self._lifespan: LifespanDriver | None = None

    async def __aenter__(self) -> TestClient:
        nursery = await self._exit_stack.enter_async_context(_task_host())
        self._lifespan = LifespanDriver(self.app, timeout=self.timeout)
        await self._lifespan.startup(nursery)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if exc is None and self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            result: bool | None = await self._exit_stack.__aexit__(exc_type, exc, tb)
        return result

    @asynccontextmanager
    async def connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        query: Mapping[str, str] | str | None = None,
        subprotocols: Sequence[str] = (),
        origin: str | None = None,
    ) -> AsyncGenerator[TestConnection, None]:
        """Open a WebSocket to ``path``; raises :class:`ConnectionDenied` if refused.

        On exit the client closes with 1000 (if still open) and waits for the server's
        handlers, ``on_close`` included, to finish.
        """
        if "?" in path and query is None:
            path, query = path.split("?", 1)
        query_string = urlencode(query) if isinstance(query, Mapping) else (query or "")
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if origin is not None:
            items.append(("origin", origin))
        connection: TestConnection
        async with _task_host() as nursery:
            if self.transport == "asgi":
                asgi = _ASGIConnection(self.timeout)
                scope = _scope(path, query_string, items, subprotocols, self.client_address)
                nursery.start_soon(asgi._run, self.app, scope)
                connection = asgi
            else:
                resource = path + (f"?{query_string}" if query_string else "")
                native = _NativeConnection(
                    self.timeout,
                    resource=resource,
                    headers=items,
                    subprotocols=subprotocols,
                    peer=self.client_address,
                    compression=self.compression,
                )
                assert isinstance(self.app, WebSocketServer)
                nursery.start_soon(native._run_server, self.app, self.client_address)
                nursery.start_soon(native._run_client)
                connection = native
            with trio.fail_after(self.timeout):
                await connection._handshake.wait()
            if connection.denied is not None:
                with trio.fail_after(self.timeout):
                    await connection._app_done.wait()
                raise connection.denied
            try:
                yield connection
            finally:
                with trio.CancelScope(shield=True):
                    await connection.close()
                    if self.transport == "native":
                        nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def client(
        self,
        route: WebSocketRoute[Any, ServerT],
        path: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> AsyncGenerator[Client[ServerT], None]:
        """A typed :class:`trio_wsroutes.client.Client` for ``route``, connected in
        memory: ``async with test_client.client(route, path) as client``.

        The client is the one :func:`~trio_wsroutes.client.connect` makes (``send``,
        ``request(msg, ReplyClass)``, ``receive``, ``async for``, reconnection, positions),
        with the same ``options`` (all but ``ssl_context`` and ``proxy``), so a test moves
        to a live server by changing one fixture (see :class:`ClientFactory`). ``path``
        defaults to the route's path, which must then have no parameters.

        Its connections always run the server's native transport over an in-memory byte
        stream, whatever this ``TestClient``'s ``transport`` (the client speaks WebSocket
        bytes): the real handshake (a denial raises
        :class:`trio_wsroutes.client.ConnectionDenied`), frames, compression, close codes.
        Each reconnection opens a new in-memory connection. ``request_timeout``,
        ``open_timeout`` and ``close_timeout`` default to this ``TestClient``'s
        ``timeout``. On exit the client closes, and the server's handlers, ``on_close``
        included, get up to ``timeout`` seconds to finish.
        """
        server = self.app
        if not isinstance(server, WebSocketServer):
            raise TypeError("TestClient.client() needs a WebSocketServer (its native transport)")
        url = "ws://testserver" + _route_path(route, path)
        _default_timeouts(options, self.timeout)
        endpoints = native_endpoints(server)
        peer = self.client_address
        serving = 0
        idle = trio.Event()
        idle.set()
        stopped = False

        async def serve(stream: MemoryStream) -> None:
            nonlocal serving, idle
            try:
                await serve_stream(stream, *endpoints, peer=peer)
            finally:
                serving -= 1
                if not serving:
                    idle.set()

        async with _task_host() as nursery:

            async def open_stream() -> trio.abc.Stream:
                nonlocal serving, idle
                await trio.lowlevel.checkpoint()
                if stopped:
                    raise ConnectionRefusedError("the in-memory server has stopped")
                client_end, server_end = memory_stream_pair(peer)
                if not serving:
                    idle = trio.Event()
                serving += 1
                nursery.start_soon(serve, server_end)
                return client_end

            client = open_streams_with(connect(url, route, proxy=False, **options), open_stream)
            try:
                async with client:
                    yield client
            finally:
                stopped = True
                with trio.CancelScope(shield=True), trio.move_on_after(self.timeout):
                    await idle.wait()
                nursery.cancel_scope.cancel()


def _route_path(route: WebSocketRoute[Any, Any], path: str | None) -> str:
    """The path to connect to for ``route``: ``path``, or the route's own if it has no
    parameters."""
    if path is None:
        names = route.pattern.param_names
        if names:
            raise ValueError(
                f"route {route.path!r} has path parameters ({', '.join(names)}): "
                "pass the path to connect to"
            )
        return route.path
    if not path.startswith("/"):
        raise ValueError(f"the path must start with '/': {path!r}")
    return path


def _default_timeouts(options: ClientOptions, timeout: float) -> None:
    options.setdefault("request_timeout", timeout)
    options.setdefault("open_timeout", timeout)
    options.setdefault("close_timeout", timeout)


class ClientOptions(TypedDict, total=False):
    """The keyword options of :func:`trio_wsroutes.client.connect` that mean the same
    in memory and over a network, as a :class:`ClientFactory` takes them: ``token``,
    ``headers``, ``subprotocols``, ``origin``, ``reconnect``, ``on_reconnect``,
    ``on_recovery``, ``since``, ``request_timeout``, ``open_timeout``, ``close_timeout``,
    ``ping_interval``, ``ping_timeout``, ``compression``, ``max_message_size``,
    ``max_queue``, ``max_queue_bytes`` (all but ``ssl_context`` and ``proxy``), with
    ``connect``'s types and meanings."""

    token: str | None
    headers: Mapping[str, str] | Iterable[tuple[str, str]]
    subprotocols: Sequence[str] | None
    origin: str | None
    reconnect: bool | Backoff
    on_reconnect: Callable[[], Awaitable[None]] | None
    on_recovery: Callable[[RecoveryInfo], Awaitable[None]] | None
    since: Mapping[str, Position] | None
    request_timeout: float
    open_timeout: float
    close_timeout: float
    ping_interval: float | None
    ping_timeout: float | None
    compression: bool
    max_message_size: int | None
    max_queue: int
    max_queue_bytes: int


class ClientFactory(Protocol):
    """Opens typed clients to the routes of one server: ``async with
    open_client(route, path, **options) as client`` gives a
    :class:`trio_wsroutes.client.Client`, in memory (:meth:`TestClient.client`, the
    ``ws_typed_client`` fixture) or over a real socket (:func:`live_clients`, the
    ``ws_typed_live_client`` fixture). A test written against it moves from one to the
    other by changing its fixture.
    """

    def __call__(
        self,
        route: WebSocketRoute[Any, ServerT],
        path: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> AbstractAsyncContextManager[Client[ServerT]]:
        """A client for ``route`` at ``path`` (default: the route's path, which must
        then have no parameters), with :func:`~trio_wsroutes.client.connect`'s
        ``options``."""
        ...


class _LiveClients:
    """Typed clients over real sockets to the server at ``base_url``."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"live_clients({self.base_url!r})"

    def __call__(
        self,
        route: WebSocketRoute[Any, ServerT],
        path: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> Client[ServerT]:
        url = self.base_url + _route_path(route, path)
        _default_timeouts(options, self.timeout)
        return connect(url, route, proxy=False, **options)


def live_clients(address: BoundAddress | str, *, timeout: float = 5.0) -> ClientFactory:
    """Open typed clients to a running server: ``open_client = live_clients(address)``,
    then ``async with open_client(route, path) as client``.

    ``address`` is a :class:`~trio_wsroutes.BoundAddress` (what ``serve`` and the
    ``ws_live_server`` fixture report) or a base URL such as ``"ws://127.0.0.1:8000"``.
    The clients take no proxy, and their ``request_timeout``, ``open_timeout`` and
    ``close_timeout`` default to ``timeout`` (as :meth:`TestClient.client`'s do), so a
    test behaves the same in memory and live.
    """
    base = address.ws_url if isinstance(address, BoundAddress) else address
    return _LiveClients(base, timeout)


def _scope(
    path: str,
    query_string: str,
    headers: list[tuple[str, str]],
    subprotocols: Sequence[str],
    client: tuple[str, int],
) -> dict[str, Any]:
    """The ASGI scope hypercorn would build for this upgrade request."""
    raw_headers = [(b"host", b"testserver")] + [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
    ]
    if subprotocols:
        raw_headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": client,
        "root_path": "",
        "path": unquote(path),  # ASGI paths are percent-decoded
        "raw_path": path.encode(),
        "query_string": query_string.encode(),
        "headers": raw_headers,
        "subprotocols": list(subprotocols),
        "extensions": {"websocket.http.response": {}},
        "state": {},
    }
