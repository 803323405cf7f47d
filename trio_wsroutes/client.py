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

import builtins
import functools
import itertools
import logging
import random
import ssl
import sys
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar, cast, overload
from urllib.parse import urlsplit

import attrs
import orjson
import trio
from websockets.exceptions import ConnectionClosed as _WSConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus
from websockets.protocol import State
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as _ws_connect
from websockets.typing import Origin, Subprotocol

from ._envelope import MessageId, encode_envelope, encode_pong
from ._errors import ErrorDetail
from ._history import Position as Position
from ._messages import message_type
from ._resume import MAX_RESUME_POSITIONS as MAX_RESUME_POSITIONS
from ._resume import MAX_RESUME_QUERY_BYTES as MAX_RESUME_QUERY_BYTES
from ._resume import PositionBook, plan_resume
from ._resume import RecoveryInfo as RecoveryInfo
from ._routes import WebSocketRoute
from ._validation import converter, validation_details

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
R = TypeVar("R")

_logger = logging.getLogger("trio_wsroutes.client")

MiB: Final = 1024 * 1024

RECONNECT_CLOSE_CODES: Final = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
"""Close codes after which a client with ``reconnect`` reconnects: going away, lost
(no close frame), internal error, service restart, try again later, bad gateway."""
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses of a denied upgrade that a reconnecting client retries (after the
``Retry-After`` the server gives, if longer than the backoff); any other denial ends it."""
URL_STATUSES: Final = frozenset({400, 414, 431})
"""HTTP statuses of a denied upgrade that the ``since`` parameters may have caused: an
upgrade that named positions is tried again at once without them."""

# -- errors ---------------------------------------------------------------------------


class ClientError(Exception):
    """Base class of the exceptions this client raises."""


class ServerError(ClientError):
    """The server answered with an error envelope.

    Raised by :meth:`Client.request` for an error carrying its ``id``, and by
    :meth:`Client.receive` for one that answers no waiting request (a message sent with
    :meth:`Client.send` that the server refused). The connection stays open.
    """

    def __init__(
        self,
        code: str,
        message: str,
        details: Sequence[ErrorDetail] = (),
        id: MessageId | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + ("" if id is None else f" (request {id!r})"))
        self.code: str = code
        """The error code (``VALIDATION_ERROR``, a handler's ``MessageError`` code, ...)."""
        self.message: str = message
        """The human text the server sent."""
        self.details: tuple[ErrorDetail, ...] = tuple(details)
        """One entry per problem, with its JSON path (validation errors)."""
        self.id: MessageId | None = id
        """The request's ``id``, or ``None``."""


class DecodeError(ClientError):
    """The server sent something this client cannot turn into what it expected: a frame
    that is not a JSON envelope, a binary frame, a wire type the route does not declare,
    data that does not validate as the message class, or a reply of another type than
    the request asked for.

    Raised by :meth:`Client.receive` (the next call goes on with the next message) or by
    :meth:`Client.request` for its reply.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        details: Sequence[ErrorDetail] = (),
        raw: str | bytes = "",
        id: MessageId | None = None,
    ) -> None:
        super().__init__(message)
        self.type: str | None = type
        """The frame's wire type, when it had one."""
        self.details: tuple[ErrorDetail, ...] = tuple(details)
        """Validation problems with their JSON paths (``$.data.timestamp``)."""
        self.raw: str | bytes = raw
        """The frame as received."""
        self.id: MessageId | None = id
        """The request ``id`` the frame answered, if any."""


class ConnectionDenied(ClientError):
    """The server refused the WebSocket upgrade with an HTTP response.

    ``status`` is the HTTP status; ``code`` and ``message`` come from the JSON body that
    trio_wsroutes servers send (``{"message": "Unauthorized", "code": "UNAUTHORIZED"}``),
    ``None`` when the body is not such JSON.
    """

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.status: int = status
        """The HTTP status (401, 403, 404, 503, ...)."""
        self.body: bytes = body
        """The response body as sent."""
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        """The response headers, names in lower case."""
        self.code: str | None = None
        """The body's ``code`` (``UNAUTHORIZED``, ``SERVER_BUSY``, ...), if any."""
        self.message: str | None = None
        """The body's ``message``, if any."""
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            fields = cast("dict[str, Any]", parsed)
            code, text = fields.get("code"), fields.get("message")
            self.code = code if isinstance(code, str) else None
            self.message = text if isinstance(text, str) else None
        detail = f" {self.code}" if self.code else ""
        super().__init__(f"upgrade denied with HTTP {status}{detail}")

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)

    def json(self) -> Any:
        """The body parsed as JSON (``orjson.JSONDecodeError`` if it is not JSON)."""
        return orjson.loads(self.body)

    @property
    def retry_after(self) -> float | None:
        """The ``Retry-After`` header in seconds (``SERVER_BUSY`` sends one), or ``None``."""
        value = self.header("retry-after")
        try:
            seconds = float(value) if value is not None else None
        except ValueError:
            return None  # an HTTP date: not used by trio_wsroutes servers
        return seconds if seconds is not None and seconds >= 0 else None


