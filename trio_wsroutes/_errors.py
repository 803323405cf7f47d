"""Exceptions a handler raises (the codes themselves are in ``_codes``)."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ._codes import VALIDATION_ERROR

__all__ = ["ErrorDetail", "MessageError", "ProtocolError", "ValidationError"]


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
