"""The resolved, frozen description of a route that the engine and admission read.

The route builder (``_routes.py``) collects what the developer declares; when a server
starts serving a route it resolves it once, against the server's options, into a
:class:`RouteSpec`: which rate limit, origin policy, heartbeat and limits apply is decided
here and nowhere else.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from ._origins import OriginPolicy
from ._paths import PathPattern
from ._request import Request

__all__ = [
    "EngineOptions",
    "HandlerSpec",
    "Heartbeat",
    "RateLimit",
    "RateLimitAction",
    "RouteSpec",
    "SlowConsumerPolicy",
    "TokenRefreshTiming",
    "choose_subprotocol",
    "resolve_heartbeat",
]

SlowConsumerPolicy = Literal["close", "drop"]
"""What a publish does for a subscriber whose queue would pass ``backpressure_limit``:
``"close"`` it with 1013, or ``"drop"`` the message for it alone."""

RateLimitAction = Literal["error", "close"]
"""What happens to a message over a rate limit: ``"error"`` answers it with
``RATE_LIMITED`` (the connection stays open), ``"close"`` closes with 1008."""


@attrs.frozen
class RateLimit:
    """A per-connection limit on inbound messages (a token bucket).

    ``messages_per_second`` is the sustained rate (``0.5`` is one message every two
    seconds); ``burst`` how many may come at once after a quiet spell (default: one
    second's worth, at least 1). ``bytes_per_second`` also limits inbound volume (a text
    message counts its UTF-8 length), with a burst of one second's worth: a message that
    finds that allowance spent is refused. Used by :meth:`WebSocketRoute.rate_limit` and
    the server's ``rate_limit`` option.
    """

    messages_per_second: float
    burst: int | None = None
    bytes_per_second: int | None = None
    action: RateLimitAction = "error"

    def __attrs_post_init__(self) -> None:
        if not self.messages_per_second > 0:
            raise ValueError("rate_limit needs messages_per_second > 0")
        if self.burst is not None and self.burst < 1:
            raise ValueError("rate_limit burst must be at least 1")
        if self.bytes_per_second is not None and self.bytes_per_second < 1:
            raise ValueError("rate_limit bytes_per_second must be at least 1")
        if self.action not in ("error", "close"):
            raise ValueError('rate_limit action is "error" or "close"')

    @property
    def capacity(self) -> int:
        """The bucket size: ``burst``, or one second's worth (at least 1)."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.messages_per_second))


@attrs.frozen
class Heartbeat:
    """The connection's heartbeat: after ``interval`` seconds without a frame from the
    peer, send a ping; a peer that then sends nothing for ``timeout`` seconds is closed
    with 1011 (``"heartbeat timeout"``).

    ``envelope`` pings are ``{"type": "ping"}`` text messages (:meth:`WebSocketRoute.heartbeat`,
    any transport); otherwise they are WebSocket ping frames (the server's
    ``heartbeat_interval``, on transports that can send them).
    """

    interval: float
    timeout: float
    envelope: bool = False


def resolve_heartbeat(
    route: Heartbeat | None, interval: float | None, timeout: float
) -> Heartbeat | None:
    """The heartbeat of a route's connections: the route's own envelope heartbeat
    (:meth:`WebSocketRoute.heartbeat`) if it has one, else the server's WebSocket pings
    every ``interval`` seconds, answered within ``timeout`` (none when ``interval`` is
    ``None``). Whether pings apply on a given transport is :meth:`RouteSpec.heartbeat_on`."""
    if route is not None:
        return route
    return None if interval is None else Heartbeat(interval, timeout)


@attrs.frozen
class HandlerSpec:
    """One ``.on(type, schema, handler)`` registration."""

    type: str
    schema: builtins.type[Any]
    handler: Callable[..., Awaitable[Any]]
    structure: Callable[[Any, Any], Any]


@attrs.frozen
class EngineOptions:
    """Per-connection limits, from :class:`~trio_wsroutes.WebSocketServer` options."""

    max_payload_length: int = 16 * 1024 * 1024
    idle_timeout: float | None = 120.0
    backpressure_limit: int = 16 * 1024 * 1024
    max_queued_messages: int = 16
    max_queued_bytes: int = 1024 * 1024
    close_timeout: float = 5.0
    slow_consumer_policy: SlowConsumerPolicy = "close"
    max_topics_per_connection: int = 1000
    max_topic_length: int = 256


@attrs.frozen
class TokenRefreshTiming:
    """When a connection whose credentials expire asks its client for a new token
    (``before`` seconds ahead of the expiry, or half the credentials' remaining lifetime
    when that is shorter), and how long the client has to send a valid one: until
    ``grace`` seconds after the request, and at least until the expiry (so never more
    than ``grace`` past it)."""

    before: float = 30.0
    grace: float = 10.0

    def __attrs_post_init__(self) -> None:
        if not (self.before > 0 and math.isfinite(self.before)):
            raise ValueError("refresh_before must be a positive number of seconds")
        if not (self.grace > 0 and math.isfinite(self.grace)):
            raise ValueError("refresh_grace must be a positive number of seconds")


Hook = Callable[..., Awaitable[Any]]


@attrs.frozen(kw_only=True)
class RouteSpec:
    """One route as a server runs it: its handlers and every setting resolved.

    Built once per route and server (route settings win over the server's defaults);
    immutable, so a connection's behaviour cannot change under it.
    """

    path: str
    pattern: PathPattern
    handlers: Mapping[str, HandlerSpec]
    on_connect: Hook | None
    on_close: Hook | None
    on_error: Hook | None
    on_binary: Hook | None
    on_text: Hook | None
    authenticate: Callable[[Request], Any] | None
    authorize_subscribe: Callable[..., Any] | None
    server_message_types: frozenset[builtins.type[Any]]
    origin_policy: OriginPolicy | None
    subprotocols: tuple[str, ...]
    subprotocol_required: bool
    rate_limit: RateLimit | None
    handler_timeout: float | None
    heartbeat: Heartbeat | None
    """The route's heartbeat (:func:`resolve_heartbeat`), before the transport is known."""
    options: EngineOptions
    token_refresh: TokenRefreshTiming = attrs.field(factory=TokenRefreshTiming)
    """When to ask for a new token, and how long to wait for it (expiring credentials)."""

    def heartbeat_on(self, can_ping: bool) -> Heartbeat | None:
        """The heartbeat that applies on a transport that can (or cannot) send WebSocket
        pings: an envelope heartbeat runs on any transport; ping frames only where the
        transport sends them (under hypercorn, which pings by itself, there is none)."""
        heartbeat = self.heartbeat
        if heartbeat is None or heartbeat.envelope or can_ping:
            return heartbeat
        return None

    def select_subprotocol(self, offered: Iterable[str]) -> str | None:
        """The subprotocol to answer a client that offered ``offered`` (or ``None``)."""
        return choose_subprotocol(self.subprotocols, offered)


def choose_subprotocol(supported: Sequence[str], offered: Iterable[str]) -> str | None:
    """The subprotocol a route answers with: the first of ``supported`` (the route's
    order of preference, not the client's) that the client ``offered``, or ``None``."""
    client = set(offered)
    return next((name for name in supported if name in client), None)
