"""Transports in memory, for the engine's unit tests: what the engine sends is recorded,
what it receives is fed by the test. :class:`FakeTransport` sees frames (as the native
transport over TLS does); :class:`FakeNonBlockingTransport` also writes without waiting
(as over plain TCP), with a socket whose room the test sets."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from trio_wsroutes._frames import Frame
from trio_wsroutes._transports import Disconnect, NeedsFlush, TransportClosed, Violation


class FakeTransport:
    """Implements ``Transport`` and ``FrameTransport`` in memory."""

    def __init__(self) -> None:
        self.pending = 0
        self.written: list[Frame] = []
        """Frames handed to the network, in order (``send`` and the non-blocking path)."""
        self.writes = 0
        """Calls that wrote (one per ``send``, one per ``try_send(_many)_nowait``)."""
        self.pings = 0
        self.closed_with: tuple[int, str] | None = None
        self.broken = False
        self._incoming_send, self._incoming = trio.open_memory_channel[
            str | bytes | Violation | Disconnect | NeedsFlush
        ](100)
        self._unblocked = trio.Event()
        self._unblocked.set()
        self.max_message_size: int | None = None

    # -- what tests do ---------------------------------------------------------------

    async def feed(self, item: str | bytes | Violation | Disconnect | NeedsFlush) -> None:
        await self._incoming_send.send(item)

    def block(self) -> None:
        """``send`` waits (a client that does not read) until :meth:`unblock`."""
        self._unblocked = trio.Event()

    def unblock(self) -> None:
        self._unblocked.set()

    # -- the Transport interface -----------------------------------------------------

    @property
    def last_activity(self) -> float | None:
        return None

    async def accept(self, subprotocol: str | None, headers: Sequence[tuple[str, str]]) -> None:
        await trio.lowlevel.checkpoint()

    async def deny(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        await trio.lowlevel.checkpoint()

    def peer_closed(self) -> bool:
        return self.broken

    def limit_message_size(self, limit: int) -> bool:
        self.max_message_size = limit
        return False

    async def receive(self) -> str | bytes | Violation | Disconnect | NeedsFlush:
        return await self._incoming.receive()

    async def send(self, frame: Frame) -> None:
        if self.broken:
            await trio.lowlevel.checkpoint()
            raise TransportClosed("gone")
        self.pending = frame.size
        try:
            await self._unblocked.wait()
        finally:
            self.pending = 0
        self.written.append(frame)
        self.writes += 1

    async def flush(self) -> None:
        await self._unblocked.wait()
        self.pending = 0

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()
        self.pings += 1

    async def close(self, code: int, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise TransportClosed("gone")
        self.closed_with = (code, reason)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class FakeNonBlockingTransport(FakeTransport):
    """A :class:`FakeTransport` that is also a ``NonBlockingWriter``."""

    def __init__(self, *, room: int = 1 << 30) -> None:
        super().__init__()
        self.room = room
        """Bytes the "socket" takes without waiting."""

    def try_send_nowait(self, frame: Frame) -> bool:
        return self.try_send_many_nowait([frame])

    def try_send_many_nowait(self, frames: Sequence[Frame]) -> bool:
        if self.pending or self.broken:
            return False
        size = sum(frame.size for frame in frames)
        if size > self.room:
            self.pending = size - self.room  # the rest waits for the writer's flush
        self.written.extend(frames)
        self.writes += 1
        return True
