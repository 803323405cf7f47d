"""Authentication on the upgrade: ``Reject`` and the helpers that read a token from a
request (header, query parameter or cookie)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import attrs

from ._request import Request, is_token

__all__ = [
    "Reject",
    "RequestInfo",
    "TokenPlaces",
    "create_token_auth",
    "extract_bearer_token",
    "extract_cookie_token",
    "extract_query_token",
    "extract_request_info",
    "extract_token",
    "no_auth",
]

U = TypeVar("U")


class Reject(Exception):
    """Raise from an ``authenticate`` function to deny the upgrade with ``status``.

    The client gets a real HTTP response with the JSON body
    ``{"message": message, "code": code}``::

        raise Reject(403, "Banned", "BANNED")

    ``headers`` are added to the response. A header name that is not an HTTP token, or a
    value with a control character (CR, LF, NUL, ...), is a :class:`ValueError` here,
    where the code that built it is, rather than a broken response later. ``str()`` of a
    ``Reject`` (what a traceback in a log shows) has control characters escaped, so a
    message built from the request cannot forge log lines; ``message`` itself is sent as
    it is, inside the JSON body.
    """

    def __init__(
        self,
        status: int = 403,
        message: str = "Forbidden",
        code: str = "FORBIDDEN",
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError("Reject status must be an HTTP error status (400-599)")
        checked = dict(headers or {})
        for name, value in checked.items():
            if not is_token(name):
                raise ValueError(f"Reject header name {name!r} is not an HTTP token")
            if not _is_field_value(value):
                raise ValueError(
                    f"Reject header {name!r}: the value {value!r} has a control character "
                    "or a character outside Latin-1"
                )
        super().__init__(escape_controls(message))
        self.status: int = status
        self.message: str = message
        self.code: str = code
        self.headers: dict[str, str] = checked


def _is_field_value(value: object) -> bool:
    # RFC 9110 field-value: visible characters, spaces, tabs and obs-text (Latin-1, as
    # headers are encoded); no CR, LF, NUL or other controls.
    return isinstance(value, str) and all(
        c == "\t" or " " <= c <= "~" or "\xa0" <= c <= "\xff" for c in value
    )


def escape_controls(text: str) -> str:
    """``text`` with control characters escaped (``\\r``, ``\\n``, ``\\x00``): safe to
    put on one log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _escape(char: str) -> str:
    escaped = repr(char)[1:-1]
    return escaped if escaped != char else f"\\x{ord(char):02x}"


def extract_bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def extract_query_token(request: Request, name: str = "token") -> str | None:
    """The ``?token=`` query parameter (or the one named ``name``), or ``None``."""
    value = request.query.get(name)
    return value or None


def extract_cookie_token(request: Request, name: str = "token") -> str | None:
    """The cookie named ``name``, or ``None``.

    Browsers cannot set headers on a WebSocket, but they send the page's cookies.
    """
    value = request.cookies.get(name)
    return value or None


def extract_token(
    request: Request,
    *,
    check_header: bool = True,
    check_query: bool = True,
    query_param_name: str = "token",
    cookie_name: str | None = None,
) -> str | None:
    """The first token found: bearer header, then query parameter, then cookie."""
    if check_header:
        token = extract_bearer_token(request)
        if token:
            return token
    if check_query:
        token = extract_query_token(request, query_param_name)
        if token:
            return token
    if cookie_name is not None:
        return extract_cookie_token(request, cookie_name)
    return None


@overload
def create_token_auth(
    verify: Callable[[str], Awaitable[U | None]],
    *,
    check_header: bool = ...,
    check_query: bool = ...,
    query_param_name: str = ...,
    cookie_name: str | None = ...,
) -> Callable[[Request], Awaitable[U | None]]: ...


@overload
def create_token_auth(
    verify: Callable[[str], U | None],
    *,
    check_header: bool = ...,
    check_query: bool = ...,
    query_param_name: str = ...,
    cookie_name: str | None = ...,
) -> Callable[[Request], Awaitable[U | None]]: ...


def create_token_auth(
    verify: Callable[[str], Any],
    *,
    check_header: bool = True,
    check_query: bool = True,
    query_param_name: str = "token",
    cookie_name: str | None = None,
) -> Callable[[Request], Awaitable[Any]]:
    """An ``authenticate`` function from a token verifier.

    ``verify(token)`` (sync or async) returns the user or ``None``. No token found means
    ``None`` (HTTP 401). With ``cookie_name``, a browser's cookie authenticates too, and
    the route then refuses upgrades from other origins unless it (or the server) has an
    origin policy (``allowed_origins``): see the authentication guide.
    """

    async def authenticate(request: Request) -> Any:
        token = extract_token(
            request,
            check_header=check_header,
            check_query=check_query,
            query_param_name=query_param_name,
            cookie_name=cookie_name,
        )
        if token is None:
            return None
        result: Any = verify(token)
        if inspect.isawaitable(result):
            result = await result
        return result

    # Where the token is read, known before any request: the typed clients send it
    # there, type generation describes it, and the server warns at startup about a
    # cookie route without an origin policy.
    places = TokenPlaces(
        header=check_header, query=query_param_name if check_query else None, cookie=cookie_name
    )
    authenticate.__trio_wsroutes_token__ = places  # type: ignore[attr-defined]
    return authenticate


@attrs.frozen
class TokenPlaces:
    """Where an ``authenticate`` made by :func:`create_token_auth` reads the token."""

    header: bool
    """``Authorization: Bearer <token>``."""
    query: str | None
    """The query parameter, if it reads one."""
    cookie: str | None
    """The cookie, if it reads one."""


def token_places(authenticate: object) -> TokenPlaces | None:
    """Where ``authenticate`` reads a token, if :func:`create_token_auth` made it."""
    places = getattr(authenticate, "__trio_wsroutes_token__", None)
    return places if isinstance(places, TokenPlaces) else None


@attrs.frozen
class RequestInfo:
    """Who is on the other end, as far as the request tells."""

    ip: str | None
    origin: str | None
    user_agent: str | None


def extract_request_info() -> Callable[[Request], RequestInfo]:
    """An ``authenticate`` function for public routes: ``ctx.user`` is a
    :class:`RequestInfo` (ip, origin, user agent)."""

    def authenticate(request: Request) -> RequestInfo:
        return RequestInfo(
            ip=request.client[0] if request.client else None,
            origin=request.origin,
            user_agent=request.user_agent,
        )

    return authenticate


def no_auth(request: Request) -> RequestInfo:
    """An ``authenticate`` function that lets everyone in (``ctx.user`` is a
    :class:`RequestInfo`); states that a route is public on purpose."""
    return extract_request_info()(request)
