"""Tokens that expire: :class:`Authenticated`, what an ``authenticate`` function returns to
say when its user's credentials end, and how a new token is checked on a live connection.

Before the expiry the server asks the client for a new token (``{"type": "refresh", "id":
...}``; see ``_engine/refresh.py``); the client answers with it, and the server runs the
route's own ``authenticate`` function on the upgrade request *as if it had carried the new
token* (:func:`refresh_request`): the same function checks the first token and every new
one.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Generic, TypeVar, cast
from urllib.parse import parse_qsl, urlencode

import attrs

from ._auth import TokenPlaces
from ._request import Headers, Request, parse_cookies

__all__ = [
    "Authenticated",
    "expiry_timestamp",
    "refresh_request",
    "unwrap",
]

U = TypeVar("U")


def _check_expiry(instance: Any, attribute: Any, value: float | datetime | None) -> None:
    if value is not None:
        expiry_timestamp(value)


@attrs.frozen
class Authenticated(Generic[U]):
    """What an ``authenticate`` function returns for a user whose credentials expire::

        async def verify(token: str) -> Authenticated[User] | None:
            claims = decode_and_check(token)          # your JWT library, say
            if claims is None:
                return None
            return Authenticated(User(claims["sub"]), expires_at=claims["exp"])

        route.authenticate(create_token_auth(verify))

    ``ctx.user`` is ``user`` (not this wrapper). Before ``expires_at`` the server asks the
    client for a new token over the open connection (the ``refresh`` exchange: see the
    authentication guide) and checks it with the same ``authenticate`` function; a valid
    one for the same user moves the expiry on, without a reconnection. A connection that
    gets none in time is closed with 3000 (:attr:`CloseCode.UNAUTHORIZED
    <trio_wsroutes.CloseCode.UNAUTHORIZED>`). An upgrade whose credentials have expired
    already is denied (401 ``UNAUTHORIZED``).
    """

    user: U
    """The user: what ``ctx.user`` becomes."""
    expires_at: float | datetime | None = attrs.field(
        default=None, kw_only=True, validator=_check_expiry
    )
    """When the credentials expire: a UNIX timestamp in seconds, or a timezone-aware
    :class:`~datetime.datetime`; ``None`` for never (as a plain user)."""


def expiry_timestamp(value: object) -> float:
    """``value`` (a UNIX timestamp or an aware ``datetime``) as a UNIX timestamp; a clear
    :class:`TypeError` or :class:`ValueError` for anything else."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "expires_at needs a timezone-aware datetime (datetime.now(UTC) + ...): a "
                "naive one has no definite time"
            )
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"expires_at is a UNIX timestamp or an aware datetime, not {type(value).__name__}"
        )
    timestamp = float(value)
    if not math.isfinite(timestamp):
        raise ValueError("expires_at must be a finite timestamp")
    return timestamp


def unwrap(result: object) -> tuple[Any, float | None]:
    """What an ``authenticate`` function returned: the user, and when it expires
    (``None``: never)."""
    if isinstance(result, Authenticated):
        authenticated = cast("Authenticated[Any]", result)  # type: ignore[redundant-cast]
        expires = authenticated.expires_at
        return authenticated.user, None if expires is None else expiry_timestamp(expires)
    return result, None


def refresh_request(request: Request, token: str, places: TokenPlaces | None) -> Request:
    """The upgrade ``request`` as it would have been with ``token``: what the route's
    ``authenticate`` function is given to check a token sent on the open connection.

    The token goes where ``authenticate`` reads it (``places``, known for a function made
    by :func:`~trio_wsroutes.create_token_auth`), replacing what was there: each place it
    reads (the ``Authorization: Bearer`` header, its query parameter, its cookie); for
    any other function (``places`` is ``None``), the ``Authorization: Bearer`` header,
    where :func:`~trio_wsroutes.extract_token` and
    :func:`~trio_wsroutes.extract_bearer_token` look first. Everything else (path, client
    address, other headers, parameters and cookies) is the upgrade's.
    """
    headers = [(k, v) for k, v in request.headers.raw() if k != "authorization"]
    query_string = request.query_string
    if places is None or places.header:
        headers.append(("authorization", f"Bearer {token}"))
    if places is not None and places.query is not None:
        pairs = parse_qsl(query_string, keep_blank_values=True)
        pairs = [(k, v) for k, v in pairs if k != places.query] + [(places.query, token)]
        query_string = urlencode(pairs)
    if places is not None and places.cookie is not None:
        jar: dict[str, str] = {}
        for header in request.headers.get_all("cookie"):
            parse_cookies(header, jar)
        jar[places.cookie] = token
        headers = [(k, v) for k, v in headers if k != "cookie"]
        headers.append(("cookie", "; ".join(f"{k}={v}" for k, v in jar.items())))
    return Request(
        path=request.path,
        headers=Headers(headers),
        query_string=query_string,
        path_params=request.path_params,
        client=request.client,
        scheme=request.scheme,
        subprotocols=request.subprotocols,
        peer=request.peer,
    )
