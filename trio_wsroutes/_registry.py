"""The registry of open connections, for code that needs to find or filter them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import trio

from ._access_log import UserId, default_user_id
from ._engine import Connection
from ._frames import Frame
from ._messages import encode_message

__all__ = ["ConnectionRegistry"]

logger = logging.getLogger("trio_wsroutes")


class ConnectionRegistry:
    """Every open connection of a server (``server.registry``).

    Iterating, :meth:`all` and :meth:`filter` return snapshots, so it is safe to send
    while looping. ``broadcast`` encodes a message once for every recipient and never
    waits on a slow client (one over its backpressure limit is evicted with 1013).
    """

    def __init__(self, *, user_id: UserId | None = None) -> None:
        self._connections: dict[str, Connection[Any]] = {}
        self._user_id: UserId = user_id if user_id is not None else default_user_id
        # User id -> that user's connections (by connection id); one entry per open
        # connection with a user id, so bounded by the connections.
        self._by_user_id: dict[str | int, dict[str, Connection[Any]]] = {}
        self._user_ids: dict[str, str | int] = {}  # connection id -> its user id
        self._emptied = trio.Event()
        self._emptied.set()

    def add(self, connection: Connection[Any]) -> None:
        """Register an accepted connection (the server does this)."""
        self._connections[connection.id] = connection
        key = self._key(connection)
        if key is not None:
            self._user_ids[connection.id] = key
            self._by_user_id.setdefault(key, {})[connection.id] = connection
        if self._emptied.is_set():
            self._emptied = trio.Event()

    def discard(self, connection: Connection[Any]) -> None:
        """Forget a connection (the server does this when it closes)."""
        if self._connections.get(connection.id) is connection:
            del self._connections[connection.id]
            key = self._user_ids.pop(connection.id, None)
            if key is not None:
                mine = self._by_user_id.get(key)
                if mine is not None and mine.pop(connection.id, None) is not None and not mine:
                    del self._by_user_id[key]
            if not self._connections:
                self._emptied.set()

    def _key(self, connection: Connection[Any]) -> str | int | None:
        # Read once per connection, when it is added: a token refresh may replace
        # ctx.user, but only with a user that has the same id.
        try:
            key = self._user_id(connection.context.user)
        except Exception:
            logger.exception("the user_id function failed on %s", connection.id)
            return None
        return key if isinstance(key, str | int) and not isinstance(key, bool) else None

    def by_user_id(self, user_id: str | int) -> list[Connection[Any]]:
        """The open connections of the user with this id (what the server's ``user_id``
        option gives for their ``ctx.user``; by default ``user.id``, or the user itself
        when it is a string or an integer)."""
        return list(self._by_user_id.get(user_id, {}).values())

    async def wait_empty(self) -> None:
        """Wait until no connection is open."""
        await self._emptied.wait()

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[Connection[Any]]:
        return iter(list(self._connections.values()))

    def __contains__(self, connection: object) -> bool:
        return isinstance(connection, Connection) and (
            self._connections.get(connection.id) is connection
        )

    def all(self) -> list[Connection[Any]]:
        """Every open connection."""
        return list(self._connections.values())

    def get(self, connection_id: str) -> Connection[Any] | None:
        """The connection with this id, if it is open."""
        return self._connections.get(connection_id)

    def filter(self, predicate: Callable[[Connection[Any]], bool]) -> list[Connection[Any]]:
        """Connections for which ``predicate(ws)`` is true.

        A predicate that raises for one connection excludes that connection (and is
        logged); it does not stop the filter.
        """
        selected: list[Connection[Any]] = []
        for connection in list(self._connections.values()):
            try:
                keep = predicate(connection)
            except Exception:
                logger.exception("registry filter predicate failed on %s", connection.id)
                continue
            if keep:
                selected.append(connection)
        return selected

    def by_user(self, user: object) -> list[Connection[Any]]:
        """Connections whose ``ctx.user`` equals ``user`` (every tab of one user)."""
        return [c for c in self._connections.values() if c.context.user == user]

    def broadcast(
        self, message: object, *, where: Callable[[Connection[Any]], bool] | None = None
    ) -> int:
        """Send ``message`` (a ``@message`` instance) to every connection, or to those
        matching ``where``. Returns how many it was queued for."""
        return self._fan_out(encode_message(message), where)

    def broadcast_binary(
        self, data: bytes, *, where: Callable[[Connection[Any]], bool] | None = None
    ) -> int:
        """Send a binary frame to every connection (or those matching ``where``)."""
        return self._fan_out(Frame(bytes(data), binary=True), where)

    def _fan_out(self, frame: Frame, where: Callable[[Connection[Any]], bool] | None) -> int:
        targets = self.filter(where) if where is not None else list(self._connections.values())
        return sum(1 for connection in targets if connection.deliver(frame))
