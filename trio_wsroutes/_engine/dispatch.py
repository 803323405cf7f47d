"""Dispatch: the connection's own task, which decodes, validates and calls the handlers
one message at a time, in arrival order, and the one policy for what their failures do.

Every envelope with an ``id`` gets exactly one answer: the handler's reply, an error
envelope, or ``ack``. What a failure does depends only on where it happens
(:data:`FAILURE_POLICY`): an exception from a handler or from ``on_connect``,
``on_text`` or ``on_binary`` ends the connection (``INTERNAL_ERROR``, then 1011); one
from ``on_error`` or ``on_close`` is logged and changes nothing. Bad input is not a
failure: the client gets ``VALIDATION_ERROR`` (or the code of a ``MessageError``) and the
connection goes on. Exception text never reaches the client.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import trio

from .._codes import HANDLER_TIMEOUT, INTERNAL_ERROR, RATE_LIMITED, UNKNOWN_TYPE, CloseCode
from .._containment import must_propagate
from .._context import Context
from .._envelope import Envelope, encode_ack, encode_error, encode_pong, parse_envelope
from .._errors import MessageError, ProtocolError, ValidationError
from .._flow import Inbox
from .._frames import Frame
from .._spec import Heartbeat, RouteSpec
from .._stats import ServerStats
from .._validation import validation_details
from .closing import CloseEvent, ConnectionClosed
from .inbound import Inbound, RateLimited, Reader
from .outbound import Closing

__all__ = ["FAILURE_POLICY", "Dispatcher", "Failure"]

logger = logging.getLogger("trio_wsroutes")


class Failure(enum.Enum):
    """What an exception from application code does to its connection."""

    ENDS_CONNECTION = "ends the connection"
    """The client gets ``INTERNAL_ERROR`` (with the request's ``id``), then a close with
    1011; ``on_error`` runs first (for an ``Exception``)."""
    IS_LOGGED = "is logged"
    """Logged with its traceback; the connection goes on as if it had returned."""


FAILURE_POLICY: Final[Mapping[str, Failure]] = {
    "handler": Failure.ENDS_CONNECTION,
    "on_connect": Failure.ENDS_CONNECTION,
    "on_text": Failure.ENDS_CONNECTION,
    "on_binary": Failure.ENDS_CONNECTION,
    "on_error": Failure.IS_LOGGED,
    "on_close": Failure.IS_LOGGED,
}
"""Where application code runs, and what its failure does there."""


class Handled(Protocol):
    """What the dispatcher needs of the connection it hands to handlers."""

    @property
    def id(self) -> str: ...

    @property
    def context(self) -> Context[Any]: ...

    @property
    def closed(self) -> bool: ...


class Dispatcher:
    """The dispatcher of one connection."""

    __slots__ = (
        "_close",
        "_connection",
        "_context",
        "_encode",
        "_enqueue",
        "_heartbeat",
        "_reader",
        "_send",
        "_spec",
        "_stats",
    )

    def __init__(
        self,
        connection: Handled,
        spec: RouteSpec,
        *,
        reader: Reader,
        heartbeat: Heartbeat | None,
        stats: ServerStats,
        send: Callable[[Frame], Awaitable[None]],
        enqueue: Callable[[Frame], None],
        encode: Callable[[object, str | int | None], Frame],
        close: Callable[[CloseEvent, int, str], None],
    ) -> None:
        self._connection = connection
        self._context: Context[Any] = connection.context
        self._spec = spec
        self._reader = reader
        self._heartbeat = heartbeat
        self._stats = stats
        self._send = send
        self._enqueue = enqueue
        self._encode = encode
        self._close = close

    async def run(self, inbox: Inbox[Inbound]) -> None:
        """``on_connect``, then every message in order until the connection closes."""
        spec = self._spec
        connection = self._connection
        context = self._context
        reader = self._reader
        if spec.on_connect is not None and not await self.call(
            "on_connect", spec.on_connect(connection, context)
        ):
            return
        while True:
            message = await inbox.get()
            if message is None:
                break
            reader.taken(message)
            if connection.closed:
                break
            if type(message) is str:
                await self._dispatch_text(message)
            elif type(message) is bytes:
                assert spec.on_binary is not None
                await self.call("on_binary", spec.on_binary(connection, message, context))
            elif type(message) is RateLimited:
                await self._reply(
                    encode_error(RATE_LIMITED, "Too many messages; slow down", message.id)
                )
            else:
                assert type(message) is Closing
                self._close(CloseEvent.CLOSE, message.code, message.reason)
            if connection.closed:
                break

    async def _dispatch_text(self, text: str) -> None:
        spec = self._spec
        try:
            envelope = parse_envelope(text)
        except ProtocolError as error:
            if spec.on_text is not None:
                await self.call("on_text", spec.on_text(self._connection, text, self._context))
                return
            await self._bad_input(error, error.request_id)
            return
        handler = spec.handlers.get(envelope.type)
        if handler is None:
            heartbeat = self._heartbeat
            if heartbeat is not None and heartbeat.envelope and envelope.type in ("ping", "pong"):
                if envelope.type == "ping":
                    await self._reply(Frame(encode_pong(envelope.id)))
                elif envelope.id is not None:
                    await self._reply(encode_ack(envelope.id))
                return  # the reader has already counted it as activity
            wire = envelope.type if len(envelope.type) <= 64 else envelope.type[:64] + "..."
            await self._bad_input(
                ProtocolError(f"Unknown message type: {wire!r}", UNKNOWN_TYPE), envelope.id
            )
            return
        try:
            data = handler.structure(envelope.data, handler.schema)
        except Exception as exc:
            await self._bad_input(ValidationError(validation_details(exc)), envelope.id)
            return
        await self._call_handler(handler.handler, data, envelope)

    async def _call_handler(
        self, handler: Callable[..., Awaitable[Any]], data: Any, envelope: Envelope
    ) -> None:
        timeout = self._spec.handler_timeout
        result: Any = None
        connection = self._connection
        try:
            if timeout is None:
                result = await handler(connection, data, self._context)
            else:
                with trio.move_on_after(timeout) as scope:
                    result = await handler(connection, data, self._context)
                if scope.cancelled_caught:
                    await self._bad_input(
                        MessageError(f"Handler took longer than {timeout:g} s", HANDLER_TIMEOUT),
                        envelope.id,
                    )
                    return
        except MessageError as error:
            await self._reply(encode_error(error.code, error.message, envelope.id, error.details))
            return
        except ConnectionClosed:
            return
        except BaseException as exc:
            if must_propagate(exc):
                raise
            await self._failed("handler", exc, envelope.id)
            return
        if result is not None:
            try:
                frame = self._encode(result, envelope.id)
            except Exception as exc:
                await self._failed("handler", exc, envelope.id)
                return
            await self._reply(frame)
        elif envelope.id is not None:
            # Every envelope with an id gets exactly one answer.
            await self._reply(encode_ack(envelope.id))

    async def call(
        self, where: str, call: Awaitable[Any], request_id: str | int | None = None
    ) -> bool:
        """Await application code running at ``where`` (a key of
        :data:`FAILURE_POLICY`); ``False`` if it failed or the connection closed."""
        try:
            await call
        except ConnectionClosed:
            return False
        except BaseException as exc:
            if must_propagate(exc):
                raise
            await self._failed(where, exc, request_id)
            return False
        return True

    async def _failed(self, where: str, exc: BaseException, request_id: str | int | None) -> None:
        """Apply :data:`FAILURE_POLICY` to an exception application code let out."""
        spec = self._spec
        if FAILURE_POLICY[where] is Failure.IS_LOGGED:
            logger.error("error in the %s hook of %s", where, spec.path, exc_info=exc)
            return
        # Any exception ends its connection only, BaseExceptions (KeyboardInterrupt,
        # SystemExit...) included: never the server.
        self._stats.handler_errors += 1
        logger.error(
            "handler error on %s (connection %s)", spec.path, self._connection.id, exc_info=exc
        )
        if spec.on_error is not None and isinstance(exc, Exception):
            await self.call("on_error", spec.on_error(self._connection, exc, self._context))
        if not self._connection.closed:
            self._enqueue(encode_error(INTERNAL_ERROR, "Internal server error", request_id))
        self._close(CloseEvent.CLOSE, CloseCode.INTERNAL_ERROR, "internal error")

    async def _reply(self, frame: Frame) -> None:
        try:
            await self._send(frame)
        except ConnectionClosed:
            pass

    async def _bad_input(self, error: MessageError, request_id: str | int | None) -> None:
        await self._reply(encode_error(error.code, error.message, request_id, error.details))
        on_error = self._spec.on_error
        if on_error is not None:
            await self.call("on_error", on_error(self._connection, error, self._context))
