"""The client's WebSocket connections: the ``websockets`` package's Trio client, with the
client's errors for a failed upgrade, and the close code and reason of a connection that
ended."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from websockets.exceptions import ConnectionClosed as _WSConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as _ws_connect

from ._client_errors import ConnectionDenied, HandshakeFailed

__all__ = ["close_of", "open_websocket"]


@asynccontextmanager
async def open_websocket(url: str, **options: Any) -> AsyncGenerator[ClientConnection]:
    """One WebSocket connection, ``websockets``' Trio ``connect(url, **options)``, with
    the client's errors for a failed upgrade: :class:`ConnectionDenied` for a refusal
    with an HTTP status, :class:`HandshakeFailed` for an answer that is no WebSocket
    handshake. Internal: the client's connections, and the test client's native ones
    (:mod:`trio_wsroutes.testing`), open this way."""
    try:
        async with _ws_connect(url, **options) as ws:
            yield ws
    except InvalidStatus as error:
        response = error.response
        headers = [(k.lower(), v) for k, v in response.headers.raw_items()]
        body = bytes(response.body or b"")
        raise ConnectionDenied(response.status_code, body, headers) from None
    except InvalidHandshake as error:
        # InvalidMessage: no HTTP response, or a garbled one (a server going down).
        retryable = isinstance(error, InvalidMessage)
        raise HandshakeFailed(f"WebSocket handshake failed: {error}", retryable) from error


def close_of(closed: _WSConnectionClosed) -> tuple[int, str]:
    rcvd = closed.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")
