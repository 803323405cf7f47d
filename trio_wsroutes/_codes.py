"""Every close code and error code the framework sends, in one place.

The engine, the transports, the admission checks, the generated client types (TypeScript,
JSON Schema, AsyncAPI) and the docs' tables all read these lists, so what a client is told
it may receive is exactly what the server can send.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "ADMIN_ERROR_CODES",
    "AUTH_ERROR",
    "BAD_REQUEST",
    "CLOSE_CODES",
    "DENIAL_CODES",
    "ENVELOPE_ERROR_CODES",
    "FORBIDDEN_ORIGIN",
    "FORBIDDEN_TOPIC",
    "HANDLER_TIMEOUT",
    "INTERNAL_ERROR",
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "INVALID_TOPIC",
    "NOT_FOUND",
    "RATE_LIMITED",
    "SERVER_BUSY",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_TOPICS",
    "UNKNOWN_CONNECTION",
    "UNAUTHORIZED",
    "UNKNOWN_TYPE",
    "UNSUPPORTED_SUBPROTOCOL",
    "UPGRADE_REQUIRED",
    "VALIDATION_ERROR",
    "CloseCode",
]


class CloseCode:
    """WebSocket close codes the framework uses (RFC 6455 section 7.4)."""

    NORMAL: Final = 1000
    """A normal close (also the idle timeout, reason ``"idle timeout"``)."""
    GOING_AWAY: Final = 1001
    """Server shutdown."""
    PROTOCOL_ERROR: Final = 1002
    """The peer broke RFC 6455 (native transport)."""
    UNSUPPORTED_DATA: Final = 1003
    """A binary frame on a route without ``on_binary``."""
    NO_STATUS: Final = 1005
    """The peer's close frame carried no code."""
    ABNORMAL: Final = 1006
    """The connection was lost without a close frame."""
    INVALID_DATA: Final = 1007
    """A text message that is not UTF-8 (native transport)."""
    POLICY_VIOLATION: Final = 1008
    """Origin refused, the rate limit when configured to close, or a Close on the admin
    page."""
    MESSAGE_TOO_BIG: Final = 1009
    """A message over ``max_payload_length``."""
    INTERNAL_ERROR: Final = 1011
    """A handler crashed, or the peer missed a heartbeat (reason ``"heartbeat timeout"``)."""
    SERVICE_RESTART: Final = 1012
    """Publications on a topic with history were lost on their way to this process (its
    broker was cut off from Redis): reconnect and resume the topic from its position
    (reason ``"missed publications"``)."""
    TRY_AGAIN_LATER: Final = 1013
    """Evicted as a slow consumer: more than ``backpressure_limit`` bytes were waiting."""
    UNAUTHORIZED: Final = 3000
    """The connection's token expired and no valid one came in time, or the new token
    was refused (IANA-registered "Unauthorized"). A client that can fetch a fresh token
    reconnects with it; one that cannot stops."""
    FORBIDDEN: Final = 3003
    """Disconnected by the server (``server.disconnect(user=...)``; IANA-registered
    "Forbidden"): clients do not reconnect."""


CLOSE_CODES: Final[Mapping[int, str]] = MappingProxyType(
    {
        CloseCode.NORMAL: "normal close; also the idle timeout (reason `idle timeout`)",
        CloseCode.GOING_AWAY: "server shutdown",
        CloseCode.PROTOCOL_ERROR: "the client broke RFC 6455 (native transport)",
        CloseCode.UNSUPPORTED_DATA: "a binary frame on a route without `on_binary`",
        CloseCode.INVALID_DATA: "a text message that is not valid UTF-8 (native transport)",
        CloseCode.POLICY_VIOLATION: (
            "the rate limit, when configured to close; an administrator's Close on the "
            "admin page (reason `closed by an administrator`)"
        ),
        CloseCode.MESSAGE_TOO_BIG: "a message over `max_payload_length`",
        CloseCode.INTERNAL_ERROR: "a handler crashed, or the heartbeat went unanswered",
        CloseCode.SERVICE_RESTART: (
            "publications on a topic with history were lost on their way to this server "
            "(its broker was cut off from Redis); reconnect and resume from the position "
            "(reason `missed publications`)"
        ),
        CloseCode.TRY_AGAIN_LATER: "evicted as a slow consumer (over `backpressure_limit`)",
        CloseCode.UNAUTHORIZED: (
            "the token expired and no valid one came in time, or the new one was refused; "
            "a client with a token function reconnects, any other stops"
        ),
        CloseCode.FORBIDDEN: "disconnected by the server (`server.disconnect`); do not reconnect",
    }
)
"""The close codes the server sends, with what each means."""

# -- error codes in error envelopes ({"type": "error", "code": ...}) -----------------------

