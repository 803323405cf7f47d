"""The token refresh of a connection whose credentials expire: a task of its own that asks
the client for a new token before the expiry, has it checked, and moves the expiry on or
closes the connection with 3000.

On the wire (``_envelope.py`` writes and reads the envelopes)::

    server: {"type": "refresh", "id": "refresh-1"}
    client: {"type": "refresh", "id": "refresh-1", "data": {"token": "..."}}
    server: {"type": "ack", "id": "refresh-1"}          accepted: same user, later expiry

The ids are strings the server makes, so that they never look like the answer to a
request of the client's own (the typed clients number theirs). The dispatcher hands the
client's answer over (:meth:`TokenRefresh.take`) without waiting; the check (the route's
``authenticate`` function, which may do I/O) runs in this task, so that the connection's
messages go on meanwhile.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import trio

from .._auth import Reject, token_places
from .._containment import must_propagate
from .._envelope import Envelope, encode_ack, encode_envelope
from .._frames import Frame
from .._request import Request
from .._spec import RouteSpec, TokenRefreshTiming
from .._tokens import refresh_request, unwrap

__all__ = ["MAX_TOKEN_LENGTH", "TokenRefresh", "authenticate_token", "token_refresh"]

logger = logging.getLogger("trio_wsroutes")

MAX_TOKEN_LENGTH: Final = 16 * 1024
"""The longest token a refresh may carry (an upgrade request's head is at most 16 KiB)."""

Check = Callable[[str], Awaitable[tuple[Any, float | None] | None]]
"""``await check(token)``: the user and expiry the token gives, or ``None`` if refused."""


def _token_of(data: object) -> str | None:
    """The token of a refresh answer's ``data`` (``{"token": "..."}``), or ``None`` when it
    has none that could be one: a non-empty string, without control characters, at most
    :data:`MAX_TOKEN_LENGTH` characters."""
    if type(data) is not dict:
        return None
    token = cast("dict[str, object]", data).get("token")
    if type(token) is not str or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        return None
    return token if token.isprintable() else None


class TokenRefresh:
    """One connection's expiry and the exchange that moves it on."""

    __slots__ = (
        "_answered",
        "_asked",
        "_check",
        "_count",
        "_lifetime_from",
        "_same_user",
        "_timing",
        "_token",
        "expires_at",
    )

    def __init__(
        self,
        expires_at: float,
        timing: TokenRefreshTiming,
        check: Check,
        same_user: Callable[[Any], bool],
    ) -> None:
        self.expires_at: float = expires_at
        """When the connection's credentials expire (UNIX time)."""
        self._timing = timing
        self._check = check
        self._same_user = same_user
        self._count = 0
        self._asked: str | None = None  # the id of the request waiting for its answer
        self._answered = trio.Event()
        self._token: str | None = None
        self._lifetime_from = time.time()  # when the current credentials were accepted

    def take(self, envelope: Envelope) -> str | None:
        """The client's ``refresh`` envelope (from the dispatcher, never waiting): ``None``
        when it answers the request waiting, else what is wrong with it (sent back as an
        error; the connection goes on)."""
        if self._asked is None or envelope.id != self._asked:
            return "No token refresh was requested with this id"
        self._asked = None
        self._token = _token_of(envelope.data)  # none that could be a token: refused
        self._answered.set()
        return None

    def _ask_at(self) -> float:
        """Seconds from now until the client is asked for a new token."""
        now = time.time()
        lifetime = max(0.0, self.expires_at - self._lifetime_from)
        lead = min(self._timing.before, lifetime / 2)
        return max(0.0, self.expires_at - lead - now)

    async def run(
        self,
        send: Callable[[Frame], None],
        close: Callable[[str], None],
        set_user: Callable[[Any], None],
    ) -> None:
        """The connection's refresh task: ``send`` a frame past its limits (tiny),
        ``close`` it with 3000 and a reason, ``set_user`` (``ctx.user``) after a refresh.
        Returns once the credentials no longer expire, or after closing."""
        while True:
            await trio.sleep(self._ask_at())
            self._count += 1
            request_id = self._asked = f"refresh-{self._count}"
            self._answered = trio.Event()
            send(Frame(encode_envelope("refresh", None, request_id)))
            asked = time.time()
            # At least until the expiry, and a grace period after the request: never
            # more than the grace period past the expiry.
            wait = max(self.expires_at, asked + self._timing.grace) - asked
            outcome: tuple[Any, float | None] | None = None
            with trio.move_on_after(wait):
                await self._answered.wait()
                token = self._token
                self._token = None
                if token is not None:
                    outcome = await self._check(token)
                if outcome is None:
                    close("token refused")
                    return
            if outcome is None:
                self._asked = None
                close("token expired")
                return
            user, expires = outcome
            if not self._same_user(user) or (expires is not None and expires <= self.expires_at):
                # Another user, or a token that does not expire later: the old one again
                # (a function reading it from the upgrade request) or a stale one.
                close("token refused")
                return
            set_user(user)
            send(encode_ack(request_id))
            if expires is None or not math.isfinite(expires):
                return  # no longer expires
            self.expires_at = expires
            self._lifetime_from = time.time()


async def authenticate_token(
    authenticate: Callable[[Request], Any], request: Request, token: str
) -> tuple[Any, float | None] | None:
    """Check ``token`` with the route's ``authenticate`` function, given the upgrade
    ``request`` with the token in its place (:func:`refresh_request`): the user and their
    expiry, or ``None`` when refused (``None`` returned, :class:`Reject` or any exception
    raised, an expiry already past). Exceptions are logged, never raised."""
    view = refresh_request(request, token, token_places(authenticate))
    try:
        result = authenticate(view)
        if inspect.isawaitable(result):
            result = await result
        user, expires = unwrap(result)
    except Reject:
        return None
    except BaseException as exc:
        if must_propagate(exc):
            raise
        logger.error("authenticate failed on a token refresh of %s", request.path, exc_info=exc)  # noqa: TRY400
        return None
    if user is None or (expires is not None and expires <= time.time()):
        return None
    return user, expires


def token_refresh(
    spec: RouteSpec,
    request: Request,
    user: Any,
    expires_at: float,
    user_id: Callable[[Any], str | int | None],
) -> TokenRefresh:
    """The refresh of a connection admitted with credentials that expire at
    ``expires_at``: new tokens are checked with the route's ``authenticate`` on the
    upgrade ``request``, and must give a user with ``user``'s id (by ``user_id``; an equal
    user when it has none)."""
    authenticate = spec.authenticate
    assert authenticate is not None
    known = user_id(user)

    async def check(token: str) -> tuple[Any, float | None] | None:
        return await authenticate_token(authenticate, request, token)

    def same_user(new: Any) -> bool:
        if known is None:
            return bool(new == user)
        try:
            return user_id(new) == known
        except Exception:
            return False  # the user_id function failed on it: not known to be the same

    return TokenRefresh(expires_at, spec.token_refresh, check, same_user)
