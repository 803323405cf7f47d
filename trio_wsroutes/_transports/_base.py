"""The transport interface the connection engine is written against.

A transport turns bytes on a ``trio.abc.Stream`` (or ASGI events) into messages and back;
it knows nothing of routes, brokers or envelopes. :class:`Transport` is what every
transport does; two optional parts add what only some can: :class:`FrameTransport` (it
sees the WebSocket frames: pings, pongs, sizes before the payload) and
:class:`NonBlockingWriter` (it writes without waiting: the fan-out fast path). The engine
looks at which a transport implements once, when a connection starts. It drives the
transport from three tasks, and each method belongs to exactly one of them:

* the **reader** calls :meth:`Transport.receive`;
* the **writer** calls :meth:`~Transport.send`, :meth:`~FrameTransport.flush`,
  :meth:`~FrameTransport.ping` and :meth:`~Transport.close`: the only calls that wait on
  the network;
* any task may call :meth:`~NonBlockingWriter.try_send_nowait`, which never waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

import attrs

from .._frames import Frame

__all__ = [
    "NEEDS_FLUSH",
    "Disconnect",
    "FrameTransport",
    "NeedsFlush",
    "NonBlockingWriter",
    "Transport",
    "TransportClosed",
    "Violation",
]


@attrs.frozen
class Disconnect:
    """The connection ended: the peer closed it with ``code`` and ``reason``, it was
    lost (1006), or the transport failed it (1007 invalid UTF-8, 1002 protocol error)."""

    code: int
    reason: str = ""


@attrs.frozen
class Violation:
    """The peer broke a limit the transport enforces before buffering the message (a
    frame over the message size limit: 1009). The transport has stopped reading; the
    engine answers the messages that came before, then closes with ``code``."""

    code: int
    reason: str = ""


class NeedsFlush:
    """Returned by :meth:`Transport.receive` when reading produced control frames to
    write (a pong, the echo of a close frame) that could not go out at once: the engine
    has its writer call :meth:`Transport.flush`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEEDS_FLUSH"


NEEDS_FLUSH: Final = NeedsFlush()


class TransportClosed(Exception):
    """Raised by a transport's send or close when the connection is already gone."""


class Transport(Protocol):
    """One WebSocket connection at the network level, after the upgrade request: what
    every transport does.

    The server calls ``accept`` or ``deny`` once; then the engine runs the connection: its
    reader calls :meth:`receive`, its writer :meth:`send` and :meth:`close`. ``send`` may
    be cancelled: a transport either keeps the unwritten rest of the frame (and writes it
    before anything else) or, where the stream cannot say how much was written, stops all
    output (the connection then ends without a close frame). A transport that sees the
    WebSocket frames itself also implements :class:`FrameTransport`; one that can write
    without waiting, :class:`NonBlockingWriter`.
    """

    pending: int
    """Bytes taken for this connection and not yet written to the network (a frame
    being written, the rest of one the socket did not take at once). The engine adds
    it to its own queue for ``buffered_amount`` and the backpressure limit."""

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        """Complete the upgrade with HTTP 101."""
        ...

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        """Refuse the upgrade with a real HTTP response."""
        ...

    async def receive(self) -> str | bytes | Violation | Disconnect | NeedsFlush:
        """The next message from the peer (``str`` text, ``bytes`` binary), a
        :class:`Violation`, :data:`NEEDS_FLUSH` (frame transports), or a
        :class:`Disconnect` once the connection has ended."""
        ...

    async def send(self, frame: Frame) -> None:
        """Write one frame; raise :class:`TransportClosed` if the connection is gone."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and ``reason`` (after what is pending)."""
        ...

    async def aclose(self) -> None:
        """After the engine: finish the closing handshake within the transport's grace
        period and release the network resources. The server releases the connection's
        slot in its limits only after this returns."""
        ...


@runtime_checkable
class FrameTransport(Transport, Protocol):
    """A transport that sees the WebSocket frames itself (the native one), so that the
    engine can ping, hear pongs, refuse a message from its header, and notice a peer that
    left while it is not reading. Through ASGI the server hides all that; the engine then
    relies on the ASGI server's own pings and checks message sizes itself."""

    @property
    def last_activity(self) -> float | None:
        """``trio.current_time()`` of the last frame received from the peer, control
        frames (pongs) included."""
        ...

    def peer_closed(self) -> bool:
        """Without reading: whether the peer has closed or reset the connection, where
        the transport can tell (``False`` when it cannot). The engine asks while its
        reader is held up by slow handlers."""
        ...

    def limit_message_size(self, limit: int) -> bool:
        """Refuse messages over ``limit`` bytes before buffering them (``receive`` then
        reports a :class:`Violation`); ``False`` if it cannot, and the engine checks each
        message itself."""
        ...

    async def ping(self) -> None:
        """Send a WebSocket ping."""
        ...

    async def flush(self) -> None:
        """Write what :attr:`pending` holds and any control frames owed (after
        :data:`NEEDS_FLUSH`)."""
        ...


@runtime_checkable
class NonBlockingWriter(Protocol):
    """A transport that can hand frames to the network without waiting (the native one
    over plain TCP): the fan-out fast path. The engine then holds published frames
    briefly, to write several in one call.

    ``True`` means the transport took the frames; what the socket did not accept at once
    is counted in ``pending``, and the engine has its writer call ``flush``. ``False``
    means the engine queues them for ``send``. The engine calls these only when nothing
    is queued for the connection, from any task.
    """

    def try_send_nowait(self, frame: Frame) -> bool:
        """Hand ``frame`` to the network without waiting, if nothing is waiting."""
        ...

    def try_send_many_nowait(self, frames: Sequence[Frame]) -> bool:
        """:meth:`try_send_nowait` for several frames at once, in one write."""
        ...
