"""Streams the native transport can also drive without waiting.

The native transport works over any ``trio.abc.Stream`` (``trio.SSLStream`` for TLS, an
in-memory pair in tests). A :class:`NonBlockingStream` additionally offers reads and
writes that never wait, which gives two things plain streams cannot: a publish can hand a
frame to many connections in one pass without a task switch each (the fan-out fast
path), and a send interrupted by an urgent close knows exactly how much was written, so
the close frame can still follow it. :class:`SocketStream` is the plain-TCP one; the
in-memory pair of ``_memory.py`` (which :mod:`trio_wsroutes.testing` uses) is another.
"""

from __future__ import annotations

import operator
import select
import socket
from collections.abc import Awaitable
from typing import Any

import trio

from ._readiness import Registration, readiness_hub

__all__ = ["NonBlockingStream", "SocketStream", "socket_peer_closed"]


class NonBlockingStream(trio.abc.HalfCloseableStream):
    """A half-closeable stream that can also be used without waiting.

    ``send_nowait`` and ``receive_nowait`` never block; ``wait_readable`` and
    ``wait_writable`` wait until they would make progress.
    """

    def send_nowait(self, data: bytes | memoryview) -> int:
        """Write what fits now; return how many bytes were taken (0 when full).
        Raises ``trio.BrokenResourceError`` if the peer is gone."""
        raise NotImplementedError

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """Read what is there now: ``None`` if nothing yet, ``b""`` at end of stream
        (a reset counts as the end)."""
        raise NotImplementedError

    async def wait_readable(self) -> None:
        """Wait until :meth:`receive_nowait` would return something."""
        raise NotImplementedError

    async def wait_writable(self) -> None:
        """Wait until :meth:`send_nowait` would take something."""
        raise NotImplementedError

    def readable(self) -> Awaitable[None]:
        """:meth:`wait_readable` as an awaitable to await at once; a stream may return a
        lower-level wait to spare its waiter a frame (it may then raise
        ``trio.ClosedResourceError`` if the stream is closed meanwhile)."""
        return self.wait_readable()

    def shutdown_write(self) -> None:
        """Half-close without waiting: the peer reads an end of stream after what was
        written."""
        raise NotImplementedError

    def peer(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)``, if there is one."""
        return None

    def peer_closed(self) -> bool:
        """Without reading: whether the peer has closed its side or reset the stream."""
        return False

    # trio.abc.Stream, on top of the above (with its rules: one sender and one receiver
    # at a time, ``trio.testing.check_half_closeable_stream`` checks them).

    # Slots all the way down (trio.abc's classes have them): every connection has one.
    __slots__ = ("_receiving", "_sending")

    def __init__(self) -> None:
        self._sending = False
        self._receiving = False

    @property
    def is_closed(self) -> bool:
        """Whether this end was closed (``aclose``): using it then raises
        ``trio.ClosedResourceError``."""
        return False

    def _check_open(self) -> None:
        if self.is_closed:
            raise trio.ClosedResourceError("this stream is closed")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            view = memoryview(data)
            await trio.lowlevel.checkpoint_if_cancelled()
            while view:
                sent = self.send_nowait(view)
                view = view[sent:]
                if view:
                    await self.wait_writable()
            await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await self.wait_writable()
            self._check_open()  # closed while this task waited
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as Trio's streams
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        self._check_open()
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            size = 65536 if max_bytes is None else max_bytes
            await trio.lowlevel.checkpoint_if_cancelled()
            while True:
                data = self.receive_nowait(size)
                if data is not None:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
                await self.wait_readable()
                self._check_open()  # closed while this task waited
        finally:
            self._receiving = False


class SocketStream(NonBlockingStream):
    """A connected, non-blocking TCP socket as a :class:`NonBlockingStream`.

    The native server takes the socket over from Trio's listener (``detach``), so that
    reads and writes are one system call each, with no wrapper in between. Reads wait
    through the Trio run's readiness hub (``_readiness.py``) where there is one.
    """

    __slots__ = ("_closed", "_hub", "_in_trio", "_registration", "_write_shut", "socket")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        sock.setblocking(False)
        self.socket = sock
        self._closed = False
        self._write_shut = False
        # Reads wait through the run's readiness hub (one epoll_ctl per socket, not
        # per wait) where there is one; Trio's own waits then need no notify_closing.
        self._registration: Registration | None = None
        self._hub = True  # false: no hub (not Linux, or it refused the socket)
        self._in_trio = False  # Trio was asked to wait for this socket

    @property
    def is_closed(self) -> bool:
        return self._closed

    def send_nowait(self, data: bytes | memoryview) -> int:
        if self._closed or self._write_shut:
            raise trio.ClosedResourceError("the socket is closed for sending")
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        if self._closed:
            return b""
        registration = self._registration
        if registration is not None:
            registration.ready = False  # this read sees whatever the event was for
        try:
            return self.socket.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError:
            return b""  # reset by the peer: the same as an end without a close frame

    async def wait_readable(self) -> None:
        registration = self._registration
        if registration is None or not registration.active:
            if self._closed:
                await trio.lowlevel.checkpoint()
                return  # the next receive_nowait reports the end
            registration = self._register()
        if registration is not None:
            await registration.hub.wait_readable(registration)
            return
        self._in_trio = True
        try:
            await trio.lowlevel.wait_readable(self.socket)
        except trio.ClosedResourceError:
            pass  # closed meanwhile: the next receive_nowait reports the end

    def _register(self) -> Registration | None:
        if not self._hub:
            return None
        hub = readiness_hub()
        registration = None if hub is None else hub.register(self.socket.fileno())
        self._registration = registration
        self._hub = registration is not None
        return registration

    def readable(self) -> Awaitable[None]:
        # The wait itself, not wait_readable's frame around it: an idle connection's
        # reader waits here.
        registration = self._registration
        if registration is not None and registration.active:
            return registration.hub.wait_readable(registration)
        return self.wait_readable()

    async def wait_writable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the socket is closed")
        self._in_trio = True
        await trio.lowlevel.wait_writable(self.socket)

    def peer_closed(self) -> bool:
        return self._closed or socket_peer_closed(self.socket)

    def peer(self) -> tuple[str, int] | None:
        try:
            address: Any = self.socket.getpeername()
        except OSError:
            return None
        return str(address[0]), int(address[1])

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint()
        self.shutdown_write()

    def shutdown_write(self) -> None:
        if self._closed or self._write_shut:
            return
        self._write_shut = True
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def abort(self) -> None:
        """Close now; tasks waiting on the socket wake up."""
        if self._closed:
            return
        self._closed = True
        registration = self._registration
        if registration is not None:
            registration.hub.unregister(registration)  # wakes its reader
        if self._in_trio:
            trio.lowlevel.notify_closing(self.socket)
        self.socket.close()

    async def aclose(self) -> None:
        self.abort()
        await trio.lowlevel.checkpoint()


_HANGUP = getattr(select, "POLLRDHUP", 0x2000) | select.POLLHUP | select.POLLERR


def socket_peer_closed(sock: Any) -> bool:
    """Whether the peer of a connected socket has shut down its side or reset it,
    whatever data it sent before is still unread (Linux ``POLLRDHUP``)."""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), _HANGUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False
