"""A typed Trio client for the routes of a trio_wsroutes server, over a real WebSocket.

::

    from trio_wsroutes.client import ServerError, connect

    async with connect("ws://127.0.0.1:8000/chat/general", chat, token="t") as client:
        await client.send(Chat(text="hi"))                  # wire type from .on("chat", Chat)
        pong = await client.request(Ping(timestamp=1.0), Pong)   # a Pong, matched by id
        msg = await client.receive()                        # the route's server messages
        async for msg in client: ...                        # the same, until the end

The client takes its types from the route object the server uses: what ``send`` may send
comes from the route's ``.on(type, schema)`` registrations, what ``receive`` returns from
its ``.server_messages(...)``, and both are encoded and decoded with the server's own
strict converter. Anything the server sends that does not decode is an exception the
caller sees (:class:`DecodeError`, :class:`ServerError`), never a bare ``dict``.

Under it is the ``websockets`` package's Trio client: permessage-deflate is offered,
pings are answered, TLS comes from ``ssl_context``. See the "Python client" guide.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

from ._client import Client as Client
from ._client_errors import ClientError as ClientError
from ._client_errors import ConnectionDenied as ConnectionDenied
from ._client_errors import ConnectionLost as ConnectionLost
from ._client_errors import DecodeError as DecodeError
from ._client_errors import HandshakeFailed as HandshakeFailed
from ._client_errors import ReceiveQueueFull as ReceiveQueueFull
from ._client_errors import RequestTimeout as RequestTimeout
from ._client_errors import ServerError as ServerError
from ._client_errors import WebSocketClosed as WebSocketClosed
from ._client_messages import route_types
from ._client_reconnection import Backoff as Backoff
from ._client_state import ConnectOptions, StreamOpener
from ._history import Position as Position
from ._resume import MAX_RESUME_POSITIONS as MAX_RESUME_POSITIONS
from ._resume import MAX_RESUME_QUERY_BYTES as MAX_RESUME_QUERY_BYTES
from ._resume import RecoveryInfo as RecoveryInfo
from ._routes import WebSocketRoute

__all__ = [
    "MAX_RESUME_POSITIONS",
    "MAX_RESUME_QUERY_BYTES",
    "Backoff",
    "Client",
    "ClientError",
    "ConnectionDenied",
    "ConnectionLost",
    "DecodeError",
    "HandshakeFailed",
    "Position",
    "ReceiveQueueFull",
    "RecoveryInfo",
    "RequestTimeout",
    "ServerError",
    "WebSocketClosed",
    "connect",
]

ServerT = TypeVar("ServerT")
ClientT = TypeVar("ClientT")

MiB: Final = 1024 * 1024


def connect(
    url: str,
    route: WebSocketRoute[Any, ServerT, ClientT],
    *,
    token: str | Callable[[], str | Awaitable[str]] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    reconnect: bool | Backoff = False,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_recovery: Callable[[RecoveryInfo], Awaitable[None]] | None = None,
    since: Mapping[str, Position] | None = None,
    request_timeout: float = 30.0,
    open_timeout: float = 10.0,
    close_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    compression: bool = True,
    max_message_size: int | None = 16 * MiB,
    max_queue: int = 1024,
    max_queue_bytes: int = 16 * MiB,
    proxy: str | bool = True,
) -> Client[ServerT, ClientT]:
    """Connect to ``route`` at ``url`` (``ws://`` or ``wss://``): ``async with connect(url,
    route) as client``.

    The upgrade happens on entering; a refusal raises :class:`ConnectionDenied` (HTTP
    status and the body's ``code``), an answer that is no WebSocket handshake
    :class:`HandshakeFailed`, an unreachable server ``OSError``, a handshake that takes
    over ``open_timeout`` seconds ``TimeoutError``. On exit the client
    closes with 1000 (1011 if the body raised, 1001 if it was cancelled).

    * ``token`` goes where the route's ``create_token_auth`` reads it: the
      ``Authorization: Bearer`` header if it reads that (and for any other
      ``authenticate``), else its query parameter, else its cookie. It may be a function
      (sync or async) returning the token: it is called before every connection and
      reconnection, and when the server asks for a new token over the open connection
      (its ``refresh`` request, for credentials that expire: see the authentication
      guide), whose answer it is. ``headers`` are added to the upgrade request;
      ``origin`` sets ``Origin``.
    * ``subprotocols`` to offer (default: those the route declares).
    * ``ssl_context`` for ``wss://`` (default: the system's trust store).
    * ``reconnect``: ``True`` or a :class:`Backoff` to reconnect after a loss or a
      close with 1001, 1011, 1012, 1013 or 1014, or 3000 (the token expired) when
      ``token`` is a function, which can fetch a fresh one (never after
      :meth:`Client.close`, a close with another code, such as 1008 or 3003, "disconnected
      by the server", or a denial other than 429, 500, 502, 503, 504).
      ``on_reconnect()`` runs in a task after each reconnection. Topics with history
      resume where the client was: each reconnection sends ``since=TOPIC@EPOCH:OFFSET``
      for the most recently seen topics (at most :data:`MAX_RESUME_POSITIONS`, and
      :data:`MAX_RESUME_QUERY_BYTES` of query). An upgrade naming positions that is
      refused with 400, 414 or 431, or whose handshake breaks, is tried again at once
      without them (those topics are then reported as not recovered).
    * ``on_recovery(info)`` runs in a task for each resumed topic, with a
      :class:`RecoveryInfo`: whether its first publication after the connection
      follows the position resumed from (nothing lost), or not (reload the topic).
    * ``since``: positions to resume from on the first connection already (a saved
      :attr:`Client.positions`; the last ones count as the most recently seen).
    * ``request_timeout``: the default ``timeout`` of :meth:`Client.request`.
    * ``ping_interval`` / ``ping_timeout``: WebSocket keepalive pings from the client
      (a server that does not answer in time counts as lost); ``None`` disables them.
      The server's pings, and the route's envelope heartbeat, are always answered.
    * ``compression``: offer permessage-deflate.
    * ``max_message_size``: largest message accepted from the server (a bigger one
      fails the connection with 1009).
    * ``max_queue`` / ``max_queue_bytes``: the receive queue's limits (messages, and
      bytes of memory they hold). Queued messages are kept as the JSON text that
      arrived and decoded by :meth:`Client.receive`, so ``max_queue_bytes`` bounds the
      memory of the queue however large the decoded messages would be. When either
      limit is reached the client stops reading the socket until :meth:`Client.receive`
      takes messages, so backpressure reaches the server (which applies its
      slow-consumer policy); nothing is dropped. While a :meth:`Client.request` waits
      for its reply, reading goes on up to twice the limits; past that the request
      fails with :class:`ReceiveQueueFull`.
    * ``proxy``: ``True`` uses the system's proxy settings, ``False`` none, or a URL.
    """
    scheme = urlsplit(url).scheme
    if scheme not in ("ws", "wss"):
        raise ValueError(f"connect() needs a ws:// or wss:// URL, got {url!r}")
    if ssl_context is not None and scheme != "wss":
        raise ValueError("ssl_context needs a wss:// URL")
    if max_queue < 1 or max_queue_bytes < 1:
        raise ValueError("max_queue and max_queue_bytes must be at least 1")
    if not request_timeout > 0:
        raise ValueError("request_timeout must be positive (math.inf: no timeout)")
    types = route_types(route)
    header_items: list[tuple[str, str]] = (
        list(cast("Mapping[str, str]", headers).items())
        if isinstance(headers, Mapping)
        else list(headers)
    )
    options = ConnectOptions(
        token=token,
        headers=tuple(header_items),
        subprotocols=tuple(types.subprotocols if subprotocols is None else subprotocols),
        origin=origin,
        ssl_context=ssl_context,
        backoff=Backoff() if reconnect is True else reconnect or None,
        on_reconnect=on_reconnect,
        on_recovery=on_recovery,
        request_timeout=request_timeout,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        compression=compression,
        max_message_size=max_message_size,
        max_queue=max_queue,
        max_queue_bytes=max_queue_bytes,
        proxy=proxy,
    )
    client = Client(url, route, options)
    if since:
        _resume_from(client, since)
    return client


def open_streams_with(
    client: Client[ServerT, ClientT], open_stream: StreamOpener
) -> Client[ServerT, ClientT]:
    """The hook that :mod:`trio_wsroutes.testing` runs a server in memory with (internal:
    not part of the client's API).

    ``client`` opens the byte stream of each of its connections, reconnections included,
    with ``await open_stream()`` instead of a TCP (or TLS) connection to its URL's host;
    the URL still gives the upgrade request's host and path. Call it before entering the
    client; returns the client.
    """
    if client._nursery_manager is not None:  # pyright: ignore[reportPrivateUsage]
        raise RuntimeError("open_streams_with() is called before the client is entered")
    client._open_stream = open_stream  # pyright: ignore[reportPrivateUsage]
    return client


def _resume_from(client: Client[Any, Any], since: Mapping[str, Position]) -> None:
    """Start ``client`` from saved positions (the last ones taken as the most recent);
    those over the caps are reported as not recovered when it connects."""
    for topic, position in since.items():
        if not isinstance(topic, str) or not isinstance(position, Position):
            raise TypeError("since maps topics (str) to Position(epoch, offset)")
        client._positions.see(topic, position)  # pyright: ignore[reportPrivateUsage]
        client._unresumed.update(client._seen.see(topic, position))  # pyright: ignore[reportPrivateUsage]
