"""The records a client keeps besides its receive queue: the options of
:func:`~trio_wsroutes.client.connect`, the requests waiting for their answers, and why
the client ended."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._client_errors import ClientError
from ._client_reconnection import Backoff
from ._resume import RecoveryInfo

__all__ = ["ConnectOptions", "End", "Pending", "StreamOpener"]


class Pending:
    """A request waiting for the answer carrying its ``id``."""

    __slots__ = ("answer", "done", "error", "generation", "id")

    def __init__(self, id: int) -> None:
        self.id = id
        self.done = trio.Event()
        self.answer: tuple[dict[str, Any], str] | None = None
        self.error: ClientError | None = None
        self.generation: int | None = None  # the connection it was sent on

    def settle(self, answer: tuple[dict[str, Any], str] | None, error: ClientError | None) -> None:
        if not self.done.is_set():
            self.answer, self.error = answer, error
            self.done.set()


@attrs.frozen
class End:
    """Why the client stopped: raised (a fresh exception each time) once the queue is empty."""

    make: Callable[[], ClientError]
    normal: bool  # iteration stops quietly instead of raising


@attrs.frozen
class ConnectOptions:
    """The options of :func:`~trio_wsroutes.client.connect`, as a client keeps them."""

    token: Token
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    origin: str | None
    ssl_context: ssl.SSLContext | None
    backoff: Backoff | None
    on_reconnect: Callable[[], Awaitable[None]] | None
    on_recovery: Callable[[RecoveryInfo], Awaitable[None]] | None
    request_timeout: float
    open_timeout: float
    close_timeout: float
    ping_interval: float | None
    ping_timeout: float | None
    compression: bool
    max_message_size: int | None
    max_queue: int
    max_queue_bytes: int
    proxy: str | bool


Token = str | Callable[[], str | Awaitable[str]] | None
"""A token for the route's ``authenticate``: the token itself, or a function (sync or
async) that returns a current one, called before every connection attempt and for every
``refresh`` request of the server."""

StreamOpener = Callable[[], Awaitable[trio.abc.Stream]]
"""``await open_stream()``: the byte stream of one new connection."""
