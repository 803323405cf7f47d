"""The in-memory connection that speaks ASGI to the app, as hypercorn does (for
:class:`trio_wsroutes.testing.TestClient` with ``transport="asgi"``)."""

from __future__ import annotations

import math
from collections.abc import MutableMapping, Sequence
from typing import Any
from urllib.parse import unquote

import trio

from ._client_errors import ConnectionDenied
from ._testing_connection import Closed, TestConnection
from ._types import ASGIApp

__all__ = ["ASGIConnection", "asgi_scope"]


class ASGIConnection(TestConnection):
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
            closed = Closed(int(message.get("code", 1000)), message.get("reason") or "")
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
                self._server_closed = Closed(1006, "")
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
                self._server_closes(Closed(1006, ""))


def asgi_scope(
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
