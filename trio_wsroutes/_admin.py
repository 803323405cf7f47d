"""The admin page: ``WebSocketServer(admin=Admin(authenticate=...))``.

A page (plain HTML, CSS and JavaScript shipped in ``trio_wsroutes/admin/``) served at
``Admin.path`` on the server's own port, and a typed route at ``Admin.path + "/live"``
that sends it a snapshot of the server every second and takes its orders (close a
connection). Both are refused to whoever ``Admin.authenticate`` refuses.

The live route is the server's own, not the application's: it is not among
``server.routes`` (so not in generated client types), its connections are not in
``server.registry``, ``server.stats`` or the route metrics, and what it reads is what
the metrics read (:mod:`._admin_snapshot`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.resources
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ._access_log import UserId
from ._admin_messages import AdminHello, AdminSnapshot, CloseConnection, RefreshSnapshot
from ._admin_snapshot import Sampler, ServerView, user_label
from ._admission import refusal
from ._auth import Reject, escape_controls
from ._codes import AUTH_ERROR, UNAUTHORIZED, UNKNOWN_CONNECTION, CloseCode
from ._context import Context
from ._engine import Connection, close_now
from ._errors import MessageError
from ._http_endpoints import HTTPAnswer
from ._metrics import RouteCounters
from ._origins import OriginPolicy
from ._paths import Router
from ._registry import ConnectionRegistry
from ._request import Request, TrustedProxies
from ._routes import WebSocketRoute
from ._stats import ServerStats
from ._version import __version__

if TYPE_CHECKING:
    from ._spec import RouteSpec

__all__ = ["CLOSED_BY_ADMIN", "Admin", "AdminSite"]

logger = logging.getLogger("trio_wsroutes")

CLOSED_BY_ADMIN: Final = "closed by an administrator"
"""The close reason of a connection closed from the admin page (code 1008)."""

AnyRoute = WebSocketRoute[Any, Any]

_PATH: Final = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
_MAX_REASON: Final = 200
"""Characters of an administrator's close reason kept for the log."""


