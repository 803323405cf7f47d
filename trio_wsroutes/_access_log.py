"""The access log: one record per connection when it ends, one per refused upgrade.

Records go to the ``trio_wsroutes.access`` logger at ``INFO``, with their fields as
attributes of the record (``extra=``), so any formatter can use them
(``%(route)s %(close_code)s``) and :class:`JSONFormatter` writes them as one JSON object
per line. Python's logging prints nothing below ``WARNING`` until the application
configures it, so the log is silent until asked for; nothing is formatted when the
logger is not enabled for ``INFO``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ._metrics import ConnectionCounts
from ._request import Request

__all__ = [
    "ACCESS_FIELDS",
    "JSONFormatter",
    "UserId",
    "access_logger",
    "default_user_id",
    "log_connection",
    "log_denied",
]

access_logger: Final = logging.getLogger("trio_wsroutes.access")

UserId = Callable[[Any], str | int | None]
"""The ``user_id`` server option: what identifies ``ctx.user`` in logs and presence."""

ACCESS_FIELDS: Final = (
    "event",
    "route",
    "path",
    "connection_id",
    "user_id",
    "client",
    "duration",
    "messages_in",
    "bytes_in",
    "messages_out",
    "bytes_out",
    "close_code",
    "close_reason",
    "closed_by",
    "status",
    "code",
)
"""The fields an access record may carry (``event`` is ``"close"`` or ``"deny"``)."""


def default_user_id(user: object) -> str | int | None:
    """``user.id`` if the user has one, the user itself if it is a string or an integer,
    else ``None``: a log line must not carry a whole user object."""
    if user is None or isinstance(user, str | int):
        return user
    found = getattr(user, "id", None)
    return found if isinstance(found, str | int) else None


def _client(request: Request) -> str | None:
    client = request.client
    return None if client is None else f"{client[0]}:{client[1]}"


def log_connection(
    *,
    route: str,
    request: Request,
    connection_id: str,
    user_id: str | int | None,
    duration: float,
    counts: ConnectionCounts,
    reason: str,
) -> None:
    """Log one ended connection."""
    fields: dict[str, Any] = {
        "event": "close",
        "route": route,
        "path": request.path,
        "connection_id": connection_id,
        "user_id": user_id,
        "client": _client(request),
        "duration": round(duration, 6),
        "messages_in": counts.messages_in,
        "bytes_in": counts.bytes_in,
        "messages_out": counts.messages_out,
        "bytes_out": counts.bytes_out,
        "close_code": counts.code,
        "close_reason": reason,
        "closed_by": counts.closed_by,
    }
    access_logger.info(
        "%s %s %s closed %s by %s after %.3f s: in %d messages %d B, out %d messages %d B",
        fields["client"],
        request.path,
        connection_id,
        counts.code,
        counts.closed_by,
        duration,
        counts.messages_in,
        counts.bytes_in,
        counts.messages_out,
        counts.bytes_out,
        extra={**fields, "access_fields": tuple(fields)},
    )


def log_denied(*, route: str | None, request: Request, status: int, code: str) -> None:
    """Log one refused upgrade."""
    fields: dict[str, Any] = {
        "event": "deny",
        "route": route,
        "path": request.path,
        "client": _client(request),
        "status": status,
        "code": code,
    }
    access_logger.info(
        "%s %s denied %d %s",
        fields["client"],
        request.path,
        status,
        code,
        extra={**fields, "access_fields": tuple(fields)},
    )


class JSONFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, then the access fields the record carries, and the
    traceback as ``exc_info`` if there is one.

    For the access log::

        handler = logging.StreamHandler()
        handler.setFormatter(trio_wsroutes.JSONFormatter())
        access = logging.getLogger("trio_wsroutes.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)

    It works for any logger; fields given with ``extra=`` are included when the record
    also names them in ``extra["access_fields"]``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in getattr(record, "access_fields", ()):
            out[name] = getattr(record, name, None)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()