class HandshakeFailed(ClientError):
    """The server's answer to the upgrade request was not a WebSocket handshake (no
    valid HTTP response, a missing or wrong header, an extension or subprotocol the
    client did not offer). A denial with an HTTP status is :class:`ConnectionDenied`."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable: bool = retryable
        """Whether reconnecting may help (the connection broke during the handshake)."""


class WebSocketClosed(ClientError):
    """The connection has ended and the client will not reconnect.

    Raised by :meth:`Client.receive` once every queued message has been returned, and
    by :meth:`Client.send` and :meth:`Client.request` after the end. ``code`` is the
    close code (1006 when the connection was lost without one).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(
            f"connection closed with code {code}" + (f" ({reason})" if reason else "")
        )
        self.code: int = code
        """The close code."""
        self.reason: str = reason
        """The close reason."""


class ConnectionLost(WebSocketClosed):
    """The connection ended while a call was using it.

    Raised by :meth:`Client.request` whose reply had not arrived (``id``): the server
    may or may not have handled the request. With ``reconnect`` the client goes on, so
    the call may be retried (if repeating it is safe).
    """

    def __init__(self, code: int, reason: str = "", id: MessageId | None = None) -> None:
        super().__init__(code, reason)
        self.id: MessageId | None = id
        """The request's ``id``, or ``None`` for a :meth:`Client.send`."""


class RequestTimeout(ClientError, TimeoutError):
    """No reply to request ``id`` within ``timeout`` seconds. A late reply is dropped."""

    def __init__(self, id: MessageId, timeout: float) -> None:
        super().__init__(f"no reply to request {id!r} within {timeout:g} s")
        self.id: MessageId = id
        """The request's ``id``."""
        self.timeout: float = timeout
        """The timeout that passed, in seconds."""


class ReceiveQueueFull(ClientError):
    """Raised by :meth:`Client.request`: while it waited for its reply, the receive
    queue filled to twice its limit with messages nobody read.

    Read them with :meth:`Client.receive` (in another task, or before requesting), or
    raise ``max_queue``. The reply, if it comes, is dropped.
    """

    def __init__(self, id: MessageId, queued: int) -> None:
        super().__init__(
            f"request {id!r}: {queued} unread messages fill the receive queue; "
            "read them with receive() or raise max_queue"
        )
        self.id: MessageId = id
        """The request's ``id``."""
        self.queued: int = queued
        """How many messages were waiting in the queue."""


# -- reconnection ---------------------------------------------------------------------


