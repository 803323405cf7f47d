"""The transport interface the connection engine is written against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from .._messages import Frame

__all__ = ["Disconnect", "Transport", "TransportClosed", "Violation"]


@attrs.frozen
class Disconnect:
    """The connection ended: the peer closed it with ``code`` and ``reason``, it was
    lost (1006), or the transport failed it (1007 invalid UTF-8, 1002 protocol error,
    1011 heartbeat timeout)."""

    code: int
    reason: str = ""


@attrs.frozen
class Violation:
    """The peer broke a limit the transport enforces before buffering the message (a
    frame over ``max_payload_length``: 1009). The transport has stopped reading; the
    engine answers the messages that came before, then closes with ``code``."""

    code: int
    reason: str = ""


class TransportClosed(Exception):
    """Raised by a transport's send or close when the connection is already gone."""


class Transport(Protocol):
    """One WebSocket connection at the network level, before and after the upgrade.

    The engine calls ``accept`` or ``deny`` once, then ``receive`` from one task and
    ``send`` and ``close`` from another. ``receive`` returns ``str`` for a text message,
    ``bytes`` for a binary message, a :class:`Violation`, or a :class:`Disconnect` once
    the connection has ended.

    ``send`` may be cancelled: a transport either hands the whole frame to the network
    or none of it, so that a close frame can follow a cancelled send.
    """

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        """Complete the upgrade with HTTP 101."""
        ...

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        """Refuse the upgrade with a real HTTP response."""
        ...

    async def receive(self) -> str | bytes | Violation | Disconnect:
        """The next message from the peer."""
        ...

    async def send(self, frame: Frame) -> None:
        """Send one frame; raise :class:`TransportClosed` if the connection is gone."""
        ...

    def try_send_nowait(self, frame: Frame) -> bool:
        """Hand ``frame`` to the network without waiting, if the transport can.

        The fast path of fan-out: the engine calls it only when nothing is queued for
        this connection. A transport that returns ``True`` has taken the frame (what the
        socket did not accept at once it sends before anything else); ``False`` means
        the engine queues the frame for ``send`` as usual. Transports that cannot write
        without waiting (ASGI) always return ``False``.
        """
        ...

    @property
    def last_activity(self) -> float | None:
        """``trio.current_time()`` of the last frame received from the peer, control
        frames (pongs) included, or ``None`` if the transport cannot see them."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and ``reason``."""
        ...
