"""The client end of one in-memory connection, as :mod:`trio_wsroutes.testing` gives it
to a test: :class:`TestConnection` (and the :class:`RequestTimeout` of its requests). Each
transport provides its side (``_testing_asgi.py``, ``_testing_native.py``)."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import attrs
import orjson
import trio

from . import _client_errors
from ._client_errors import ConnectionDenied, WebSocketClosed
from ._envelope import MessageId, encode_envelope, request_id_of

__all__ = ["Closed", "Held", "RequestTimeout", "TestConnection"]


@attrs.frozen
class Closed:
    code: int
    reason: str


@attrs.frozen
class Held:
    """A frame from the server, with the ``id`` of its envelope (if it is one)."""

    item: str | bytes | Closed
    id: MessageId | None

    @classmethod
    def of(cls, item: str | bytes | Closed) -> Held:
        return cls(item, request_id_of(item) if isinstance(item, str) else None)

    def parsed(self) -> dict[str, Any]:
        assert isinstance(self.item, str)
        return cast("dict[str, Any]", orjson.loads(self.item))


class RequestTimeout(_client_errors.RequestTimeout, trio.TooSlowError):
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
        _client_errors.ClientError.__init__(
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
            str | bytes | Closed
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
        self._server_closed: Closed | None = None
        self._client_closed = False
        self._timeout = default_timeout
        self._ids = itertools.count(1)
        self._reading = trio.Event()
        self._reading.set()
        # Frames taken from the app and not yet returned: receive() takes the first,
        # request() takes its reply wherever it is. One task at a time pulls more.
        self._held: deque[Held] = deque()
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

    def _server_closes(self, closed: Closed) -> None:
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
            if isinstance(held.item, Closed):
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
                held = Held.of(item)
                if held.id is not None and held.id in self._abandoned:
                    self._abandoned.discard(held.id)  # the late answer of a timed-out request
                    continue
                self._held.append(held)
                if not isinstance(item, Closed):
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
        if isinstance(item, Closed):
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
