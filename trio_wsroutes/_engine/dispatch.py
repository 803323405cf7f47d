"""The dispatch layer of a connection: its own task, which decodes, validates and calls
the handlers one message at a time, in arrival order, and the one policy for what their
failures do.

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
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import trio

from .._codes import (
    HANDLER_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_MESSAGE,
    RATE_LIMITED,
    UNKNOWN_TYPE,
    CloseCode,
)
from .._containment import must_propagate
from .._context import Context
from .._envelope import Envelope, encode_ack, encode_error, encode_pong, parse_envelope
from .._errors import MessageError, ProtocolError, ValidationError
from .._flow import Inbox, MemoryBudget
from .._frames import Frame
from .._messages import check_declared, encode_message
from .._metrics import HandlerCounters, RouteCounters
from .._spec import RouteSpec
from .._stats import ServerStats
from .._transports import Transport
from .._validation_details import validation_details
from .closing import CloseEvent, ConnectionClosed
from .inbound import Inbound, InboundItem, RateLimited
from .outbound import Closing
from .refresh import TokenRefresh

if TYPE_CHECKING:
    from .._tracing import MessageTracing

__all__ = ["FAILURE_POLICY", "Dispatch", "Failure"]

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


class Dispatch(Inbound):
    """The dispatcher of a connection, on top of its inbound layer."""

    __slots__ = ("_counters", "_outcome", "_refresh", "_spec", "_tracing", "context")

    def __init__(
        self,
        transport: Transport,
        spec: RouteSpec,
        context: Context[Any],
        *,
        budget: MemoryBudget,
        stats: ServerStats,
        counters: RouteCounters | None = None,
        tracing: MessageTracing | None = None,
    ) -> None:
        super().__init__(transport, spec, budget=budget, stats=stats, id=context.connection_id)
        self._spec = spec
        self._tracing = tracing
        # With tracing: what the message being handled came to (an error code sent, or
        # the exception that ended the connection), for its span.
        self._outcome: str | BaseException | None = None
        self._counters = (
            counters if counters is not None else RouteCounters(spec.path, spec.handlers)
        )
        self.context: Context[Any] = context
        """The connection's :class:`~trio_wsroutes.Context` (user, params, data)."""
        self._refresh: TokenRefresh | None = None  # when the credentials expire

    async def _dispatch(self, inbox: Inbox[InboundItem]) -> None:
        """The dispatcher task: ``on_connect``, then every message in order until the
        connection closes."""
        spec = self._spec
        context = self.context
        if spec.on_connect is not None and not await self._call(
            "on_connect", spec.on_connect(self, context)
        ):
            return
        state = self._close
        while True:
            message = inbox.get_nowait()
            if message is None:
                if inbox.closed:
                    break
                await inbox.wait()
                continue
            self._taken(message)
            if state.code is not None:
                break
            if type(message) is str:
                await self._dispatch_text(message)
            elif type(message) is bytes:
                assert spec.on_binary is not None
                await self._call("on_binary", spec.on_binary(self, message, context))
            elif type(message) is RateLimited:
                self._counters.error(RATE_LIMITED)
                await self._reply(
                    encode_error(RATE_LIMITED, "Too many messages; slow down", message.id)
                )
            else:
                assert type(message) is Closing
                self._advance(CloseEvent.CLOSE, message.code, message.reason)
            if state.code is not None:
                break

    async def _dispatch_text(self, text: str) -> None:
        spec = self._spec
        try:
            envelope = parse_envelope(text)
        except ProtocolError as error:
            if spec.on_text is not None:
                await self._call("on_text", spec.on_text(self, text, self.context))
                return
            await self._bad_input(error, error.request_id)
            return
        handler = spec.handlers.get(envelope.type)
        if handler is None:
            if envelope.type == "refresh":  # reserved: never a handler's
                refresh = self._refresh
                problem = (
                    "No token refresh was requested" if refresh is None else refresh.take(envelope)
                )
                if problem is not None:
                    await self._bad_input(ProtocolError(problem, INVALID_MESSAGE), envelope.id)
                return
            heartbeat = self._timers.heartbeat
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
        counters = self._counters.handlers[envelope.type]
        counters.received += 1
        traced = None
        if self._tracing is not None:
            self._outcome = None
            traced = self._tracing.started(self.id, envelope)
        try:
            try:
                data = handler.structure(envelope.data, handler.schema)
            except Exception as exc:
                await self._bad_input(ValidationError(validation_details(exc)), envelope.id)
                return
            await self._call_handler(handler.handler, data, envelope, counters)
        except BaseException as exc:
            self._outcome = exc  # cancelled (the connection is closing), or worse
            raise
        finally:
            if traced is not None:
                traced.end(self._outcome)

    async def _call_handler(
        self,
        handler: Callable[..., Awaitable[Any]],
        data: Any,
        envelope: Envelope,
        counters: HandlerCounters,
    ) -> None:
        timeout = self._spec.handler_timeout
        result: Any = None
        scope: trio.CancelScope | None = None
        start = time.perf_counter()
        try:
            try:
                if timeout is None:
                    result = await handler(self, data, self.context)
                else:
                    with trio.move_on_after(timeout) as scope:
                        result = await handler(self, data, self.context)
            finally:
                counters.duration.observe(time.perf_counter() - start)
            if scope is not None and scope.cancelled_caught:
                counters.timeouts += 1
                await self._bad_input(
                    MessageError(f"Handler took longer than {timeout:g} s", HANDLER_TIMEOUT),
                    envelope.id,
                )
                return
        except MessageError as error:
            self._counters.error(error.code)
            self._outcome = error.code
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
            self._counters.sent_message(type(result))  # pyright: ignore[reportUnknownArgumentType]
            await self._reply(frame)
        elif envelope.id is not None:
            # Every envelope with an id gets exactly one answer.
            await self._reply(encode_ack(envelope.id))

    async def _call(
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

    def _encode(self, message: object, request_id: str | int | None = None) -> Frame:
        """Encode a server message, refusing one the route did not declare: what the
        route's types (and the generated client types) promise is what goes out."""
        spec = self._spec
        check_declared(message, spec.server_message_types, spec.path)
        return encode_message(message, request_id)

    async def _failed(self, where: str, exc: BaseException, request_id: str | int | None) -> None:
        """Apply :data:`FAILURE_POLICY` to an exception application code let out."""
        spec = self._spec
        if FAILURE_POLICY[where] is Failure.IS_LOGGED:
            logger.error("error in the %s hook of %s", where, spec.path, exc_info=exc)
            return
        # Any exception ends its connection only, BaseExceptions (KeyboardInterrupt,
        # SystemExit...) included: never the server.
        self._outcome = exc
        self._stats.handler_errors += 1
        logger.error("handler error on %s (connection %s)", spec.path, self.id, exc_info=exc)
        if spec.on_error is not None and isinstance(exc, Exception):
            await self._call("on_error", spec.on_error(self, exc, self.context))
        if self._close.code is None:
            self._counters.error(INTERNAL_ERROR)
            self._enqueue(encode_error(INTERNAL_ERROR, "Internal server error", request_id))
        self._advance(CloseEvent.CLOSE, CloseCode.INTERNAL_ERROR, "internal error")

    async def _reply(self, frame: Frame) -> None:
        try:
            await self._send_frame(frame)
        except ConnectionClosed:
            pass

    async def _bad_input(self, error: MessageError, request_id: str | int | None) -> None:
        self._counters.error(error.code)
        self._outcome = error.code
        await self._reply(encode_error(error.code, error.message, request_id, error.details))
        on_error = self._spec.on_error
        if on_error is not None:
            await self._call("on_error", on_error(self, error, self.context))
