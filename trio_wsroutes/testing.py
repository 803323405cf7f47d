"""Test your routes without sockets: an in-memory client that drives the ASGI app.

::

    from trio_wsroutes.testing import TestClient

    async def test_ping():
        async with TestClient(server) as client, client.connect("/chat/general") as ws:
            reply = await ws.request("ping", {"timestamp": 1.0})
            assert reply["type"] == "pong"

The client speaks ASGI to the server exactly as hypercorn does (same scope, same events,
including the ``websocket.http.response`` extension for denials), so everything above the
socket is exercised. With pytest-trio, the fixtures ``ws_client`` and ``ws_live_server``
(from the plugin this package registers) need only a ``ws_server`` fixture of yours.
"""

# TestClient drives its TestConnection's private ASGI side.
# pyright: reportPrivateUsage=false

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncGenerator, Mapping, MutableMapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote, urlencode

import attrs
import orjson
import trio

from ._types import ASGIApp

__all__ = ["ConnectionDenied", "TestClient", "TestConnection", "WebSocketClosed"]


class ConnectionDenied(Exception):
    """The server refused the upgrade with an HTTP response."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"upgrade denied with HTTP {status}")
        self.status: int = status
        self.headers: list[tuple[str, str]] = headers
        self.body: bytes = body

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)


class WebSocketClosed(Exception):
    """The server closed the connection (raised by ``receive`` once nothing is left)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed with code {code} ({reason!r})")
        self.code: int = code
        self.reason: str = reason


@attrs.frozen
class _Closed:
    code: int
    reason: str


