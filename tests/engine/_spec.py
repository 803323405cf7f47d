"""Route specs for the engine's unit tests, resolved as a server resolves them."""

from __future__ import annotations

from typing import Any

from trio_wsroutes._routes import ServerDefaults, WebSocketRoute, resolve_route
from trio_wsroutes._spec import EngineOptions, Heartbeat, RateLimit, RouteSpec


def spec_of(
    route: WebSocketRoute[Any, Any],
    *,
    rate_limit: RateLimit | None = None,
    heartbeat: Heartbeat | None = None,
    **options: Any,
) -> RouteSpec:
    """``route`` resolved against a server with ``options`` (``EngineOptions`` fields)
    and, with ``heartbeat``, the server's WebSocket pings at its interval and timeout."""
    defaults = ServerDefaults(
        options=EngineOptions(**options),
        rate_limit=rate_limit,
        heartbeat_interval=None if heartbeat is None else heartbeat.interval,
        heartbeat_timeout=20.0 if heartbeat is None else heartbeat.timeout,
    )
    return resolve_route(route, defaults)
