"""An in-memory connection: two byte streams joined back to back, each direction with a
bounded buffer like a socket's.

:mod:`trio_wsroutes.testing` runs the native transport over it: the real handshake and
frames, and backpressure when one side stops reading (the writer's ``send_all`` waits
once the buffer holds :data:`CAPACITY` bytes, as a full TCP window makes it wait). Each
end is a :class:`~trio_wsroutes._transports._streams.NonBlockingStream`, so the native
transport's fast path and exact cancellation work over it as over TCP.
"""

from __future__ import annotations

from typing import Final

import trio

from ._streams import NonBlockingStream

__all__ = ["CAPACITY", "MemoryStream", "memory_stream_pair"]

CAPACITY: Final = 64 * 1024
"""Bytes each direction of an in-memory connection holds, like a socket buffer."""


class _Pipe:
    """One direction of an in-memory connection, with a bounded buffer."""

    def __init__(self, capacity: int) -> None:
        self.buffer = bytearray()
        self.capacity = capacity
        self.total_read = 0
        self.eof = False
        self.broken = False
        self._readable = trio.lowlevel.ParkingLot()
        self._writable = trio.lowlevel.ParkingLot()

    def write(self, data: bytes | memoryview) -> int:
        if self.broken or self.eof:
            raise trio.BrokenResourceError("the other end is closed")
        taken = min(len(data), self.capacity - len(self.buffer))
        if taken:
            self.buffer += data[:taken]
            self._readable.unpark_all()
        return taken

    def read(self, max_bytes: int) -> bytes | None:
        if self.buffer:
            chunk = bytes(self.buffer[:max_bytes])
            del self.buffer[:max_bytes]
            self.total_read += len(chunk)
            self._writable.unpark_all()
            return chunk
        if self.eof or self.broken:
            return b""
        return None

    async def wait_readable(self) -> None:
        if self.buffer or self.eof or self.broken:
            await trio.lowlevel.checkpoint()  # an async call always checkpoints
        while not self.buffer and not self.eof and not self.broken:
            await self._readable.park()

    async def wait_writable(self) -> None:
        if len(self.buffer) < self.capacity or self.broken or self.eof:
            await trio.lowlevel.checkpoint()  # an async call always checkpoints
        while len(self.buffer) >= self.capacity and not self.broken and not self.eof:
            await self._writable.park()
        if self.broken:
            raise trio.BrokenResourceError("the other end is closed")

    def close_write(self) -> None:
        self.eof = True
        self._readable.unpark_all()
        self._writable.unpark_all()  # a writer still waiting finds its end closed

    def break_(self) -> None:
        self.broken = True
        self._readable.unpark_all()
        self._writable.unpark_all()


class MemoryStream(NonBlockingStream):
    """One end of an in-memory connection: reads one direction, writes the other."""

    __slots__ = ("_closed", "_incoming", "_outgoing", "_peer", "_write_shut")

    def __init__(self, incoming: _Pipe, outgoing: _Pipe, peer: tuple[str, int] | None) -> None:
        super().__init__()
        self._incoming = incoming
        self._outgoing = outgoing
        self._peer = peer
        self._closed = False
        self._write_shut = False

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def read_by_peer(self) -> int:
        """Bytes written to this end that the other end has read so far."""
        return self._outgoing.total_read

    def send_nowait(self, data: bytes | memoryview) -> int:
        if self._closed or self._write_shut:
            raise trio.ClosedResourceError("this end is closed for sending")
        return self._outgoing.write(data)

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        return self._incoming.read(max_bytes)

    async def wait_readable(self) -> None:
        await self._incoming.wait_readable()

    async def wait_writable(self) -> None:
        await self._outgoing.wait_writable()

    def shutdown_write(self) -> None:
        self._write_shut = True
        self._outgoing.close_write()

    def peer(self) -> tuple[str, int] | None:
        return self._peer

    def peer_closed(self) -> bool:
        return self._incoming.eof or self._incoming.broken

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint()
        self.shutdown_write()

    async def aclose(self) -> None:
        self._closed = True
        self._outgoing.close_write()
        self._incoming.break_()
        await trio.lowlevel.checkpoint()


def memory_stream_pair(
    peer: tuple[str, int], capacity: int = CAPACITY
) -> tuple[MemoryStream, MemoryStream]:
    """A new in-memory connection: ``(client end, server end)``. The server end reports
    ``peer`` as the client's address; each direction holds ``capacity`` bytes."""
    to_server, to_client = _Pipe(capacity), _Pipe(capacity)
    return MemoryStream(to_client, to_server, None), MemoryStream(to_server, to_client, peer)
