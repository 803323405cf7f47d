"""The transport interface the connection engine is written against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from .._messages import Frame

__all__ = ["Disconnect", "Transport", "TransportClosed"]


@attrs.frozen
class Disconnect:
    """The peer closed the connection (or it was lost: code 1006)."""

    code: int
    reason: str = ""


class TransportClosed(Exception):
    """Raised by a transport's send or close when the connection is already gone."""


class Transport(Protocol):
    """One WebSocket connection at the network level, before and after the upgrade.

    The engine calls ``accept`` or ``deny`` once, then ``receive`` from one task and
    ``send`` and ``close`` from another. ``receive`` returns ``str`` for a text frame,
    ``bytes`` for a binary frame, and :class:`Disconnect` once the connection has ended.
    """

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        """Complete the upgrade with HTTP 101."""
        ...

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        """Refuse the upgrade with a real HTTP response."""
        ...

    async def receive(self) -> str | bytes | Disconnect:
        """The next message from the peer."""
        ...

    async def send(self, frame: Frame) -> None:
        """Send one frame; raise :class:`TransportClosed` if the connection is gone."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and ``reason``."""
        ...