def _check_authenticate(instance: Admin, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(
            "Admin needs authenticate=fn(request) -> user or None: the page is never open "
            f"to everyone (got {value!r})"
        )


def _check_path(instance: Admin, attribute: attrs.Attribute[str], value: object) -> None:
    if (
        not isinstance(value, str)
        or not _PATH.fullmatch(value)
        or any(set(segment) == {"."} for segment in value.split("/"))
    ):
        raise ValueError(
            f"Admin path {value!r} must be an absolute path of plain segments, without a "
            "trailing slash or parameters (like '/admin' or '/_ops/admin')"
        )


def _origins(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("allowed_origins takes a list of origins, not a single string")
    origins = tuple(value)
    OriginPolicy(origins)  # refuses what a route's allowed_origins refuses
    return origins


def _check_interval(instance: Admin, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.05 <= value <= 3600:
        raise ValueError("Admin interval is a number of seconds between 0.05 and 3600")


def _check_rows(instance: Admin, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 1 <= value <= 1000:
        raise ValueError("Admin max_rows is an integer from 1 to 1000")


@attrs.frozen
class Admin:
    """The ``admin`` option of :class:`~trio_wsroutes.WebSocketServer`: a live admin page
    on the server's own port, for the people ``authenticate`` lets in.

    ::

        server = WebSocketServer([chat], admin=Admin(authenticate=staff_only))

    The page (``GET path``) shows connections, messages and deliveries per second per
    route, handler latencies, the memory budget, topics and their subscribers, and the
    connections with the most bytes queued, each with a Close button. It updates itself
    over a WebSocket route at ``path + "/live"``. Nothing is served without this option.
    See the admin page guide.
    """

    authenticate: Callable[[Request], Any] = attrs.field(validator=_check_authenticate)
    """``fn(request) -> user or None``, sync or async, as a route's
    :meth:`~trio_wsroutes.WebSocketRoute.authenticate`: ``None`` refuses with 401, an
    exception with 401 (logged), ``raise Reject(status, ...)`` with that status. Called
    for the page and for its live route; the refusal carries no data."""
    path: str = attrs.field(default="/admin", validator=_check_path)
    """Where the page is served (``GET`` and ``HEAD``, both transports); its live route
    is at ``path + "/live"``."""
    allowed_origins: tuple[str, ...] = attrs.field(default=("self",), converter=_origins)
    """The origins whose pages may open the live route: by default only the server's own
    (the page it serves). See :class:`~trio_wsroutes.OriginPolicy`."""
    interval: float = attrs.field(default=1.0, validator=_check_interval)
    """Seconds between two snapshots sent to the page (rates are per second whatever
    the interval)."""
    max_rows: int = attrs.field(default=50, validator=_check_rows)
    """Topics and connections listed at most (the busiest topics, the connections with
    the most bytes queued)."""

    @property
    def live_path(self) -> str:
        """The path of the page's live route."""
        return self.path + "/live"


class AdminSite:
    """What a server with ``admin=`` serves: the page, the live route and its
    connections (kept apart from the application's), and the snapshots sent to them."""

    def __init__(
        self,
        admin: Admin,
        server: ServerView,
        *,
        user_id: UserId,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        self.admin = admin
        self._server = server
        self._user_id = user_id
        self._trusted_proxies = trusted_proxies
        self.registry: ConnectionRegistry = ConnectionRegistry()
        """The live route's connections (not in ``server.registry``)."""
        self.stats: ServerStats = ServerStats()
        """The live route's connections' counters (not in ``server.stats``)."""
        self.route: WebSocketRoute[Any, Any] = self._route()
        self.counters: RouteCounters = RouteCounters(self.route.path, self.route.handlers)
        """The live route's counters (not in the route metrics)."""
        self.sampler = Sampler(
            server, user_id=user_id, max_rows=admin.max_rows, interval=admin.interval
        )
        self._wanted = trio.Event()
        self._page, self._headers = _page(admin.live_path)

    # -- the application's routes and the admin's ---------------------------------------

    def router(self, routes: Iterable[AnyRoute]) -> Router[AnyRoute]:
        """A router over the application's ``routes`` and the live route (for admission)."""
        router: Router[AnyRoute] = Router(routes)
        try:
            router.add(self.route)
        except ValueError:
            raise ValueError(
                f"the admin page's live route {self.route.path!r} clashes with a route of "
                "the application: choose another Admin(path=...)"
            ) from None
        return router

    def serves(self, spec: RouteSpec) -> bool:
        """Whether ``spec`` is the live route's."""
        return spec.path == self.route.path

    # -- the page ---------------------------------------------------------------------------

    async def page(self, request: Request) -> HTTPAnswer:
        """The answer to ``GET path``: the page, or the refusal ``authenticate`` chose."""
        if self._trusted_proxies is not None:
            self._trusted_proxies.apply(request)
        try:
            user = self.admin.authenticate(request)
            if inspect.isawaitable(user):
                user = await user
        except Reject as reject:
            return refusal(reject.status, reject.message, reject.code, reject.headers)
        except Exception:
            logger.exception("Admin.authenticate failed; refusing the admin page")
            return refusal(401, "Authentication failed", AUTH_ERROR)
        if user is None:
            return refusal(401, "Unauthorized", UNAUTHORIZED)
        return 200, self._headers, self._page

    # -- the live route -----------------------------------------------------------------

    def _route(self) -> WebSocketRoute[Any, AdminHello | AdminSnapshot]:
        admin = self.admin
        route = (
            WebSocketRoute(admin.live_path, name="TrioWsroutesAdmin", module=__name__)
            .server_messages(AdminHello, AdminSnapshot)
            .client_messages(RefreshSnapshot, CloseConnection)
            .authenticate(admin.authenticate)
            .allowed_origins(admin.allowed_origins)
            .rate_limit(20, 40)
        )

        @route.on_connect
        async def hello(ws: Connection[AdminHello | AdminSnapshot], ctx: Context[Any]) -> None:
            self._wanted.set()
            user = user_label(self._user_id, ctx.user)
            logger.info("administrator %s opened the admin page", escape_controls(str(user)))
            await ws.send(AdminHello(user=user, interval=admin.interval, version=__version__))
            await ws.send(await self.sampler.sample())

        @route.on("refresh_snapshot", RefreshSnapshot)
        async def refresh(
            ws: Connection[AdminHello | AdminSnapshot], data: RefreshSnapshot, ctx: Context[Any]
        ) -> AdminSnapshot:
            return await self.sampler.sample()

        @route.on("close_connection", CloseConnection)
        async def close(
            ws: Connection[AdminHello | AdminSnapshot], data: CloseConnection, ctx: Context[Any]
        ) -> None:
            self.close_connection(data, ctx.user)

        return route

    def close_connection(self, order: CloseConnection, administrator: object) -> None:
        """Close the application's connection ``order.id`` with 1008 and log who did;
        :class:`MessageError` (``UNKNOWN_CONNECTION``) if no such connection is open."""
        connection = self._server.registry.get(order.id)
        if connection is None:
            raise MessageError("No open connection has this id", UNKNOWN_CONNECTION)
        context = connection.context
        logger.warning(
            "administrator %s closed connection %s (route %s, user %s): %s",
            escape_controls(str(user_label(self._user_id, administrator))),
            connection.id,
            connection.path,
            escape_controls(str(user_label(self._user_id, context.user))),
            escape_controls(order.reason[:_MAX_REASON]) or "no reason given",
        )
        close_now(connection, CloseCode.POLICY_VIOLATION, CLOSED_BY_ADMIN)

    # -- snapshots --------------------------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Startup hook: send a snapshot to every open page each ``interval`` seconds
        (sampling nothing while no page is open)."""
        nursery.start_soon(self._send_snapshots)

    async def _send_snapshots(self) -> None:
        while True:
            await self._wanted.wait()
            if not len(self.registry):
                self._wanted = trio.Event()
                continue
            try:
                snapshot = await self.sampler.sample()
            except Exception:
                # A bug here must not take the server down with its lifespan.
                logger.exception("the admin page's snapshot failed")
            else:
                # Queued for every page at once; a page that cannot keep up is closed
                # (1013) as any slow consumer.
                self.registry.broadcast(snapshot)
            await trio.sleep(self.admin.interval)


def _page(live_path: str) -> tuple[bytes, list[tuple[str, str]]]:
    """The page with its stylesheet and script inlined (one request, one check of
    ``authenticate``), and its headers: a content security policy that allows exactly
    that script and stylesheet, and no framing."""
    files = importlib.resources.files(__package__ or "trio_wsroutes").joinpath("admin")
    template = files.joinpath("index.html").read_text("utf-8")
    style = files.joinpath("admin.css").read_text("utf-8")
    script = files.joinpath("admin.js").read_text("utf-8")
    if "</" in style or "</script" in script.lower():
        raise RuntimeError("the admin page's files cannot be inlined: they hold '</'")
    page = (
        template.replace("{{live_path}}", html.escape(live_path, quote=True))
        .replace("/*admin.css*/", style)
        .replace("/*admin.js*/", script)
    )
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src '{_digest(script)}'",
            f"style-src '{_digest(style)}'",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    headers = [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("content-security-policy", policy),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ]
    return page.encode("utf-8"), headers


def _digest(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
