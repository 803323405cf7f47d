"""Routes: ``create_websocket_route`` and the route builder.

The builder collects what the developer declares; :func:`resolve_route` turns a route into
the frozen :class:`~trio_wsroutes._spec.RouteSpec` a server runs, once, when it starts
serving it. From then on the route is frozen: a late ``.on(...)`` would be ignored by the
running server, so it raises instead.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, NoReturn, overload

import attrs
from typing_extensions import TypeVar, deprecated

from ._definition_checks import check_client_schema, check_server_message
from ._handler_messages import check_handler_messages
from ._handlers import (
    BinaryHandler,
    CloseHandler,
    ConnectHandler,
    ErrorHandler,
    MessageHandler,
    SubscribeCheck,
    TextHandler,
    check_handler,
)
from ._messages import RESERVED_TYPES, message_type
from ._origins import OriginPolicy
from ._paths import PathPattern as PathPattern
from ._paths import Router as Router
from ._request import Request
from ._spec import (
    EngineOptions,
    HandlerSpec,
    Heartbeat,
    RateLimit,
    RateLimitAction,
    RouteSpec,
    TokenRefreshTiming,
    choose_subprotocol,
    resolve_heartbeat,
)
from ._tokens import Authenticated
from ._validation import converter, structure_hook_for

__all__ = ["ServerDefaults", "WebSocketRoute", "create_websocket_route", "resolve_route"]

T = TypeVar("T")
U = TypeVar("U")
UserT = TypeVar("UserT")
ServerT = TypeVar("ServerT")
ClientT_co = TypeVar("ClientT_co", covariant=True, default=object)
"""The route's client messages, as the typed clients see them: ``object`` (anything) until
:meth:`WebSocketRoute.client_messages` declares them."""
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")
F = TypeVar("F")
G = TypeVar("G")
H = TypeVar("H")

_ConnectT = TypeVar("_ConnectT", bound=Callable[..., Awaitable[None]])


class ServerDefaults:
    """What a server contributes to its routes' specs: its options and the defaults
    that a route's own settings override."""

    __slots__ = (
        "authorize_subscribe",
        "forbid_unknown_keys",
        "handler_timeout",
        "heartbeat_interval",
        "heartbeat_timeout",
        "options",
        "origin_policy",
        "rate_limit",
        "token_refresh",
    )

    def __init__(
        self,
        *,
        options: EngineOptions,
        origin_policy: OriginPolicy | None = None,
        rate_limit: RateLimit | None = None,
        handler_timeout: float | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_timeout: float = 20.0,
        forbid_unknown_keys: bool = False,
        authorize_subscribe: SubscribeCheck[Any, Any] | None = None,
        token_refresh: TokenRefreshTiming | None = None,
    ) -> None:
        self.token_refresh = token_refresh if token_refresh is not None else TokenRefreshTiming()
        self.authorize_subscribe = authorize_subscribe
        self.forbid_unknown_keys = forbid_unknown_keys
        self.options = options
        self.origin_policy = origin_policy
        self.rate_limit = rate_limit
        self.handler_timeout = handler_timeout
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout


