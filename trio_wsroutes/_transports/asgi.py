"""The ASGI transport: the engine served by hypercorn's trio worker (or any ASGI server).

ASGI hides the frames: the server answers pings itself, and the app cannot see pongs,
cannot refuse a message before the server has read it whole, and cannot write without
waiting. So this transport implements the core of the transport interface only (not
``FrameTransport`` nor ``NonBlockingWriter``), and the engine checks message sizes itself;
hypercorn's own ``websocket_max_message_size`` (set by :meth:`WebSocketServer.serve`)
bounds what it buffers before the app sees a message.

With compression on, hypercorn's permessage-deflate inflates at most the connection's
limit of each message (``_hypercorn.install_bounded_inflate``), or, where that cannot be
done, is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .._frames import Frame
from .._request import Request
from . import _hypercorn
from ._base import Disconnect, NeedsFlush, TransportClosed, Violation

__all__ = ["ASGITransport", "request_from_scope"]

ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

_HTTP_RESPONSE_EXTENSION = "websocket.http.response"

DEFAULT_INFLATE_LIMIT = 16 * 1024 * 1024
"""The inflated size a message may reach before the engine says (the server's default
``max_payload_length``)."""


class ASGITransport:
    """Adapts one ASGI ``websocket`` scope to the engine's transport interface.

    With ``compression=False`` the upgrade refuses permessage-deflate where the server
    allows it (hypercorn 0.17 and 0.18, see ``_hypercorn.py``). With compression on,
    hypercorn inflates no message beyond ``max_message_size``: the frame that would pass
    it is refused with 1009 before it is inflated. Without ``max_message_size``, the limit
    :meth:`WebSocketServer.serve` gave hypercorn applies, else
    :data:`DEFAULT_INFLATE_LIMIT`.
    """

    __slots__ = (
        "_compression",
        "_connected",
        "_inflate",
        "_receive",
        "_send",
        "pending",
        "scope",
    )

    def __init__(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        *,
        compression: bool = True,
        max_message_size: int | None = None,
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self._connected = False
        self._compression = compression
        if max_message_size is None:
            max_message_size = _hypercorn.default_inflate_limit.get() or DEFAULT_INFLATE_LIMIT
        self._inflate = _hypercorn.InflateLimit(max_message_size)
        self.pending: int = 0
        """The size of the frame being handed to the server."""

    async def _await_connect(self) -> Disconnect | None:
        # ASGI delivers "websocket.connect" first; it must be read before answering.
        while not self._connected:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.connect":
                self._connected = True
            elif kind == "websocket.disconnect":
                return Disconnect(int(message.get("code", 1006)))
        return None

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        if await self._await_connect() is not None:
            raise TransportClosed("client left before the upgrade")
        message: ASGIMessage = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            message["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if self._compression and _hypercorn.install_bounded_inflate():
            bounded = _hypercorn.inflate_limit.set(self._inflate)
            try:
                await self._send_checked(message)
            finally:
                _hypercorn.inflate_limit.reset(bounded)
            return
        # Compression off, or on where its inflation cannot be bounded: refuse it where
        # the server allows that.
        if not _hypercorn.install():
            await self._send_checked(message)
            return
        token = _hypercorn.refuse_compression.set(True)
        try:
            await self._send_checked(message)
        finally:
            _hypercorn.refuse_compression.reset(token)

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        if await self._await_connect() is not None:
            return
        if _HTTP_RESPONSE_EXTENSION not in self.scope.get("extensions", {}):
            # Without the extension the server answers 403 itself.
            await self._send_checked({"type": "websocket.close", "code": 1008})
            return
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await self._send_checked(
            {"type": "websocket.http.response.start", "status": status, "headers": raw}
        )
        await self._send_checked(
            {"type": "websocket.http.response.body", "body": body, "more_body": False}
        )

    async def receive(self) -> str | bytes | Violation | Disconnect | NeedsFlush:
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if type(text) is str:
                    return text
                if text is not None:
                    return str(text)
                return bytes(message.get("bytes") or b"")
            if kind == "websocket.disconnect":
                return Disconnect(int(message.get("code", 1005)), message.get("reason") or "")

    async def send(self, frame: Frame) -> None:
        self.pending = frame.size
        if frame.binary:
            message: ASGIMessage = {"type": "websocket.send", "bytes": frame.payload}
        else:
            message = {"type": "websocket.send", "text": frame.text}
        # _send_checked written out: this runs for every message.
        try:
            await self._send(message)
        except (OSError, RuntimeError) as exc:
            raise TransportClosed(str(exc)) from exc
        except Exception as exc:
            if not _connection_failed(exc):
                raise
            raise TransportClosed("the server's HTTP connection failed") from exc
        finally:
            self.pending = 0

    async def close(self, code: int, reason: str) -> None:
        await self._send_checked({"type": "websocket.close", "code": code, "reason": reason})

    async def aclose(self) -> None:
        """The server finishes the closing handshake once the app returns."""

    async def _send_checked(self, message: ASGIMessage) -> None:
        try:
            await self._send(message)
        except (OSError, RuntimeError) as exc:
            # Servers differ in what a send on a closed connection raises.
            raise TransportClosed(str(exc)) from exc
        except Exception as exc:
            if not _connection_failed(exc):
                raise
            raise TransportClosed("the server's HTTP connection failed") from exc


def _connection_failed(exc: Exception) -> bool:
    """Whether hypercorn's HTTP/1.1 layer refused a send because the connection had
    already failed (h11's ``LocalProtocolError``, as after a request it answered 400)."""
    h11: Any = sys.modules.get("h11")
    error: Any = getattr(h11, "LocalProtocolError", None)
    return isinstance(error, type) and isinstance(exc, error)


def request_from_scope(scope: MutableMapping[str, Any]) -> Request:
    """The upgrade request of an ASGI ``websocket`` scope, as the socket peer sent it
    (the server applies ``trusted_proxies``)."""
    return Request.from_scope(scope)