INVALID_JSON: Final = "INVALID_JSON"
"""A text frame that is not JSON (or too deep, or holds a number the parser refuses)."""
INVALID_MESSAGE: Final = "INVALID_MESSAGE"
"""JSON that is not an envelope: not an object, no string ``type``, or a bad ``id``."""
UNKNOWN_TYPE: Final = "UNKNOWN_TYPE"
"""An envelope whose ``type`` has no handler on the route."""
VALIDATION_ERROR: Final = "VALIDATION_ERROR"
"""The envelope's ``data`` does not match the handler's schema."""
RATE_LIMITED: Final = "RATE_LIMITED"
"""The connection sent more messages than its rate limit allows."""
HANDLER_TIMEOUT: Final = "HANDLER_TIMEOUT"
"""A handler ran longer than its timeout and was cancelled; the connection stays open."""
INTERNAL_ERROR: Final = "INTERNAL_ERROR"
"""A handler raised an unexpected exception; its text is never sent."""
INVALID_TOPIC: Final = "INVALID_TOPIC"
"""``ws.subscribe`` with an empty topic or one longer than ``max_topic_length``."""
TOO_MANY_TOPICS: Final = "TOO_MANY_TOPICS"
"""``ws.subscribe`` past ``max_topics_per_connection``."""
FORBIDDEN_TOPIC: Final = "FORBIDDEN_TOPIC"
"""``ws.subscribe`` to a topic the route's ``authorize_subscribe`` refused."""

ENVELOPE_ERROR_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        INVALID_JSON: "the frame is not JSON (or too deep, or a number out of range)",
        INVALID_MESSAGE: "JSON that is not an envelope (no string `type`, a bad `id`)",
        UNKNOWN_TYPE: "no handler for the envelope's `type`",
        VALIDATION_ERROR: "`data` does not match the schema; `details` lists each problem",
        RATE_LIMITED: 'over the rate limit (`action="error"`); the connection stays open',
        HANDLER_TIMEOUT: "the handler ran past its timeout and was cancelled",
        INTERNAL_ERROR: "the handler crashed (no exception text is sent); closes with 1011",
        INVALID_TOPIC: "`subscribe` with an empty topic or one over `max_topic_length`",
        TOO_MANY_TOPICS: "`subscribe` past `max_topics_per_connection`",
        FORBIDDEN_TOPIC: "`subscribe` to a topic `authorize_subscribe` refused",
    }
)
"""Every code the framework itself puts in an error envelope, with what it means.
Handlers add their own with ``MessageError(message, code)``."""

UNKNOWN_CONNECTION: Final = "UNKNOWN_CONNECTION"
"""The admin page's ``close_connection`` named no open connection of the application."""

ADMIN_ERROR_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {UNKNOWN_CONNECTION: "`close_connection` named no open connection of the application"}
)
"""The codes of error envelopes that only the admin page's live route sends (never an
application's route, so never in its generated types)."""

# -- codes in the JSON body of a denied upgrade (an HTTP response, never an envelope) ------

UNAUTHORIZED: Final = "UNAUTHORIZED"
"""The route's authenticate function returned ``None``, or credentials that have expired
already."""
AUTH_ERROR: Final = "AUTH_ERROR"
"""The route's authenticate function raised."""
FORBIDDEN_ORIGIN: Final = "FORBIDDEN_ORIGIN"
"""The ``Origin`` header is not allowed."""
NOT_FOUND: Final = "NOT_FOUND"
"""No route matches the path."""
UNSUPPORTED_SUBPROTOCOL: Final = "UNSUPPORTED_SUBPROTOCOL"
"""None of the offered subprotocols is spoken by the route."""
BAD_REQUEST: Final = "BAD_REQUEST"
"""A malformed upgrade request (too many query parameters, a bad ``since``)."""
SERVER_BUSY: Final = "SERVER_BUSY"
"""``max_connections`` reached."""
TOO_MANY_CONNECTIONS: Final = "TOO_MANY_CONNECTIONS"
"""``max_connections_per_ip`` reached."""
UPGRADE_REQUIRED: Final = "UPGRADE_REQUIRED"
"""A plain HTTP request to a WebSocket path (native transport)."""

DENIAL_CODES: Final[Mapping[str, tuple[int, str]]] = MappingProxyType(
    {
        BAD_REQUEST: (400, "a malformed upgrade request (too many query parameters)"),
        UNSUPPORTED_SUBPROTOCOL: (400, "none of the offered subprotocols is supported"),
        UNAUTHORIZED: (401, "`authenticate` returned `None`, or credentials expired already"),
        AUTH_ERROR: (401, "`authenticate` raised (the exception is logged, never sent)"),
        FORBIDDEN_ORIGIN: (403, "the `Origin` is not allowed"),
        NOT_FOUND: (404, "no route for the path"),
        UPGRADE_REQUIRED: (426, "a plain HTTP request to a route's path (native transport)"),
        TOO_MANY_CONNECTIONS: (429, "`max_connections_per_ip` reached"),
        SERVER_BUSY: (503, "`max_connections` reached (with `Retry-After: 1`)"),
    }
)
"""Codes in the JSON body (``{"message": ..., "code": ...}``) of a refused upgrade, with
their usual HTTP status. ``Reject(status, message, code)`` adds the application's own."""