class WebSocketRoute(Generic[UserT, ServerT, ClientT_co]):
    """A WebSocket route, built with :func:`create_websocket_route`.

    ``UserT`` is what ``authenticate`` returns (``None`` without it), ``ServerT`` the union
    of server messages given to :meth:`server_messages`, and ``ClientT_co`` the union of
    client messages given to :meth:`client_messages` (``object`` until then): what the
    typed clients (:func:`trio_wsroutes.client.connect`, ``TestClient.client``) accept in
    ``send`` and ``request``.
    """

    def __init__(self, path: str, *, name: str | None = None, module: str | None = None) -> None:
        self.pattern: PathPattern = PathPattern.parse(path)
        self.path: str = path
        """The path as written (``/chat/:room``)."""
        self.name: str | None = name
        """An explicit name for generated client types (else derived from the path)."""
        self.module: str | None = module
        """The module that created the route (named in generated types)."""
        self.handlers: dict[str, HandlerSpec] = {}
        self.connect_handler: ConnectHandler[Any, Any] | None = None
        self.close_handler: CloseHandler[Any, Any] | None = None
        self.error_handler: ErrorHandler[Any, Any] | None = None
        self.binary_handler: BinaryHandler[Any, Any] | None = None
        self.text_handler: TextHandler[Any, Any] | None = None
        self.authenticate_fn: Callable[[Request], Any] | None = None
        self.server_message_types: tuple[type[Any], ...] = ()
        self.client_message_types: tuple[type[Any], ...] = ()
        self.rate_limit_config: RateLimit | None = None
        """The route's own rate limit (else the server's ``rate_limit``)."""
        self.handler_timeout_seconds: float | None = None
        """Seconds a message handler of this route may run (else the server's)."""
        self.heartbeat_config: Heartbeat | None = None
        """The envelope heartbeat, if :meth:`heartbeat` enabled it."""
        self.origin_policy: OriginPolicy | None = None
        """The route's own origin check (else the server's)."""
        self.subprotocol_choices: tuple[str, ...] = ()
        """Subprotocols the route speaks, in its order of preference."""
        self.subprotocol_required: bool = False
        self.subscribe_check: SubscribeCheck[Any, Any] | None = None
        """The route's own :meth:`authorize_subscribe` check (else the server's)."""
        self.forbid_unknown_keys_setting: bool | None = None
        """The route's own unknown-keys rule (else the server's ``forbid_unknown_keys``)."""
        self.refresh_before: float | None = None
        """The route's own :meth:`token_refresh` ``before`` (else the server's)."""
        self.refresh_grace: float | None = None
        """The route's own :meth:`token_refresh` ``grace`` (else the server's)."""
        self.built: bool = False

    def __repr__(self) -> str:
        return f"<WebSocketRoute {self.path!r} types={sorted(self.handlers)!r}>"

    # -- message handlers ---------------------------------------------------------------

    @overload
    def on(
        self, type: str, schema: type[T]
    ) -> Callable[[MessageHandler[ServerT, T, UserT]], MessageHandler[ServerT, T, UserT]]: ...

    @overload
    def on(
        self, type: str, schema: type[T], handler: MessageHandler[ServerT, T, UserT]
    ) -> WebSocketRoute[UserT, ServerT, ClientT_co]: ...

    def on(
        self,
        type: str,
        schema: type[T],
        handler: MessageHandler[ServerT, T, UserT] | None = None,
    ) -> (
        Callable[[MessageHandler[ServerT, T, UserT]], MessageHandler[ServerT, T, UserT]]
        | WebSocketRoute[UserT, ServerT, ClientT_co]
    ):
        """Handle envelopes of ``type`` whose ``data`` validates as ``schema``.

        As a decorator (``@route.on("chat", Chat)``) it returns the function unchanged;
        with the handler as third argument it returns the route, for chaining.
        """
        self._check_open()
        if not isinstance(type, str) or not type:
            raise TypeError("message type must be a non-empty string")
        if type in self.handlers:
            raise ValueError(f"route {self.path!r} already has a handler for {type!r}")
        if type in RESERVED_TYPES:
            raise ValueError(f"{type!r} is a wire type the framework uses; choose another name")
        if not attrs.has(schema):
            raise TypeError(f"schema for {type!r} must be an attrs class, got {schema!r}")
        check_client_schema(schema, f"route {self.path!r} .on({type!r})")
        try:
            structure = converter.get_structure_hook(schema)
        except Exception as exc:
            raise TypeError(f"cannot validate {schema!r}: {exc}") from exc

        def register(
            fn: MessageHandler[ServerT, T, UserT],
        ) -> MessageHandler[ServerT, T, UserT]:
            self._check_open()
            check_handler(fn, f"handler for {type!r}", ("ws", "data", "ctx"))
            if self.server_message_types:  # else checked when the route is built
                check_handler_messages(
                    fn, self.server_message_types, f"the handler for {type!r}", self.path
                )
            if type in self.handlers:
                raise ValueError(f"route {self.path!r} already has a handler for {type!r}")
            self.handlers[type] = HandlerSpec(type, schema, fn, structure)
            return fn

        if handler is None:
            return register
        register(handler)
        return self

    # -- lifecycle hooks (decorators) ------------------------------------------------------

    def _set_hook(
        self, attr: str, fn: _ConnectT, what: str, parameters: tuple[str, ...]
    ) -> _ConnectT:
        self._check_open()
        check_handler(fn, what, parameters)
        if self.server_message_types:  # else checked when the route is built
            check_handler_messages(fn, self.server_message_types, f"the {what} hook", self.path)
        if getattr(self, attr) is not None:
            raise ValueError(f"route {self.path!r} already has an {what} handler")
        setattr(self, attr, fn)
        return fn

    def on_connect(self, fn: ConnectHandler[ServerT, UserT]) -> ConnectHandler[ServerT, UserT]:
        """Decorator: run ``fn(ws, ctx)`` after the upgrade, before any message."""
        return self._set_hook("connect_handler", fn, "on_connect", ("ws", "ctx"))

    def on_close(self, fn: CloseHandler[ServerT, UserT]) -> CloseHandler[ServerT, UserT]:
        """Decorator: run ``fn(ws, code, reason, ctx)`` exactly once when the connection ends."""
        return self._set_hook("close_handler", fn, "on_close", ("ws", "code", "reason", "ctx"))

    def on_error(self, fn: ErrorHandler[ServerT, UserT]) -> ErrorHandler[ServerT, UserT]:
        """Decorator: run ``fn(ws, error, ctx)`` on bad input and on handler crashes.

        The error envelope has been sent already; use the hook to log, count, or close.
        """
        return self._set_hook("error_handler", fn, "on_error", ("ws", "error", "ctx"))

    def on_binary(self, fn: BinaryHandler[ServerT, UserT]) -> BinaryHandler[ServerT, UserT]:
        """Decorator: handle binary frames with ``fn(ws, data, ctx)``.

        Without it, a binary frame closes the connection with 1003.
        """
        return self._set_hook("binary_handler", fn, "on_binary", ("ws", "data", "ctx"))

    def on_text(self, fn: TextHandler[ServerT, UserT]) -> TextHandler[ServerT, UserT]:
        """Decorator: handle text frames that are not envelopes with ``fn(ws, text, ctx)``.

        Without it, such frames get an ``INVALID_JSON`` or ``INVALID_MESSAGE`` error.
        """
        return self._set_hook("text_handler", fn, "on_text", ("ws", "text", "ctx"))

    # -- configuration (chainable) -----------------------------------------------------

    @overload
    def authenticate(
        self, fn: Callable[[Request], Awaitable[Authenticated[U] | None]]
    ) -> WebSocketRoute[U, ServerT, ClientT_co]: ...

    @overload
    def authenticate(
        self, fn: Callable[[Request], Authenticated[U] | None]
    ) -> WebSocketRoute[U, ServerT, ClientT_co]: ...

    @overload
    def authenticate(
        self, fn: Callable[[Request], Awaitable[U | None]]
    ) -> WebSocketRoute[U, ServerT, ClientT_co]: ...

    @overload
    def authenticate(
        self, fn: Callable[[Request], U | None]
    ) -> WebSocketRoute[U, ServerT, ClientT_co]: ...

    def authenticate(
        self, fn: Callable[[Request], Any]
    ) -> WebSocketRoute[Any, ServerT, ClientT_co]:
        """Run ``fn(request)`` before the upgrade; its result becomes ``ctx.user``.

        ``fn`` may be sync or async. ``None`` denies the upgrade with HTTP 401
        (``UNAUTHORIZED``); an exception denies with 401 (``AUTH_ERROR``) and is logged;
        ``raise Reject(status, message, code)`` denies with that status. Returning
        :class:`Authenticated` (``Authenticated(user, expires_at=...)``) makes the
        credentials expire: the server asks the client for a new token before then and
        checks it with ``fn`` again (see :meth:`token_refresh`).
        """
        self._check_open()
        if not callable(fn):
            raise TypeError(f"authenticate needs a callable, got {fn!r}")
        self.authenticate_fn = fn
        return self

    @overload
    @deprecated(
        "pass the message classes as separate arguments: server_messages(A, B), "
        "not server_messages(A | B)"
    )
    def server_messages(self, union: types.UnionType, /, *more: Any) -> NoReturn: ...
    @overload
    def server_messages(self, a: type[A], /) -> WebSocketRoute[UserT, A, ClientT_co]: ...
    @overload
    def server_messages(
        self, a: type[A], b: type[B], /
    ) -> WebSocketRoute[UserT, A | B, ClientT_co]: ...
    @overload
    def server_messages(
        self, a: type[A], b: type[B], c: type[C], /
    ) -> WebSocketRoute[UserT, A | B | C, ClientT_co]: ...
    @overload
    def server_messages(
        self, a: type[A], b: type[B], c: type[C], d: type[D], /
    ) -> WebSocketRoute[UserT, A | B | C | D, ClientT_co]: ...
    @overload
    def server_messages(
        self, a: type[A], b: type[B], c: type[C], d: type[D], e: type[E], /
    ) -> WebSocketRoute[UserT, A | B | C | D | E, ClientT_co]: ...
    @overload
    def server_messages(
        self, a: type[A], b: type[B], c: type[C], d: type[D], e: type[E], f: type[F], /
    ) -> WebSocketRoute[UserT, A | B | C | D | E | F, ClientT_co]: ...
    @overload
    def server_messages(
        self,
        a: type[A],
        b: type[B],
        c: type[C],
        d: type[D],
        e: type[E],
        f: type[F],
        g: type[G],
        /,
    ) -> WebSocketRoute[UserT, A | B | C | D | E | F | G, ClientT_co]: ...
    @overload
    def server_messages(
        self,
        a: type[A],
        b: type[B],
        c: type[C],
        d: type[D],
        e: type[E],
        f: type[F],
        g: type[G],
        h: type[H],
        /,
    ) -> WebSocketRoute[UserT, A | B | C | D | E | F | G | H, ClientT_co]: ...
    @overload
    def server_messages(self, *classes: type[Any]) -> WebSocketRoute[UserT, Any, ClientT_co]: ...

    def server_messages(self, *classes: Any) -> WebSocketRoute[UserT, Any, ClientT_co]:
        """Declare the messages this route sends: ``send``/``publish`` accept only these.

        Pass each class as its own argument (``server_messages(ChatOut, Pong)``); each
        must be tagged with :func:`message`.
        """
        self._check_open()
        if not classes:
            raise TypeError("server_messages needs at least one message class")
        seen: dict[str, type[Any]] = {}
        for cls in classes:
            if isinstance(cls, types.UnionType):
                raise TypeError(
                    "pass the message classes as separate arguments: "
                    "server_messages(A, B), not server_messages(A | B)"
                )
            wire = message_type(cls) if isinstance(cls, type) else None
            if wire is None:
                raise TypeError(f"{cls!r} is not a server message: decorate it with @message(...)")
            check_server_message(cls, f"route {self.path!r} server message {cls.__qualname__}")
            if wire in seen and seen[wire] is not cls:
                raise ValueError(f"wire type {wire!r} is used by two server messages")
            seen[wire] = cls
        self.server_message_types = tuple(classes)
        return self

    @overload
    def client_messages(self, a: type[A], /) -> WebSocketRoute[UserT, ServerT, A]: ...
    @overload
    def client_messages(
        self, a: type[A], b: type[B], /
    ) -> WebSocketRoute[UserT, ServerT, A | B]: ...
    @overload
    def client_messages(
        self, a: type[A], b: type[B], c: type[C], /
    ) -> WebSocketRoute[UserT, ServerT, A | B | C]: ...
    @overload
    def client_messages(
        self, a: type[A], b: type[B], c: type[C], d: type[D], /
    ) -> WebSocketRoute[UserT, ServerT, A | B | C | D]: ...
    @overload
    def client_messages(
        self, a: type[A], b: type[B], c: type[C], d: type[D], e: type[E], /
    ) -> WebSocketRoute[UserT, ServerT, A | B | C | D | E]: ...
    @overload
    def client_messages(
        self, a: type[A], b: type[B], c: type[C], d: type[D], e: type[E], f: type[F], /
    ) -> WebSocketRoute[UserT, ServerT, A | B | C | D | E | F]: ...
    @overload
    def client_messages(
        self,
        a: type[A],
        b: type[B],
        c: type[C],
        d: type[D],
        e: type[E],
        f: type[F],
        g: type[G],
        /,
    ) -> WebSocketRoute[UserT, ServerT, A | B | C | D | E | F | G]: ...
    @overload
    def client_messages(
        self,
        a: type[A],
        b: type[B],
        c: type[C],
        d: type[D],
        e: type[E],
        f: type[F],
        g: type[G],
        h: type[H],
        /,
    ) -> WebSocketRoute[UserT, ServerT, A | B | C | D | E | F | G | H]: ...
    @overload
    def client_messages(self, *classes: type[Any]) -> WebSocketRoute[UserT, ServerT, Any]: ...

    def client_messages(self, *classes: type[Any]) -> WebSocketRoute[UserT, ServerT, Any]:
        """Declare the messages clients send: the typed clients then accept only these in
        ``send`` and ``request`` (a static error under mypy and pyright otherwise), and
        type generation describes them even without handlers.

        Every class a handler is registered for with :meth:`on` must be among them (the
        route refuses to build otherwise, so the declaration cannot fall behind the
        handlers).
        """
        self._check_open()
        for cls in classes:
            if not attrs.has(cls):
                raise TypeError(f"client message {cls!r} must be an attrs class")
            check_client_schema(cls, f"route {self.path!r} client message {cls.__qualname__}")
        self.client_message_types = tuple(classes)
        return self

    def handler_timeout(self, seconds: float) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """Cancel a message handler that runs longer than ``seconds``.

        The client gets ``HANDLER_TIMEOUT`` for that message, ``on_error`` runs, and the
        connection goes on with the next message. Overrides the server's
        ``handler_timeout`` for this route.
        """
        self._check_open()
        if not seconds > 0:
            raise ValueError("handler_timeout needs a positive number of seconds")
        self.handler_timeout_seconds = float(seconds)
        return self

    def rate_limit(
        self,
        messages_per_second: float,
        burst: int | None = None,
        *,
        bytes_per_second: int | None = None,
        action: RateLimitAction = "error",
    ) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """Limit each connection to ``messages_per_second`` inbound messages, with bursts
        of up to ``burst`` (a token bucket; see :class:`RateLimit`).

        Over the limit a message is not handled: it is answered with ``RATE_LIMITED``
        (``action="error"``, the connection stays open) or the connection is closed with
        1008 (``action="close"``). Messages that came before it are still answered, in
        order. Overrides the server's ``rate_limit`` option for this route.
        """
        self._check_open()
        self.rate_limit_config = RateLimit(
            messages_per_second, burst, bytes_per_second=bytes_per_second, action=action
        )
        return self

    def heartbeat(
        self, interval: float, *, timeout: float | None = None
    ) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """Enable an application-level heartbeat, for servers that hide WebSocket pings
        (ASGI: hypercorn never tells the app about pongs).

        Every ``interval`` seconds the server sends ``{"type": "ping"}``; a client that
        then sends nothing (its ``{"type": "pong"}`` or any other message) for
        ``timeout`` seconds (default: ``interval``) is closed with 1011. While enabled,
        a client's ``{"type": "pong"}`` is taken as the answer, and a client's
        ``{"type": "ping"}`` is answered with ``{"type": "pong"}`` (echoing its ``id``),
        unless the route has handlers of its own for those types. Works on every
        transport; the native transport also has WebSocket-level pings (the server's
        ``heartbeat_interval``).
        """
        self._check_open()
        if not interval > 0 or (timeout is not None and not timeout > 0):
            raise ValueError("heartbeat needs interval > 0 and timeout > 0")
        self.heartbeat_config = Heartbeat(
            interval, interval if timeout is None else timeout, envelope=True
        )
        return self

    def allowed_origins(
        self, origins: Iterable[str], *, require: bool = False
    ) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """Accept upgrades only from these origins (overrides the server's
        ``allowed_origins`` for this route); others are denied with HTTP 403.

        Entries are exact origins, ``https://*.example.com`` patterns, ``"self"`` (the
        server's own origin: pages it serves itself), or ``"*"``. A request without
        ``Origin`` (not from a browser) is allowed unless ``require``.
        """
        self._check_open()
        self.origin_policy = OriginPolicy(origins, require=require)
        return self

    def subprotocols(
        self, *names: str, required: bool = True
    ) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """Declare the subprotocols the route speaks, most preferred first.

        The server selects the first of these the client offered (``ws.subprotocol``).
        If the client offered none of them, the upgrade is denied with HTTP 400
        (``UNSUPPORTED_SUBPROTOCOL``) when ``required``, else accepted without one.
        """
        self._check_open()
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TypeError("subprotocols takes one or more non-empty strings")
        self.subprotocol_choices = names
        self.subprotocol_required = required
        return self

    def authorize_subscribe(
        self, fn: SubscribeCheck[ServerT, UserT]
    ) -> SubscribeCheck[ServerT, UserT]:
        """Decorator: decide with ``fn(ws, topic, ctx)`` (sync or async, returning a
        ``bool``) whether a connection of this route may subscribe to ``topic``.

        Every ``ws.subscribe`` is checked, whoever calls it: a handler that subscribes to
        a topic named by the client cannot be talked into one the user may not read. A
        refusal raises :class:`MessageError` (``FORBIDDEN_TOPIC``), which reaches the
        client as an error envelope when raised in a handler. Overrides the server's
        ``authorize_subscribe``.
        """
        self._check_open()
        if not callable(fn):
            raise TypeError(f"authorize_subscribe needs a callable, got {fn!r}")
        try:
            inspect.signature(fn).bind("ws", "topic", "ctx")
        except TypeError as exc:
            raise TypeError(
                f"authorize_subscribe {fn!r} cannot be called as fn(ws, topic, ctx): {exc}"
            ) from None
        except ValueError:
            pass  # no signature to check
        self.subscribe_check = fn
        return fn

    def forbid_unknown_keys(
        self, forbid: bool = True
    ) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """Refuse keys that are not fields in this route's client messages (overrides the
        server's ``forbid_unknown_keys``).

        By default, as Zod's, unknown keys are ignored. Forbidden, each one is a
        ``VALIDATION_ERROR`` detail on its own path (``$.data.extra``, nested classes
        too) with the message ``unknown field "extra"``, reported with the other
        problems.
        """
        self._check_open()
        self.forbid_unknown_keys_setting = bool(forbid)
        return self

    def token_refresh(
        self, *, before: float | None = None, grace: float | None = None
    ) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """When connections of this route whose credentials expire (``authenticate``
        returned :class:`Authenticated`) ask for a new token: ``before`` seconds ahead of
        the expiry (or half the remaining lifetime, when shorter), and how long the client
        then has to send a valid one: ``grace`` seconds, and at least until the expiry.
        Overrides the server's ``refresh_before`` (30) and ``refresh_grace`` (10).
        """
        self._check_open()
        # Checks what was given (a missing one stays the server's).
        TokenRefreshTiming(1.0 if before is None else before, 1.0 if grace is None else grace)
        self.refresh_before = before
        self.refresh_grace = grace
        return self

    def select_subprotocol(self, offered: Iterable[str]) -> str | None:
        """The subprotocol to answer a client that offered ``offered`` (or ``None``)."""
        return choose_subprotocol(self.subprotocol_choices, offered)

    def build(self) -> WebSocketRoute[UserT, ServerT, ClientT_co]:
        """Check the route and freeze it; returns the route.

        A server builds its routes when it starts serving them; calling ``build()``
        yourself makes a later change fail at once rather than when serving starts.

        Raises :class:`TypeError` when a handler's annotations name a message the route
        does not declare in :meth:`server_messages`, or when :meth:`client_messages`
        leaves out a class a handler is registered for.
        """
        if not self.built:
            self._check_messages()
        self.built = True
        return self

    def _check_messages(self) -> None:
        declared = self.server_message_types
        for wire, spec in self.handlers.items():
            check_handler_messages(spec.handler, declared, f"the handler for {wire!r}", self.path)
        for what, hook in (
            ("on_connect", self.connect_handler),
            ("on_close", self.close_handler),
            ("on_error", self.error_handler),
            ("on_binary", self.binary_handler),
            ("on_text", self.text_handler),
        ):
            if hook is not None:
                check_handler_messages(hook, declared, f"the {what} hook", self.path)
        listed = self.client_message_types
        if listed:
            for wire, spec in self.handlers.items():
                if spec.schema not in listed:
                    raise TypeError(
                        f"route {self.path!r} handles {wire!r} ({spec.schema.__qualname__}) "
                        "but .client_messages() does not list it: add it there (the typed "
                        "clients and the generated types follow that list)"
                    )

    def _check_open(self) -> None:
        if self.built:
            raise RuntimeError(
                f"route {self.path!r} is already built (a server is serving it): declare "
                "its handlers and settings before the server starts"
            )


