"""Context: what a handler knows about its connection."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Generic, TypeVar

from ._request import Request

__all__ = ["Context"]

UserT_co = TypeVar("UserT_co", covariant=True)


class Context(Generic[UserT_co]):
    """Per-connection context, passed to every handler of a connection.

    ``Context[User]`` types ``user`` as what the route's ``authenticate`` function
    returned; a route without ``authenticate`` has ``Context[None]``.
    """

    __slots__ = ("_data", "_user", "connected_at", "connection_id", "params", "request")

    def __init__(
        self,
        *,
        connection_id: str,
        connected_at: datetime,
        user: UserT_co,
        request: Request,
    ) -> None:
        self.connection_id: str = connection_id
        """A unique id for this connection (also ``ws.id``)."""
        self.connected_at: datetime = connected_at
        """When the upgrade was accepted (UTC, timezone-aware)."""
        self._user = user
        self.request: Request = request
        """The upgrade request: headers, query, cookies, client address, origin."""
        self.params: Mapping[str, str] = request.path_params
        """The route's path parameters (``/chat/:room`` gives ``params["room"]``)."""
        self._data: dict[str, object] | None = None  # made when first used

    @property
    def data(self) -> dict[str, object]:
        """Free per-connection state for your handlers, dropped when the connection ends."""
        data = self._data
        if data is None:
            data = self._data = {}
        return data

    @data.setter
    def data(self, value: dict[str, object]) -> None:
        self._data = value

    @property
    def user(self) -> UserT_co:
        """What the route's ``authenticate`` function returned (``None`` without one)."""
        return self._user

    def __repr__(self) -> str:
        return f"<Context {self.connection_id} user={self._user!r} params={dict(self.params)!r}>"
