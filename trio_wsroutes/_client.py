"""The Python client's :class:`~trio_wsroutes.client.Client`: one connection to a route,
its receive queue, its requests, and reconnection.

Made by :func:`trio_wsroutes.client.connect`, whose module documents it and re-exports it.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import itertools
import logging
import ssl
from collections import deque
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, Generic, Self, cast, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import trio
from typing_extensions import TypeVar
from websockets.exceptions import ConnectionClosed as _WSConnectionClosed
from websockets.protocol import State
from websockets.trio.client import ClientConnection
from websockets.typing import Origin, Subprotocol

from ._client_errors import (
    ClientError,
    ConnectionDenied,
    ConnectionLost,
    DecodeError,
    HandshakeFailed,
    ReceiveQueueFull,
    RequestTimeout,
    WebSocketClosed,
)
from ._client_messages import (
    READ_AHEAD_FRAMES,
    Item,
    classify,
    position,
    route_types,
    server_error,
)
from ._client_reconnection import RETRY_STATUSES, Backoff, may_be_the_url, reconnects_after
from ._client_state import ConnectOptions, End, Pending, StreamOpener
from ._client_websocket import close_of, open_websocket
from ._envelope import MessageId, encode_envelope, encode_pong
from ._history import Position
from ._resume import PositionBook, RecoveryInfo, prepare_resume
from ._routes import WebSocketRoute

__all__ = ["Client"]

ServerT = TypeVar("ServerT")
ClientT_contra = TypeVar("ClientT_contra", contravariant=True, default=Any)
R = TypeVar("R")

_logger = logging.getLogger("trio_wsroutes.client")

_ABANDONED_LIMIT: Final = 4096


class Client(Generic[ServerT, ClientT_contra]):
    """A connection to one route of a trio_wsroutes server, typed by that route.

    Made by :func:`connect`; use it as ``async with connect(...) as client``. ``ServerT``
    is the route's union of server messages: what :meth:`receive` and ``async for``
    yield.
    """

    def __init__(
        self,
        url: str,
        route: WebSocketRoute[Any, ServerT, ClientT_contra],
        options: ConnectOptions,
    ) -> None:
        self.url: str = url
        """The URL given to :func:`connect` (without the ``since`` parameters added on
        reconnection)."""
        self._types = route_types(route)
        self._options = options
        self._ids = itertools.count(1)
        self._queue: deque[Item] = deque()
        self._queued_bytes = 0
        self._arrived = trio.lowlevel.ParkingLot()  # receive() waits here
        self._room = trio.lowlevel.ParkingLot()  # the reader waits here when the queue is full
        self._state = trio.lowlevel.ParkingLot()  # send() waits here while reconnecting
        self._pending: dict[int, Pending] = {}
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
        self._end: End | None = None
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

    async def send(self, msg: ClientT_contra, *, type: str | None = None) -> None:
        """Send ``msg``, an instance of a class registered with the route's ``.on()``.

        Typed by the route's client messages: when the route declares them
        (``.client_messages(A, B)``), mypy and pyright refuse any other class here and in
        :meth:`request`. A class registered under two wire types needs ``type=``; a class
        only named in ``.client_messages()`` too. Anything else is a ``TypeError`` before
        any I/O.
        While the client reconnects, ``send`` waits for the new connection. Raises
        :class:`WebSocketClosed` after the end, :class:`ConnectionLost` if the connection
        ends while sending.
        """
        text = encode_envelope(*self._types.envelope(msg, type)).decode()
        ws, _ = await self._connection()
        try:
            await ws.send(text)
        except _WSConnectionClosed as closed:
            code, reason = close_of(closed)
            raise ConnectionLost(code, reason) from None

    @overload
    async def request(
        self,
        msg: ClientT_contra,
        reply_type: builtins.type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        type: str | None = None,
    ) -> R: ...

    @overload
    async def request(
        self,
        msg: ClientT_contra,
        reply_type: None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        type: str | None = None,
    ) -> None: ...

    async def request(
        self,
        msg: ClientT_contra,
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
        wire_type, data = self._types.envelope(msg, type)
        request_id = next(self._ids)
        text = encode_envelope(wire_type, data, request_id).decode()
        seconds = self._options.request_timeout if timeout is None else timeout
        pending = self._pending[request_id] = Pending(request_id)
        try:
            with trio.move_on_after(seconds):
                ws, generation = await self._connection()
                pending.generation = generation
                self._room.unpark_all()  # a waiting request lets the reader go on
                try:
                    await ws.send(text)
                except _WSConnectionClosed as closed:
                    code, reason = close_of(closed)
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
        return self._types.decode_reply(body, raw, reply_type, request_id)

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
                message: ServerT = self._types.decode_message(body, cast(str, item.raw))
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

    # -- positions and recovery ---------------------------------------------------------

    def _entry(self, body: dict[str, Any], raw: str) -> Item:
        """The receive queue's entry for a server message (or error envelope) that
        answers no request; its position, if it has one, is kept at once."""
        wire: str = body["type"]
        # A position is an offset and an epoch (a presence event names its topic alone).
        if wire not in self._types.server or not ("offset" in body or "epoch" in body):
            return Item(raw)
        topic, offset, epoch = body.get("topic"), body.get("offset"), body.get("epoch")
        seen = position(topic, offset, epoch)
        if seen is None or not isinstance(topic, str):
            error = DecodeError(
                "malformed position: expected string 'topic' and 'epoch', integer 'offset'",
                type=wire,
                raw=raw,
            )
            return Item(raw, error=error)
        self._seen.see(topic, seen)  # resumed from on reconnection, read or not
        since = self._resuming.pop(topic, None)
        if since is not None:
            recovered = since.epoch == seen.epoch and seen.offset == since.offset + 1
            self._report(RecoveryInfo(topic, recovered, since, seen))
        return Item(raw, position=(topic, seen))

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
                    token_function = callable(self._options.token)
                    if backoff is None or not reconnects_after(
                        code, token_function=token_function
                    ):
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
                    self._end_with(End(functools.partial(_copy_denied, denied), normal=False))
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
        attempt = prepare_resume(self.url, self._seen)
        try:
            return await self._run_connection(
                task_status, attempt.url, attempt.sent, attempt.left_out
            )
        except (ConnectionDenied, HandshakeFailed, ConnectionResetError) as error:
            if not attempt.sent or not may_be_the_url(error):
                raise
            _logger.info(
                "%s: the upgrade naming %d positions failed (%s); trying without them",
                self.url,
                len(attempt.sent),
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
        url, headers = await self._with_token(url)
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
                additional_headers=headers,
                proxy=None if options.proxy is False or stream is not None else options.proxy,
                open_timeout=options.open_timeout,
                ping_interval=options.ping_interval,
                ping_timeout=options.ping_timeout,
                close_timeout=options.close_timeout,
                max_size=options.max_message_size,
                max_queue=READ_AHEAD_FRAMES,
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
                body, item = classify(frame)
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
                            pending.settle(None, server_error(body, text))
                        else:
                            pending.settle((body, text), None)
                        continue
                    if msg_id in self._abandoned:
                        del self._abandoned[msg_id]  # the late answer of a request that gave up
                        continue
                wire: str = body["type"]
                if wire == "ack":
                    continue  # answers nothing that waits: nothing to tell anyone
                if wire == "refresh":  # reserved: the server asks for a new token
                    if msg_id is not None and self._nursery is not None:
                        self._nursery.start_soon(self._refresh, ws, msg_id)
                    continue
                if wire == "ping" and wire not in self._types.server:
                    # The route's envelope heartbeat (route.heartbeat()): answer at once.
                    await ws.send(encode_pong(msg_id).decode())
                    continue
                item = self._entry(body, text)
                body = None  # while the queue is full, only the frame's text is kept
                await self._enqueue(item)
        except _WSConnectionClosed as closed:
            return close_of(closed)

    async def _enqueue(self, item: Item) -> None:
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

    def _end_with(self, end: End) -> None:
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

    async def _token(self) -> str | None:
        """The token: the one given, or what the token function returns now."""
        source = self._options.token
        token: object = source
        if callable(source):
            token = source()
            if inspect.isawaitable(token):
                token = await token
        if token is not None and not isinstance(token, str):
            raise TypeError(f"the token (function) gave a {type(token).__name__}, not a str")
        return token

    async def _refresh(self, ws: ClientConnection, request_id: MessageId) -> None:
        """Answer the server's ``refresh`` request with a current token (a token function
        is called for it). Without one, or when the function fails, nothing is sent: the
        server closes the connection with 3000 when the old token expires."""
        try:
            token = await self._token()
        except Exception:
            _logger.exception("%s: the token function failed on a refresh", self.url)
            return
        if token is None:
            return
        text = encode_envelope("refresh", {"token": token}, request_id).decode()
        try:
            await ws.send(text)
        except _WSConnectionClosed:
            pass  # that connection is gone; the next one sends a token when it opens

    async def _with_token(self, url: str) -> tuple[str, list[tuple[str, str]]]:
        """The URL and headers of one connection attempt, with the token where the
        route reads it: ``Authorization: Bearer`` where it reads that header (and for
        routes whose ``authenticate`` is not ``create_token_auth``'s), else its query
        parameter, else its cookie. A token function is called for every attempt."""
        headers = list(self._options.headers)
        token = await self._token()
        if token is None:
            return url, headers
        places = self._types.token
        if places is None or places.header:
            headers.append(("Authorization", f"Bearer {token}"))
        elif places.query is not None:
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
            query = [(k, v) for k, v in query if k != places.query] + [(places.query, token)]
            url = urlunsplit(parts._replace(query=urlencode(query)))
        elif places.cookie is not None:
            headers.append(("Cookie", f"{places.cookie}={token}"))
        return url, headers


def _closed(code: int, reason: str, *, normal: bool = False, cause: Any = None) -> End:
    def make() -> ClientError:
        error = WebSocketClosed(code, reason)
        error.__cause__ = cause
        return error

    return End(make, normal)


def _copy_denied(denied: ConnectionDenied) -> ConnectionDenied:
    return ConnectionDenied(denied.status, denied.body, denied.headers)
