"""When and how a client reconnects: the close codes and HTTP statuses worth another
attempt, and the :class:`Backoff` between attempts."""

from __future__ import annotations

import random
from typing import Final

import attrs

from ._client_errors import ConnectionDenied, HandshakeFailed

__all__ = [
    "RECONNECT_CLOSE_CODES",
    "RETRY_STATUSES",
    "URL_STATUSES",
    "Backoff",
    "may_be_the_url",
    "reconnects_after",
]

RECONNECT_CLOSE_CODES: Final = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
"""Close codes after which a client with ``reconnect`` reconnects: going away, lost
(no close frame), internal error, service restart, try again later, bad gateway."""
UNAUTHORIZED_CLOSE: Final = 3000
"""The token expired (or a new one was refused): worth a reconnection only with a token
function, which can fetch a fresh one."""


def reconnects_after(code: int, *, token_function: bool) -> bool:
    """Whether a client with ``reconnect`` reconnects after a close with ``code``: after
    :data:`RECONNECT_CLOSE_CODES`, and after 3000 when its token is a function. Never
    after 1000, 1008 (policy), 3003 (disconnected by the server) or any other code."""
    if code == UNAUTHORIZED_CLOSE:
        return token_function
    return code in RECONNECT_CLOSE_CODES


RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses of a denied upgrade that a reconnecting client retries (after the
``Retry-After`` the server gives, if longer than the backoff); any other denial ends it."""
URL_STATUSES: Final = frozenset({400, 414, 431})
"""HTTP statuses of a denied upgrade that the ``since`` parameters may have caused: an
upgrade that named positions is tried again at once without them."""


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


def may_be_the_url(error: Exception) -> bool:
    """Whether a failed upgrade may be the server refusing its URL (its ``since``
    parameters): a 400, 414 or 431, or a connection dropped during the handshake."""
    if isinstance(error, ConnectionDenied):
        return error.status in URL_STATUSES
    if isinstance(error, HandshakeFailed):
        return error.retryable
    return isinstance(error, ConnectionResetError)
