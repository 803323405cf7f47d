"""Exceptions a handler raises, and the error codes the wire protocol uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

__all__ = [
    "AUTH_ERROR",
    "HANDLER_TIMEOUT",
    "INTERNAL_ERROR",
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "RATE_LIMITED",
    "UNAUTHORIZED",
    "UNKNOWN_TYPE",
    "VALIDATION_ERROR",
    "ErrorDetail",
    "MessageError",
    "ValidationError",
]

INVALID_JSON: Final = "INVALID_JSON"
"""A text frame that is not JSON (or too deep, or holds a number the parser refuses)."""
INVALID_MESSAGE: Final = "INVALID_MESSAGE"
"""JSON that is not an envelope: not an object, no string ``type``, or a bad ``id``."""
UNKNOWN_TYPE: Final = "UNKNOWN_TYPE"
"""An envelope whose ``type`` has no handler on the route."""
VALIDATION_ERROR: Final = "VALIDATION_ERROR"
"""The envelope's ``data`` does not match the handler's schema."""
RATE_LIMITED: Final = "RATE_LIMITED"
"""The connection sent more messages than its route's rate limit allows."""
INTERNAL_ERROR: Final = "INTERNAL_ERROR"
"""A handler raised an unexpected exception; its text is never sent."""
UNAUTHORIZED: Final = "UNAUTHORIZED"
"""The route's authenticate function returned ``None``."""
AUTH_ERROR: Final = "AUTH_ERROR"
"""The route's authenticate function raised."""
HANDLER_TIMEOUT: Final = "HANDLER_TIMEOUT"
"""A handler ran longer than its timeout and was cancelled; the connection stays open."""


@attrs.frozen
class ErrorDetail:
    """One problem found while validating a message.

    ``path`` is a JSON path into the envelope (``$.data.text``, ``$.data.tags[2]``) and
    ``message`` says what was expected there.
    """

    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        """The detail as it goes over the wire."""
        return {"path": self.path, "message": self.message}


class MessageError(Exception):
    """Raise from a handler to answer the client with an error envelope.

    The connection stays open. ``message`` and ``code`` are sent as they are, so write
    them for the client::

        raise MessageError("Room is full", code="ROOM_FULL")

    sends ``{"type": "error", "error": "Room is full", "code": "ROOM_FULL", "id": ...}``.
    The route's ``on_error`` hook is not called for a ``MessageError`` a handler raises
    on purpose; it is called for the subclasses the framework raises for bad input.
    """

    def __init__(
        self,
        message: str,
        code: str = "ERROR",
        *,
        details: Sequence[ErrorDetail] = (),
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str = code
        self.details: tuple[ErrorDetail, ...] = tuple(details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class ValidationError(MessageError):
    """The data of a message did not match its schema (code ``VALIDATION_ERROR``).

    ``details`` lists each problem with its JSON path. Passed to ``on_error``.
    """

    def __init__(self, details: Sequence[ErrorDetail], message: str | None = None) -> None:
        if message is None:
            first = details[0] if details else None
            message = (
                f"Invalid message: {first.message} at {first.path}"
                if first is not None
                else "Invalid message"
            )
        super().__init__(message, VALIDATION_ERROR, details=details)


class ProtocolError(MessageError):
    """A frame that is not a valid envelope (``INVALID_JSON``, ``INVALID_MESSAGE``,
    ``UNKNOWN_TYPE``). Passed to ``on_error``.

    ``request_id`` is the envelope's ``id`` when it could be read, so the error can echo it.
    """

    def __init__(self, message: str, code: str, *, request_id: str | int | None = None) -> None:
        super().__init__(message, code)
        self.request_id: str | int | None = request_id
