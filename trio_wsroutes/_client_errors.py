"""The exceptions of the Python client (:mod:`trio_wsroutes.client`), which the test
client (:mod:`trio_wsroutes.testing`) raises too: a test catches the same classes in
memory and live."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson

from ._envelope import MessageId
from ._errors import ErrorDetail

__all__ = [
    "ClientError",
    "ConnectionDenied",
    "ConnectionLost",
    "DecodeError",
    "HandshakeFailed",
    "ReceiveQueueFull",
    "RequestTimeout",
    "ServerError",
    "WebSocketClosed",
]


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