@attrs.frozen
class Backoff:
    """How a client waits between reconnection attempts: exponential backoff with full
    jitter.

    Attempt ``n`` after a loss waits a random time between 0 and
    ``min(maximum, initial * factor ** (n - 1))`` seconds (at least the server's
    ``Retry-After``, when it sends one). The count starts again from 1 only after a
    connection stayed open ``reset_after`` seconds: a connection that the server
    accepts and closes at once counts as a failed attempt, so a server that keeps doing
    that sees the waits grow instead of a reconnection storm. After ``max_attempts``
    failed attempts in a row the client gives up (``None``: never). Pass it as
    ``connect(..., reconnect=Backoff(...))``; ``reconnect=True`` is ``Backoff()``.
    """

    initial: float = 0.5
    """Seconds: the ceiling of the first wait."""
    maximum: float = 30.0
    """Seconds: the largest ceiling."""
    factor: float = 2.0
    """How much the ceiling grows per failed attempt."""
    max_attempts: int | None = None
    """Give up after this many failed attempts in a row (``None``: never)."""
    reset_after: float = 10.0
    """Seconds a connection must stay open for the next loss to start again from
    attempt 1."""

    def __attrs_post_init__(self) -> None:
        if not (self.initial > 0 and self.maximum >= self.initial and self.factor >= 1):
            raise ValueError("Backoff needs initial > 0, maximum >= initial and factor >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("Backoff max_attempts must be at least 1 (or None)")
        if not self.reset_after >= 0:
            raise ValueError("Backoff reset_after must be at least 0")

    def delay(self, attempt: int) -> float:
        """A random delay in seconds before attempt number ``attempt`` (from 1)."""
        exponent = min(max(attempt - 1, 0), 64)  # past the cap the exponent no longer matters
        ceiling = min(self.maximum, self.initial * self.factor**exponent)
        return random.uniform(0, ceiling)


# -- route introspection --------------------------------------------------------------


@attrs.frozen
class _RouteTypes:
    path: str
    client: Mapping[type[Any], tuple[str, ...]]
    """Client message class -> the wire types it is registered under with ``.on()``."""
    documented: frozenset[type[Any]]
    """Classes given to ``.client_messages()`` (sendable with an explicit ``type=``)."""
    server: Mapping[str, type[Any]]
    """Wire type -> server message class."""
    server_wire: Mapping[type[Any], str]
    subprotocols: tuple[str, ...]


def _route_types(route: WebSocketRoute[Any, Any]) -> _RouteTypes:
    """Everything the client needs from a route; the one place that reads its attributes."""
    if not isinstance(route, WebSocketRoute):
        raise TypeError(f"connect() needs a route from create_websocket_route, got {route!r}")
    client: dict[type[Any], tuple[str, ...]] = {}
    for spec in route.handlers.values():
        client[spec.schema] = (*client.get(spec.schema, ()), spec.type)
    server_wire: dict[type[Any], str] = {}
    for cls in route.server_message_types:
        wire = message_type(cls)
        if wire is not None:
            server_wire[cls] = wire
    return _RouteTypes(
        path=route.path,
        client=client,
        documented=frozenset(route.client_message_types),
        server={wire: cls for cls, wire in server_wire.items()},
        server_wire=server_wire,
        subprotocols=tuple(route.subprotocol_choices),
    )


# -- the client's internal state ------------------------------------------------------


class _Item:
    """One entry of the receive queue: a frame as it arrived (decoded by receive()), or
    an error to raise in its place."""

    __slots__ = ("error", "position", "raw", "size")

    def __init__(
        self,
        raw: str | bytes,
        error: ClientError | None = None,
        position: tuple[str, Position] | None = None,
    ) -> None:
        self.raw = raw
        self.error = error
        self.position = position
        self.size = sys.getsizeof(raw) + _ITEM_OVERHEAD


_READ_AHEAD_FRAMES: Final = 4
"""Frames the WebSocket layer reads ahead of the receive queue (``websockets``'
``max_queue``) before it stops reading the socket: the queue does the buffering."""

_ITEM_OVERHEAD: Final = 200
"""Bytes an entry of the receive queue holds besides its frame: the entry, its slot in
the queue, a position or an error."""


class _Pending:
    """A request waiting for the answer carrying its ``id``."""

    __slots__ = ("answer", "done", "error", "generation", "id")

    def __init__(self, id: int) -> None:
        self.id = id
        self.done = trio.Event()
        self.answer: tuple[dict[str, Any], str] | None = None
        self.error: ClientError | None = None
        self.generation: int | None = None  # the connection it was sent on

    def settle(self, answer: tuple[dict[str, Any], str] | None, error: ClientError | None) -> None:
        if not self.done.is_set():
            self.answer, self.error = answer, error
            self.done.set()


@attrs.frozen
class _End:
    """Why the client stopped: raised (a fresh exception each time) once the queue is empty."""

    make: Callable[[], ClientError]
    normal: bool  # iteration stops quietly instead of raising


@attrs.frozen
class _Options:
    """The options of :func:`connect`, as a client keeps them."""

    token: str | None
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    origin: str | None
    ssl_context: ssl.SSLContext | None
    backoff: Backoff | None
    on_reconnect: Callable[[], Awaitable[None]] | None
    on_recovery: Callable[[RecoveryInfo], Awaitable[None]] | None
    request_timeout: float
    open_timeout: float
    close_timeout: float
    ping_interval: float | None
    ping_timeout: float | None
    compression: bool
    max_message_size: int | None
    max_queue: int
    max_queue_bytes: int
    proxy: str | bool


_ABANDONED_LIMIT: Final = 4096

StreamOpener = Callable[[], Awaitable[trio.abc.Stream]]
"""``await open_stream()``: the byte stream of one new connection."""


class Client(Generic[ServerT]):
    """A connection to one route of a trio_wsroutes server, typed by that route.

    Made by :func:`connect`; use it as ``async with connect(...) as client``. ``ServerT``
    is the route's union of server messages: what :meth:`receive` and ``async for``
    yield.
    """

    def __init__(self, url: str, route: WebSocketRoute[Any, ServerT], options: _Options) -> None:
        self.url: str = url
        """The URL given to :func:`connect` (without the ``since`` parameters added on
        reconnection)."""
        self._types = _route_types(route)
        self._options = options
        self._ids = itertools.count(1)
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._arrived = trio.lowlevel.ParkingLot()  # receive() waits here
        self._room = trio.lowlevel.ParkingLot()  # the reader waits here when the queue is full
        self._state = trio.lowlevel.ParkingLot()  # send() waits here while reconnecting
        self._pending: dict[int, _Pending] = {}
        self._abandoned: dict[MessageId, None] = {}  # ids of requests that gave up
        self._ws: ClientConnection | None = None
        self._generation = 0
        self._seen = PositionBook()  # last position received, per topic: resumed from
        self._positions = PositionBook()  # last position returned by receive(), per topic
        self._resuming: dict[str, Position] = {}  # sent on this connection, no verdict yet
        self._unresumed: dict[str, Position] = {}  # given to connect() but over the caps
        self._opened_at = 0.0
        self._attempt = 0  # reconnection attempts since a connection stayed up
        self._reconnects = 0
        self._closing = False
        self._end: _End | None = None
        self._done = trio.Event()
        self._supervisor = trio.CancelScope()
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._open_stream: StreamOpener | None = None  # see open_streams_with()

    def __repr__(self) -> str:
        state = "closed" if self._end else "open" if self._ws else "connecting"
        return f"<Client {self.url!r} {state}>"

    # -- the context manager --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._nursery_manager is not None:
            raise RuntimeError("a Client is entered once; call connect() again")
        manager = self._nursery_manager = trio.open_nursery()
        nursery = self._nursery = await manager.__aenter__()
        try:
            await nursery.start(self._supervise)
        except BaseException:
            nursery.cancel_scope.cancel()
            await manager.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        manager, nursery = self._nursery_manager, self._nursery
        assert manager is not None, "Client used without async with"
        assert nursery is not None
        try:
            # Close politely even when the body failed or was cancelled: 1011 tells the
            # server this side had an error, 1001 that it is going away.
            code = 1000 if exc is None else 1011 if isinstance(exc, Exception) else 1001
            with trio.CancelScope(shield=exc is not None):
                await self.close(code)
        finally:
            # The body's own exception (if any) propagates as it is, not wrapped in an
            # ExceptionGroup by the nursery that hosts the client's tasks.
            self._supervisor.cancel()
            nursery.cancel_scope.cancel()
            await manager.__aexit__(None, None, None)

    # -- sending ----------------------------------------------------------------------

    async def send(self, msg: object, *, type: str | None = None) -> None:
        """Send ``msg``, an instance of a class registered with the route's ``.on()``.

        A class registered under two wire types needs ``type=``; a class only named in
        ``.client_messages()`` too. Anything else is a ``TypeError`` before any I/O.
        While the client reconnects, ``send`` waits for the new connection. Raises
        :class:`WebSocketClosed` after the end, :class:`ConnectionLost` if the connection
        ends while sending.
        """
        text = encode_envelope(*self._envelope(msg, type)).decode()
        ws, _ = await self._connection()
        try:
            await ws.send(text)
        except _WSConnectionClosed as closed:
            code, reason = _close_of(closed)
            raise ConnectionLost(code, reason) from None

    @overload
    async def request(
        self,
        msg: object,
        reply_type: builtins.type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        type: str | None = None,
    ) -> R: ...

    @overload
    async def request(
        self,
        msg: object,
        reply_type: None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        type: str | None = None,
    ) -> None: ...

    async def request(
        self,
        msg: object,
        reply_type: builtins.type[Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        type: str | None = None,
    ) -> Any:
        """Send ``msg`` with a fresh ``id`` and wait for the answer carrying that ``id``.

        With ``reply_type`` (a server message class of the route) the reply is decoded
        as that class and returned; without it, the request completes on the server's
        ``ack`` (a handler that returns ``None``) or any reply, and returns ``None``.
        Server messages that arrive meanwhile stay queued for :meth:`receive`.

        ``timeout`` defaults to the client's ``request_timeout`` (``math.inf``: wait
        forever) and covers waiting for a connection while reconnecting. Raises
        :class:`ServerError` for an error envelope with this ``id``,
        :class:`RequestTimeout`, :class:`ConnectionLost` if the connection ends first,
        :class:`DecodeError` for a reply of another type or invalid data.
        """
        if reply_type is not None and reply_type not in self._types.server_wire:
            raise TypeError(
                f"{reply_type!r} is not a server message of route {self._types.path!r} "
                "(see its .server_messages())"
            )
        wire_type, data = self._envelope(msg, type)
        request_id = next(self._ids)
        text = encode_envelope(wire_type, data, request_id).decode()
        seconds = self._options.request_timeout if timeout is None else timeout
        pending = self._pending[request_id] = _Pending(request_id)
        try:
            with trio.move_on_after(seconds):
                ws, generation = await self._connection()
                pending.generation = generation
                self._room.unpark_all()  # a waiting request lets the reader go on
                try:
                    await ws.send(text)
                except _WSConnectionClosed as closed:
                    code, reason = _close_of(closed)
                    pending.settle(None, ConnectionLost(code, reason, request_id))
                await pending.done.wait()
        finally:
            if self._pending.pop(request_id, None) is not None and not pending.done.is_set():
                self._abandon(request_id)  # a late answer is dropped, not queued
        if not pending.done.is_set():
            raise RequestTimeout(request_id, seconds)
        if pending.error is not None:
            raise pending.error
        assert pending.answer is not None
        body, raw = pending.answer
        return self._decode_reply(body, raw, reply_type, request_id)

    # -- receiving ----------------------------------------------------------------------

    async def receive(self) -> ServerT:
        """The next server message, decoded strictly as the route's message class.

        Waits (also across reconnections) until one arrives. Raises, in the message's
        place: :class:`DecodeError` for a frame that does not decode, :class:`ServerError`
        for an error envelope that answers no request; the next call goes on with the
        next message. Once the client has ended and the queue is empty, raises
        :class:`WebSocketClosed` (or :class:`ConnectionDenied` if a reconnection was
        denied).
        """
        while True:
            if self._queue:
                item = self._queue.popleft()
                self._queued_bytes -= item.size
                self._room.unpark_all()
                if item.position is not None:
                    self._positions.see(*item.position)
                if item.error is not None:
                    raise item.error
                # Decoded only now: queued, a message takes the memory of its JSON only.
                body = cast("dict[str, Any]", orjson.loads(item.raw))
                message: ServerT = self._decode_message(body, cast(str, item.raw))
                return message
            if self._end is not None:
                raise self._end.make()
            await self._arrived.park()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ServerT:
        """The next message; iteration stops after :meth:`close` or a normal close by
        the server (1000, or 1001 without ``reconnect``), and raises otherwise."""
        try:
            return await self.receive()
        except WebSocketClosed:
            if self._end is not None and self._end.normal and not self._queue:
                raise StopAsyncIteration from None
            raise

    # -- state --------------------------------------------------------------------------

    @property
    def positions(self) -> Mapping[str, Position]:
        """The position of the last message :meth:`receive` returned, per topic with
        history, least recently seen first. Persist it and pass it as ``connect(...,
        since=...)`` to resume later.

        (Reconnections resume from the last message *received*, queued or not.) Like
        what reconnections resume from, it holds at most :data:`MAX_RESUME_POSITIONS`
        topics and :data:`MAX_RESUME_QUERY_BYTES` of ``since`` parameters: the most
        recently seen ones.
        """
        return self._positions.snapshot()

    def forget(self, topic: str) -> None:
        """Stop resuming ``topic``: drop its position (from :attr:`positions` too), so
        that reconnections no longer name it. A later publication on it is kept again.
        Call it when the app no longer follows the topic."""
        self._seen.forget(topic)
        self._positions.forget(topic)
        self._resuming.pop(topic, None)
        self._unresumed.pop(topic, None)

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (``False`` while reconnecting)."""
        return self._ws is not None

    @property
    def reconnects(self) -> int:
        """How many times the client has reconnected."""
        return self._reconnects

    @property
    def queued(self) -> int:
        """Messages waiting in the receive queue."""
        return len(self._queue)

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected on the current connection."""
        ws = self._ws
        return None if ws is None else ws.subprotocol

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and stop reconnecting; waits for the closing handshake
        (at most ``close_timeout``). Messages already queued can still be received;
        after them iteration stops. Idempotent."""
        if self._nursery is None:  # never entered: nothing to close
            self._closing = True
            self._end_with(_closed(code, reason, normal=True))
            self._done.set()
        if not self._closing:
            self._closing = True
            self._room.unpark_all()  # a reader waiting for room now drops what comes
            ws = self._ws
            if ws is not None:
                with trio.move_on_after(self._options.close_timeout):
                    await ws.aclose(code, reason)
            self._end_with(_closed(code, reason, normal=True))
            self._supervisor.cancel()
        await self._done.wait()

    # -- encoding and decoding ----------------------------------------------------------

    def _envelope(self, msg: object, wire_type: str | None) -> tuple[str, Any]:
        """The wire type and data of ``msg``'s envelope; a ``TypeError`` if the route
        does not take it."""
        cls = builtins.type(msg)
        registered = self._types.client.get(cls, ())
        if wire_type is None:
            if len(registered) == 1:
                wire_type = registered[0]
            elif registered:
                raise TypeError(
                    f"{cls.__qualname__} is registered under {', '.join(registered)} on "
                    f"route {self._types.path!r}: pass type=..."
                )
            elif cls in self._types.documented:
                raise TypeError(
                    f"{cls.__qualname__} has no handler on route {self._types.path!r}: "
                    "pass its wire type with type=..."
                )
            else:
                raise TypeError(
                    f"{cls.__qualname__} is not a client message of route "
                    f"{self._types.path!r} (register it with .on(type, {cls.__qualname__}))"
                )
        elif wire_type not in registered and cls not in self._types.documented:
            raise TypeError(
                f"{cls.__qualname__} is not registered as {wire_type!r} on route "
                f"{self._types.path!r}"
            )
        return wire_type, converter.unstructure(msg, cls)

    def _decode_reply(
        self,
        body: dict[str, Any],
        raw: str,
        reply_type: builtins.type[Any] | None,
        request_id: int,
    ) -> Any:
        wire: str = body["type"]
        if reply_type is None:
            return None  # an ack, or a reply nobody asked to decode
        expected = self._types.server_wire[reply_type]
        if wire != expected:
            got = "an ack" if wire == "ack" else repr(wire)
            raise DecodeError(
                f"request {request_id!r} expected a {expected!r} reply, got {got}",
                type=wire,
                raw=raw,
                id=request_id,
            )
        return _structure(body, reply_type, raw)

    def _classify(self, frame: str | bytes) -> tuple[dict[str, Any] | None, _Item | None]:
        """Parse one frame: the envelope, or an item holding the error to raise."""
        if isinstance(frame, bytes):
            error = DecodeError(
                "the server sent a binary frame; this client reads JSON", raw=frame
            )
            return None, _Item(frame, error=error)
        try:
            parsed: Any = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None, _Item(frame, error=DecodeError("the server sent invalid JSON", raw=frame))
        if type(parsed) is not dict:
            return None, _Item(
                frame, error=DecodeError("not an envelope: no JSON object", raw=frame)
            )
        body = cast("dict[str, Any]", parsed)
        wire: Any = body.get("type")
        msg_id: Any = body.get("id")
        if type(wire) is not str or (msg_id is not None and type(msg_id) not in (str, int)):
            error = DecodeError("not an envelope: no string 'type' or a bad 'id'", raw=frame)
            return None, _Item(frame, error=error)
        return body, None

    def _entry(self, body: dict[str, Any], raw: str) -> _Item:
        """The receive queue's entry for a server message (or error envelope) that
        answers no request; its position, if it has one, is kept at once."""
        wire: str = body["type"]
        if wire not in self._types.server or not (
            "topic" in body or "offset" in body or "epoch" in body
        ):
            return _Item(raw)
        topic, offset, epoch = body.get("topic"), body.get("offset"), body.get("epoch")
        seen = _position(topic, offset, epoch)
        if seen is None or not isinstance(topic, str):
            error = DecodeError(
                "malformed position: expected string 'topic' and 'epoch', integer 'offset'",
                type=wire,
                raw=raw,
            )
            return _Item(raw, error=error)
        self._seen.see(topic, seen)  # resumed from on reconnection, read or not
        since = self._resuming.pop(topic, None)
        if since is not None:
            recovered = since.epoch == seen.epoch and seen.offset == since.offset + 1
            self._report(RecoveryInfo(topic, recovered, since, seen))
        return _Item(raw, position=(topic, seen))

    def _decode_message(self, body: dict[str, Any], raw: str) -> Any:
        """The server message a queued frame holds; raises what stands in its place."""
        wire: str = body["type"]
        if wire == "error":
            raise _server_error(body, raw)
        cls = self._types.server.get(wire)
        if cls is None:
            raise DecodeError(
                f"unknown message type {wire!r} for route {self._types.path!r}",
                type=wire,
                raw=raw,
                id=body.get("id"),
            )
        return _structure(body, cls, raw)

    def _report(self, info: RecoveryInfo) -> None:
        """Hand a recovery verdict to ``on_recovery``, in a task of its own."""
        hook = self._options.on_recovery
        if hook is not None and self._nursery is not None:
            self._nursery.start_soon(hook, info)

    # -- the connection's tasks ---------------------------------------------------------

    async def _supervise(self, task_status: trio.TaskStatus[None]) -> None:
        """Hold a connection open, and reconnect after a loss when asked to."""
        try:
            with self._supervisor:
                code, reason = await self._attempt_connection(task_status)
                while True:
                    self._lose_pending(code, reason)
                    if self._closing:
                        return
                    backoff = self._options.backoff
                    if backoff is None or code not in RECONNECT_CLOSE_CODES:
                        self._end_with(_closed(code, reason, normal=code in (1000, 1001)))
                        return
                    if trio.current_time() - self._opened_at >= backoff.reset_after:
                        self._attempt = 0  # it stayed up: this loss starts a new count
                    _logger.info("%s: connection closed (%d), reconnecting", self.url, code)
                    outcome = await self._reconnect(backoff, code, reason)
                    if outcome is None:
                        return
                    code, reason = outcome
        finally:
            self._ws = None
            self._end_with(_closed(1006, "client stopped", normal=False))
            self._done.set()

    async def _reconnect(self, backoff: Backoff, code: int, reason: str) -> tuple[int, str] | None:
        """Try to connect again until it works; the next connection's close, or ``None``.

        Attempts are counted since the last connection that stayed up
        ``backoff.reset_after`` seconds, so the waits go on growing for a server that
        accepts and closes at once.
        """
        last: BaseException | None = None
        retry_after = 0.0
        while True:
            self._attempt += 1
            attempt = self._attempt
            if backoff.max_attempts is not None and attempt > backoff.max_attempts:
                _logger.warning("%s: giving up after %d attempts", self.url, attempt - 1)
                self._end_with(_closed(code, reason or "reconnection failed", cause=last))
                return None
            await trio.sleep(max(backoff.delay(attempt), retry_after))
            try:
                return await self._attempt_connection(None)
            except ConnectionDenied as denied:
                if denied.status not in RETRY_STATUSES:
                    _logger.warning("%s: reconnection denied (%d)", self.url, denied.status)
                    self._end_with(_End(functools.partial(_copy_denied, denied), normal=False))
                    return None
                last, retry_after = denied, denied.retry_after or 0.0
            except HandshakeFailed as error:
                if not error.retryable:
                    self._end_with(_closed(code, reason, cause=error))
                    return None
                last, retry_after = error, 0.0
            except ssl.SSLCertVerificationError as error:
                self._end_with(_closed(code, reason, cause=error))
                return None
            except (OSError, TimeoutError) as error:
                last, retry_after = error, 0.0
            except Exception as error:  # the client ends, and says why
                _logger.exception("%s: reconnection attempt %d failed", self.url, attempt)
                self._end_with(_closed(code, reason, cause=error))
                return None
            _logger.info("%s: reconnection attempt %d failed: %s", self.url, attempt, last)

    async def _attempt_connection(
        self, task_status: trio.TaskStatus[None] | None
    ) -> tuple[int, str]:
        """One connection attempt, naming the positions to resume from; if it fails in a
        way the length of its URL may have caused, one more at once, without them.

        The positions left out of a connection that opens are dropped, and reported
        as not recovered."""
        plan = plan_resume(self.url, self._seen)
        try:
            return await self._run_connection(task_status, plan.url, plan.sent, plan.left_out)
        except (ConnectionDenied, HandshakeFailed, ConnectionResetError) as error:
            if not plan.sent or not _may_be_the_url(error):
                raise
            _logger.info(
                "%s: the upgrade naming %d positions failed (%s); trying without them",
                self.url,
                len(plan.sent),
                error,
            )
        return await self._run_connection(task_status, self.url, {}, self._seen.snapshot())

    async def _run_connection(
        self,
        task_status: trio.TaskStatus[None] | None,
        url: str,
        sent: Mapping[str, Position],
        left_out: Mapping[str, Position],
    ) -> tuple[int, str]:
        """Open one connection to ``url`` (naming the positions ``sent``) and read it
        until it ends; its close code and reason.

        Raises (before anything is read) when the connection cannot be opened.
        """
        options = self._options
        stream = None if self._open_stream is None else await self._open_stream()
        opened = False
        try:
            async with open_websocket(
                url,
                stream=stream,
                ssl=options.ssl_context,
                origin=Origin(options.origin) if options.origin is not None else None,
                subprotocols=[Subprotocol(s) for s in options.subprotocols] or None,
                compression="deflate" if options.compression else None,
                additional_headers=self._headers(),
                proxy=None if options.proxy is False or stream is not None else options.proxy,
                open_timeout=options.open_timeout,
                ping_interval=options.ping_interval,
                ping_timeout=options.ping_timeout,
                close_timeout=options.close_timeout,
                max_size=options.max_message_size,
                max_queue=_READ_AHEAD_FRAMES,
            ) as ws:
                opened = True
                self._generation += 1
                self._ws = ws
                self._opened_at = trio.current_time()
                self._resumed(sent, left_out)
                self._state.unpark_all()
                if task_status is not None:
                    # From now on only the client ends its connection (close(), or the
                    # exit of its ``async with``): a cancelled body still gets a proper
                    # closing handshake rather than a dropped socket.
                    self._supervisor.shield = True
                    task_status.started()
                else:
                    self._reconnects += 1
                    _logger.info("%s: reconnected", self.url)
                    hook = options.on_reconnect
                    if hook is not None and self._nursery is not None:
                        self._nursery.start_soon(hook)
                try:
                    return await self._read(ws, self._generation)
                finally:
                    self._ws = None
                    self._state.unpark_all()
        except _WSConnectionClosed as error:
            if opened:
                raise
            # The server dropped the connection while the request was being written.
            raise HandshakeFailed("the connection broke during the handshake", True) from error
        except trio.BrokenResourceError as error:
            # Trio reports a failed TLS handshake this way; the ssl error says why
            # (SSLCertVerificationError, ...) and is an OSError like other network errors.
            if isinstance(error.__cause__, ssl.SSLError):
                raise error.__cause__ from None
            raise ConnectionResetError(f"connection broken: {error!r}") from error

    def _resumed(self, sent: Mapping[str, Position], left_out: Mapping[str, Position]) -> None:
        """A connection opened naming the positions ``sent``: wait for their verdicts;
        those ``left_out`` of it are dropped and did not recover."""
        self._resuming = dict(sent)
        unresumed = {**self._unresumed, **left_out}
        self._unresumed = {}
        for topic, since in unresumed.items():
            # Resuming from there later would replay what came after the gap, now lost.
            for book in (self._seen, self._positions):
                if book.get(topic) == since:
                    book.forget(topic)
            self._report(RecoveryInfo(topic, False, since, None))

    async def _read(self, ws: ClientConnection, generation: int) -> tuple[int, str]:
        """Read frames: answers go to their requests, the rest to the receive queue."""
        try:
            while True:
                frame = await ws.recv()
                body, item = self._classify(frame)
                if body is None:
                    assert item is not None
                    await self._enqueue(item)
                    continue
                text = cast(str, frame)
                msg_id: MessageId | None = body.get("id")
                if msg_id is not None:
                    pending = self._pending.get(msg_id) if type(msg_id) is int else None
                    if pending is not None and pending.generation == generation:
                        if body["type"] == "error":
                            pending.settle(None, _server_error(body, text))
                        else:
                            pending.settle((body, text), None)
                        continue
                    if msg_id in self._abandoned:
                        del self._abandoned[msg_id]  # the late answer of a request that gave up
                        continue
                wire: str = body["type"]
                if wire == "ack":
                    continue  # answers nothing that waits: nothing to tell anyone
                if wire == "ping" and wire not in self._types.server:
                    # The route's envelope heartbeat (route.heartbeat()): answer at once.
                    await ws.send(encode_pong(msg_id).decode())
                    continue
                item = self._entry(body, text)
                body = None  # while the queue is full, only the frame's text is kept
                await self._enqueue(item)
        except _WSConnectionClosed as closed:
            return _close_of(closed)

    async def _enqueue(self, item: _Item) -> None:
        """Queue ``item`` for receive(); while the queue is full, stop reading, so that
        TCP backpressure reaches the server."""
        while not self._has_room(item.size):
            if self._closing:
                return  # close() is waiting for the closing handshake: keep the socket moving
            await self._room.park()
        self._queue.append(item)
        self._queued_bytes += item.size
        self._arrived.unpark_all()

    def _has_room(self, size: int) -> bool:
        if not self._queue:
            return True  # one message always fits, however large
        count, volume = len(self._queue) + 1, self._queued_bytes + size
        limit, limit_bytes = self._options.max_queue, self._options.max_queue_bytes
        if count <= limit and volume <= limit_bytes:
            return True
        waiting = [
            p
            for p in self._pending.values()
            if p.generation == self._generation and not p.done.is_set()
        ]
        if not waiting:
            return False
        # A request waits for its reply, which may be behind these messages: read on, up
        # to twice the limit, then give up on the waiting requests rather than deadlock.
        if count <= 2 * limit and volume <= 2 * limit_bytes:
            return True
        for pending in waiting:
            pending.settle(None, ReceiveQueueFull(pending.id, len(self._queue)))
            self._abandon(pending.id)
        return False

    # -- helpers ------------------------------------------------------------------------

    async def _connection(self) -> tuple[ClientConnection, int]:
        """The open connection, waiting for one while reconnecting."""
        if self._nursery is None and self._end is None:
            raise RuntimeError("enter the client first: async with connect(...) as client")
        while True:
            if self._end is not None:
                raise self._end.make()
            if self._closing:
                raise WebSocketClosed(1000, "closed by the client")
            ws = self._ws
            # A connection whose closing handshake has begun takes nothing more: what
            # would be sent on it waits for the next one (or for the end) instead.
            if ws is not None and ws.state is State.OPEN:
                return ws, self._generation
            await self._state.park()

    def _lose_pending(self, code: int, reason: str) -> None:
        for pending in list(self._pending.values()):
            if pending.generation is not None and pending.generation == self._generation:
                pending.settle(None, ConnectionLost(code, reason, pending.id))

    def _end_with(self, end: _End) -> None:
        if self._end is None:
            self._end = end
            for pending in list(self._pending.values()):
                pending.settle(None, end.make())
        self._arrived.unpark_all()
        self._state.unpark_all()
        self._room.unpark_all()

    def _abandon(self, request_id: MessageId) -> None:
        self._abandoned[request_id] = None
        while len(self._abandoned) > _ABANDONED_LIMIT:
            del self._abandoned[next(iter(self._abandoned))]

    def _headers(self) -> list[tuple[str, str]]:
        headers = list(self._options.headers)
        if self._options.token is not None:
            headers.append(("Authorization", f"Bearer {self._options.token}"))
        return headers


def _may_be_the_url(error: Exception) -> bool:
    """Whether a failed upgrade may be the server refusing its URL (its ``since``
    parameters): a 400, 414 or 431, or a connection dropped during the handshake."""
    if isinstance(error, ConnectionDenied):
        return error.status in URL_STATUSES
    if isinstance(error, HandshakeFailed):
        return error.retryable
    return isinstance(error, ConnectionResetError)


def _position(topic: object, offset: object, epoch: object) -> Position | None:
    """The position a publication carries, or ``None`` if it is malformed."""
    if type(topic) is not str or type(offset) is not int or type(epoch) is not str:
        return None
    try:
        return Position(epoch, offset)
    except ValueError:
        return None


def _closed(code: int, reason: str, *, normal: bool = False, cause: Any = None) -> _End:
    def make() -> ClientError:
        error = WebSocketClosed(code, reason)
        error.__cause__ = cause
        return error

    return _End(make, normal)


def _close_of(closed: _WSConnectionClosed) -> tuple[int, str]:
    rcvd = closed.rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "")


def _copy_denied(denied: ConnectionDenied) -> ConnectionDenied:
    return ConnectionDenied(denied.status, denied.body, denied.headers)


def _structure(body: dict[str, Any], cls: type[Any], raw: str) -> Any:
    wire: str = body["type"]
    data: Any = body.get("data", {})
    try:
        return converter.structure(data, cls)
    except Exception as exc:
        details = validation_details(exc)
        first = details[0]
        raise DecodeError(
            f"invalid {wire!r} message: {first.message} at {first.path}",
            type=wire,
            details=details,
            raw=raw,
            id=body.get("id"),
        ) from None


def _server_error(body: dict[str, Any], raw: str) -> ClientError:
    code, text, msg_id = body.get("code"), body.get("error"), body.get("id")
    details_raw: Any = body.get("details", [])
    details: list[ErrorDetail] = []
    ok = type(code) is str and type(text) is str and type(details_raw) is list
    for entry in cast("list[Any]", details_raw) if ok else []:
        fields = cast("dict[str, Any]", entry) if type(entry) is dict else {}
        path, text_ = fields.get("path"), fields.get("message")
        if type(path) is str and type(text_) is str:
            details.append(ErrorDetail(path, text_))
        else:
            ok = False
    if not ok:
        return DecodeError("malformed error envelope", type="error", raw=raw, id=msg_id)
    return ServerError(cast(str, code), cast(str, text), details, msg_id)


# -- connect --------------------------------------------------------------------------


def connect(
    url: str,
    route: WebSocketRoute[Any, ServerT],
    *,
    token: str | None = None,
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
) -> Client[ServerT]:
    """Connect to ``route`` at ``url`` (``ws://`` or ``wss://``): ``async with connect(url,
    route) as client``.

    The upgrade happens on entering; a refusal raises :class:`ConnectionDenied` (HTTP
    status and the body's ``code``), an answer that is no WebSocket handshake
    :class:`HandshakeFailed`, an unreachable server ``OSError``, a handshake that takes
    over ``open_timeout`` seconds ``TimeoutError``. On exit the client
    closes with 1000 (1011 if the body raised, 1001 if it was cancelled).

    * ``token`` is sent as ``Authorization: Bearer <token>``; ``headers`` are added to
      the upgrade request; ``origin`` sets ``Origin``.
    * ``subprotocols`` to offer (default: those the route declares).
    * ``ssl_context`` for ``wss://`` (default: the system's trust store).
    * ``reconnect``: ``True`` or a :class:`Backoff` to reconnect after a loss or a
      close with 1001, 1011, 1012, 1013 or 1014 (never after :meth:`Client.close`, a
      close with another code, or a denial other than 429, 500, 502, 503, 504).
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
    types = _route_types(route)
    header_items: list[tuple[str, str]] = (
        list(cast("Mapping[str, str]", headers).items())
        if isinstance(headers, Mapping)
        else list(headers)
    )
    options = _Options(
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


def open_streams_with(client: Client[ServerT], open_stream: StreamOpener) -> Client[ServerT]:
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


@asynccontextmanager
async def open_websocket(url: str, **options: Any) -> AsyncGenerator[ClientConnection]:
    """One WebSocket connection, ``websockets``' Trio ``connect(url, **options)``, with
    this module's errors for a failed upgrade: :class:`ConnectionDenied` for a refusal
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


def _resume_from(client: Client[Any], since: Mapping[str, Position]) -> None:
    """Start ``client`` from saved positions (the last ones taken as the most recent);
    those over the caps are reported as not recovered when it connects."""
    for topic, position in since.items():
        if not isinstance(topic, str) or not isinstance(position, Position):
            raise TypeError("since maps topics (str) to Position(epoch, offset)")
        client._positions.see(topic, position)  # pyright: ignore[reportPrivateUsage]
        client._unresumed.update(client._seen.see(topic, position))  # pyright: ignore[reportPrivateUsage]
