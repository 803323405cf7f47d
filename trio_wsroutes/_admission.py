"""Admission: who may open a WebSocket, decided before the upgrade is answered.

In order: the connection limits (server-wide, then per client address), the request's
shape (query parameters), routing, the client's history positions (``since``), the
origin policy, subprotocols, and the route's ``authenticate`` function. A refusal is a
real HTTP response with a JSON body (``{"message": ..., "code": ...}``) sent by the
transport; no handler runs.

A connection holds its place in the limits from the moment it is being admitted until
its transport has closed, closing handshake included, so sockets that linger while they
close still count.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from ._auth import Reject, escape_controls, token_places
from ._codes import (
    AUTH_ERROR,
    BAD_REQUEST,
    FORBIDDEN_ORIGIN,
    NOT_FOUND,
    SERVER_BUSY,
    TOO_MANY_CONNECTIONS,
    UNAUTHORIZED,
    UNSUPPORTED_SUBPROTOCOL,
    UPGRADE_REQUIRED,
)
from ._containment import must_propagate
from ._history import Position, parse_since
from ._origins import same_origin
from ._paths import Router
from ._request import Request, TrustedProxies
from ._spec import RouteSpec
from ._stats import ServerStats
from ._tokens import unwrap
from ._transports import Transport, TransportClosed

if TYPE_CHECKING:
    from ._routes import WebSocketRoute
    from ._tracing import MessageTracing

__all__ = [
    "Admission",
    "Admitted",
    "Admitting",
    "HTTPAnswer",
    "cookie_routes_without_policy",
    "refusal",
]

logger = logging.getLogger("trio_wsroutes")

_JSON = ("content-type", "application/json")

HTTPAnswer = tuple[int, Sequence[tuple[str, str]], bytes]
"""An HTTP response: status, headers, body."""

_NO_ROUTE: Final = (404, "Not Found", NOT_FOUND)
"""The refusal for a path no route serves, upgrade or plain HTTP."""


def refusal(
    status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> HTTPAnswer:
    """A refusal as the server sends it: ``status``, a JSON body ``{"message": ...,
    "code": ...}`` and ``headers`` (names lower-cased; the content type is the body's)."""
    extra = [(k.lower(), v) for k, v in (headers or {}).items() if k.lower() != "content-type"]
    return status, [_JSON, *extra], orjson.dumps({"message": message, "code": code})


@attrs.frozen
class Admitted:
    """An upgrade that passed every check."""

    spec: RouteSpec
    user: Any
    subprotocol: str | None
    positions: dict[str, Position] = attrs.field(factory=dict[str, Position])
    """The client's last positions (its ``since`` query parameters), per topic."""
    tracing: MessageTracing | None = None
    """With tracing: the spans of the connection's messages, linked to its upgrade's."""

    def traced(self, tracing: MessageTracing) -> Admitted:
        """This admission, with the spans of its connection's messages."""
        return attrs.evolve(self, tracing=tracing)

    expires_at: float | None = None
    """When the user's credentials expire (UNIX time; ``authenticate`` returned
    :class:`~trio_wsroutes.Authenticated`), or ``None``."""


class Admitting:
    """``async with admission.admit(transport, request) as admitted``: the admission of
    one upgrade, and its place in the limits until the block ends. A small object rather
    than a generator-based context manager: it lasts as long as the connection."""

    __slots__ = ("_admission", "held_by", "request", "transport")

    def __init__(self, admission: Admission, transport: Transport, request: Request) -> None:
        self._admission = admission
        self.transport = transport
        self.request = request
        self.held_by: str | None = None
        """The client address whose place is held, once one is."""

    async def __aenter__(self) -> Admitted | None:
        return await self._admission._enter(self)  # pyright: ignore[reportPrivateUsage]

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the place in the limits back (once)."""
        ip = self.held_by
        if ip is not None:
            self.held_by = None
            self._admission._release(ip)  # pyright: ignore[reportPrivateUsage]


def _cross_site_with_cookies(spec: RouteSpec, request: Request) -> bool:
    origin = request.origin
    return (
        spec.origin_policy is None
        and request.cookies_read
        and bool(request.cookies)
        and origin is not None
        and not same_origin(origin, request.headers.get("host"))
    )


def cookie_routes_without_policy(specs: list[RouteSpec]) -> list[str]:
    """Paths of routes whose ``authenticate`` reads a cookie (``create_token_auth`` with
    ``cookie_name``) and that have no origin policy: the server warns about them."""
    return [
        spec.path
        for spec in specs
        if spec.origin_policy is None
        and (places := token_places(spec.authenticate)) is not None
        and places.cookie is not None
    ]


class Admission:
    """The checks an upgrade request must pass, and the counters behind the limits."""

    def __init__(
        self,
        router: Router[WebSocketRoute[Any, Any]],
        specs: Mapping[WebSocketRoute[Any, Any], RouteSpec],
        *,
        stats: ServerStats,
        trusted_proxies: TrustedProxies | None = None,
        max_query_params: int = 100,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        on_denied: Callable[[int, str, Request, str | None], None] | None = None,
    ) -> None:
        self._router = router
        self._on_denied = on_denied
        self._specs = specs
        self._stats = stats
        self._trusted_proxies = trusted_proxies
        self._max_query_params = max_query_params
        self._max_connections = max_connections
        self._max_per_ip = max_connections_per_ip
        self.held: int = 0
        """Connections being admitted, open, or still closing."""
        self._per_ip: dict[str, int] = {}

    def admit(self, transport: Transport, request: Request) -> Admitting:
        """Check ``request`` on entering the returned ``async with``: it gives what was
        admitted, or ``None`` after denying it.

        The connection's place in the limits is held until the ``async with`` block
        ends: run the connection and close its transport inside it.
        """
        return Admitting(self, transport, request)

    async def _enter(self, admitting: Admitting) -> Admitted | None:
        transport, request = admitting.transport, admitting.request
        if self._trusted_proxies is not None:
            # First, so that every refusal is logged with the client's own address.
            self._trusted_proxies.apply(request)
        if self._max_connections is not None and self.held >= self._max_connections:
            await self.deny(
                transport, request, 503, "Server is at capacity", SERVER_BUSY, {"retry-after": "1"}
            )
            return None
        # Before the request is parsed further: a huge query string costs nothing yet.
        if request.query_string.count("&") >= self._max_query_params:
            await self.deny(transport, request, 400, "Too many query parameters", BAD_REQUEST)
            return None
        ip = request.client[0] if request.client is not None else ""
        if self._max_per_ip is not None and self._per_ip.get(ip, 0) >= self._max_per_ip:
            await self.deny(
                transport,
                request,
                429,
                "Too many connections from this address",
                TOO_MANY_CONNECTIONS,
            )
            return None
        # Upgrades being admitted count against the limits too: a burst of slow
        # authentications must not let more connections in than allowed.
        self.held += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        admitting.held_by = ip
        try:
            return await self._check(transport, request)
        except BaseException:
            admitting.release()
            raise

    def _release(self, ip: str) -> None:
        self.held -= 1
        remaining = self._per_ip[ip] - 1
        if remaining:
            self._per_ip[ip] = remaining
        else:
            del self._per_ip[ip]

    def route(self, path: str) -> tuple[RouteSpec, Mapping[str, str]] | None:
        """The route that serves ``path``, with the path's parameters; ``None`` when no
        route does (an upgrade there is denied with 404)."""
        match = self._router.match(path)
        if match is None:
            return None
        return self._specs[match.route], match.params

    def plain_http(self, path: str) -> HTTPAnswer:
        """The answer to a plain HTTP request for ``path`` (a server that speaks only
        WebSocket there): 426 on a route's path, 404 elsewhere, as for an upgrade."""
        if self.route(path) is None:
            return refusal(*_NO_ROUTE)
        return refusal(
            426,
            "This path speaks WebSocket only",
            UPGRADE_REQUIRED,
            {"upgrade": "websocket", "connection": "Upgrade"},
        )

    async def _check(self, transport: Transport, request: Request) -> Admitted | None:
        found = self.route(request.path)
        if found is None:
            await self.deny(transport, request, *_NO_ROUTE)
            return None
        try:
            positions = parse_since(request.query.get_all("since"))
        except ValueError as exc:
            await self.deny(transport, request, 400, str(exc), BAD_REQUEST)
            return None
        spec, request.path_params = found
        policy = spec.origin_policy
        if policy is not None and not policy.allows(request.origin, request.headers.get("host")):
            await self.deny(transport, request, 403, "Origin not allowed", FORBIDDEN_ORIGIN)
            return None
        subprotocol = spec.select_subprotocol(request.subprotocols)
        if subprotocol is None and spec.subprotocol_required:
            await self.deny(
                transport,
                request,
                400,
                "None of the offered subprotocols is supported",
                UNSUPPORTED_SUBPROTOCOL,
                {"sec-websocket-protocol": ", ".join(spec.subprotocols)},
            )
            return None
        user: Any = None
        expires_at: float | None = None
        if spec.authenticate is not None:
            try:
                user = spec.authenticate(request)
                if inspect.isawaitable(user):
                    user = await user
                user, expires_at = unwrap(user)
            except Reject as reject:
                await self.deny(
                    transport, request, reject.status, reject.message, reject.code, reject.headers
                )
                return None
            except BaseException as exc:
                if must_propagate(exc):
                    raise
                logger.error("authenticate failed on %s", spec.path, exc_info=exc)  # noqa: TRY400
                await self.deny(transport, request, 401, "Authentication failed", AUTH_ERROR)
                return None
            if user is None:
                await self.deny(transport, request, 401, "Unauthorized", UNAUTHORIZED)
                return None
            if expires_at is not None and expires_at <= time.time():
                await self.deny(transport, request, 401, "Token expired", UNAUTHORIZED)
                return None
            if _cross_site_with_cookies(spec, request):
                # A browser sends its cookies with any page's WebSocket: without an origin
                # policy, a route that authenticated by cookie accepts only its own origin.
                logger.warning(
                    "refused a cross-site upgrade of %s authenticated by cookie (Origin %s); "
                    "set allowed_origins to accept it",
                    spec.path,
                    escape_controls(request.origin or ""),
                )
                await self.deny(
                    transport,
                    request,
                    403,
                    "Cross-site upgrade refused: this route authenticates with cookies",
                    FORBIDDEN_ORIGIN,
                )
                return None
        return Admitted(spec, user, subprotocol, positions, expires_at=expires_at)

    async def deny(
        self,
        transport: Transport,
        request: Request,
        status: int,
        message: str,
        code: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Refuse the upgrade with ``status`` and a JSON body (:func:`refusal`)."""
        self._stats.connections_denied += 1
        if self._on_denied is not None:
            match = self._router.match(request.path)
            self._on_denied(status, code, request, None if match is None else match.route.path)
        status, answer_headers, body = refusal(status, message, code, headers)
        with contextlib.suppress(TransportClosed):
            await transport.deny(status, body, answer_headers)