def resolve_route(route: WebSocketRoute[Any, Any], defaults: ServerDefaults) -> RouteSpec:
    """Freeze ``route`` and resolve it against a server's defaults, once."""
    route.build()
    handlers = dict(route.handlers)
    forbid = route.forbid_unknown_keys_setting
    if forbid if forbid is not None else defaults.forbid_unknown_keys:
        handlers = {
            name: attrs.evolve(
                spec, structure=structure_hook_for(spec.schema, forbid_unknown=True)
            )
            for name, spec in handlers.items()
        }
    return RouteSpec(
        path=route.path,
        pattern=route.pattern,
        handlers=types.MappingProxyType(handlers),
        on_connect=route.connect_handler,
        on_close=route.close_handler,
        on_error=route.error_handler,
        on_binary=route.binary_handler,
        on_text=route.text_handler,
        authenticate=route.authenticate_fn,
        authorize_subscribe=route.subscribe_check or defaults.authorize_subscribe,
        server_message_types=frozenset(route.server_message_types),
        origin_policy=route.origin_policy or defaults.origin_policy,
        subprotocols=route.subprotocol_choices,
        subprotocol_required=route.subprotocol_required,
        rate_limit=route.rate_limit_config or defaults.rate_limit,
        handler_timeout=route.handler_timeout_seconds or defaults.handler_timeout,
        heartbeat=resolve_heartbeat(
            route.heartbeat_config, defaults.heartbeat_interval, defaults.heartbeat_timeout
        ),
        options=defaults.options,
        token_refresh=TokenRefreshTiming(
            route.refresh_before or defaults.token_refresh.before,
            route.refresh_grace or defaults.token_refresh.grace,
        ),
    )


def create_websocket_route(
    path: str, *, name: str | None = None
) -> WebSocketRoute[None, Any, object]:
    """Start a WebSocket route at ``path`` (``/chat/:room`` or ``/chat/{room}``).

    ``name`` overrides the namespace name of generated client types.
    """
    # The caller's module, named in generated client types.
    module = sys._getframe(1).f_globals.get("__name__")  # pyright: ignore[reportPrivateUsage]
    return WebSocketRoute(path, name=name, module=module if isinstance(module, str) else None)