class TestConnection:
    """The client end of one in-memory WebSocket connection."""

    __test__ = False  # not a pytest test class

    def __init__(self, default_timeout: float) -> None:
        self._to_app_send, self._to_app_receive = trio.open_memory_channel[
            MutableMapping[str, Any]
        ](math.inf)
        self._from_app_send, self._from_app_receive = trio.open_memory_channel[
            str | bytes | _Closed
        ](math.inf)
        self._handshake = trio.Event()
        self._app_done = trio.Event()
        self.accepted: bool = False
        self.subprotocol: str | None = None
        """The subprotocol the server selected."""
        self.response_headers: list[tuple[str, str]] = []
        """Headers the server added to its 101 response."""
        self.denied: ConnectionDenied | None = None
        self._deny_status = 0
        self._deny_headers: list[tuple[str, str]] = []
        self._deny_body = bytearray()
        self._server_closed: _Closed | None = None
        self._client_closed = False
        self._timeout = default_timeout
        self._ids = itertools.count(1)
        self._reading = trio.Event()
        self._reading.set()

    # -- the ASGI side --------------------------------------------------------------------

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
            self._server_closed = closed
            if not self.accepted:
                # As hypercorn does: a close before accept is an HTTP 403.
                self.denied = ConnectionDenied(403, [], b"")
                self._handshake.set()
                return
            self._from_app_send.send_nowait(closed)
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
                    self._deny_status, self._deny_headers, bytes(self._deny_body)
                )
                self._server_closed = _Closed(1006, "")
                self._handshake.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    async def _run_app(self, app: ASGIApp, scope: MutableMapping[str, Any]) -> None:
        try:
            await app(scope, self._app_receive, self._app_send)
        finally:
            self._app_done.set()
            if not self._handshake.is_set():
                # The app returned without answering: servers answer 500.
                self.denied = ConnectionDenied(500, [], b"")
                self._handshake.set()
            if self._server_closed is None and not self._client_closed:
                self._server_closed = _Closed(1006, "")
                self._from_app_send.send_nowait(self._server_closed)

    # -- the client's API ---------------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        """The code the server closed with, once it has."""
        return self._server_closed.code if self._server_closed else None

    @property
    def close_reason(self) -> str | None:
        """The reason the server closed with, once it has."""
        return self._server_closed.reason if self._server_closed else None

    @property
    def unread_by_server(self) -> int:
        """Frames this client sent that the server has not read yet.

        Grows when the server stops reading because its handlers are behind: the
        inbound backpressure a real client sees as a full TCP window.
        """
        return self._to_app_send.statistics().current_buffer_used

    def pause_reading(self) -> None:
        """Stop taking frames, like a client that stopped reading its socket: the
        server's next send to this connection waits until :meth:`resume_reading`."""
        if self._reading.is_set():
            self._reading = trio.Event()

    def resume_reading(self) -> None:
        """Take frames again after :meth:`pause_reading`."""
        self._reading.set()

    async def send_text(self, text: str) -> None:
        """Send a text frame."""
        self._check_open()
        await self._to_app_send.send({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame."""
        self._check_open()
        await self._to_app_send.send({"type": "websocket.receive", "bytes": bytes(data)})

    async def send_json(self, value: Any) -> None:
        """Send ``value`` as a JSON text frame."""
        await self.send_text(orjson.dumps(value).decode())

    async def send(self, type: str, data: Any = None, *, id: str | int | None = None) -> None:
        """Send an envelope ``{"type": type, "data": data, "id": id}`` (omitting ``None``)."""
        envelope: dict[str, Any] = {"type": type}
        if data is not None:
            envelope["data"] = data
        if id is not None:
            envelope["id"] = id
        await self.send_json(envelope)

    async def request(
        self, type: str, data: Any = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send an envelope with a fresh ``id`` and return the reply carrying that ``id``.

        Messages without that id that arrive first are skipped.
        """
        request_id = f"req-{next(self._ids)}"
        await self.send(type, data, id=request_id)
        with trio.fail_after(self._timeout if timeout is None else timeout):
            while True:
                reply = await self.receive(timeout=math.inf)
                if reply.get("id") == request_id:
                    return reply

    async def receive_any(self, *, timeout: float | None = None) -> str | bytes:
        """The next frame: ``str`` for text, ``bytes`` for binary.

        Raises :class:`WebSocketClosed` when the server has closed and nothing is left,
        ``trio.TooSlowError`` after ``timeout`` seconds (default: the client's).
        """
        with trio.fail_after(self._timeout if timeout is None else timeout):
            item = await self._from_app_receive.receive()
        if isinstance(item, _Closed):
            # Keep raising on later calls too.
            self._from_app_send.send_nowait(item)
            raise WebSocketClosed(item.code, item.reason)
        return item

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
            await self._to_app_send.send(
                {"type": "websocket.disconnect", "code": code, "reason": reason}
            )
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
    """An in-memory client for a :class:`~trio_wsroutes.WebSocketServer` (or any ASGI app).

    Use it as ``async with TestClient(server) as client`` to run the app's lifespan
    startup and shutdown around the test; ``client.connect()`` also works without.
    """

    __test__ = False

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        timeout: float = 5.0,
    ) -> None:
        self.app = app
        self.client_address = client
        self.timeout = timeout
        self._exit_stack = AsyncExitStack()

    async def __aenter__(self) -> TestClient:
        nursery = await self._exit_stack.enter_async_context(_task_host())
        to_app_send, to_app_receive = trio.open_memory_channel[MutableMapping[str, Any]](math.inf)
        from_app_send, from_app_receive = trio.open_memory_channel[MutableMapping[str, Any]](
            math.inf
        )
        self._lifespan = (to_app_send, from_app_receive)

        async def run() -> None:
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
            try:
                await self.app(scope, to_app_receive.receive, from_app_send.send)
            finally:
                from_app_send.close()

        nursery.start_soon(run)
        await to_app_send.send({"type": "lifespan.startup"})
        await self._expect_lifespan("lifespan.startup.complete")
        return self

    async def _expect_lifespan(self, wanted: str) -> None:
        with trio.fail_after(self.timeout):
            try:
                message = await self._lifespan[1].receive()
            except trio.EndOfChannel:
                return  # the app does not speak lifespan
        if message["type"] != wanted:
            raise RuntimeError(f"lifespan: expected {wanted}, got {message!r}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if exc is None:
                await self._lifespan[0].send({"type": "lifespan.shutdown"})
                await self._expect_lifespan("lifespan.shutdown.complete")
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
        query_string = (urlencode(query) if isinstance(query, Mapping) else (query or "")).encode()
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if origin is not None:
            items.append(("origin", origin))
        raw_headers = [(b"host", b"testserver")] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items
        ]
        if subprotocols:
            raw_headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("testserver", 80),
            "client": self.client_address,
            "root_path": "",
            "path": unquote(path),  # ASGI paths are percent-decoded
            "raw_path": path.encode(),
            "query_string": query_string,
            "headers": raw_headers,
            "subprotocols": list(subprotocols),
            "extensions": {"websocket.http.response": {}},
            "state": {},
        }
        connection = TestConnection(self.timeout)
        async with _task_host() as nursery:
            connection._to_app_send.send_nowait({"type": "websocket.connect"})
            nursery.start_soon(connection._run_app, self.app, scope)
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
