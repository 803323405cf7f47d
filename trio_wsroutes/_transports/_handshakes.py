"""Connections before admission: bounded in number, in time and in memory.

Between ``accept`` and the end of the upgrade request, a connection has not met the
server's limits yet (``max_connections`` counts upgrades once their request is read), so
what it may hold is bounded here:

* **in number**: :class:`HandshakeSlots` counts the connections still in their TLS or HTTP
  handshake (``max_pending_handshakes``). When they are all taken, the native server
  stops accepting (new connections wait in the kernel's backlog, which costs this
  process nothing) until one ends, or until the oldest has been pending for
  :data:`EVICTABLE_AFTER` seconds: that one is then dropped to make room. Waiting alone
  would let as many stalled clients as there are slots lock everyone out for a whole
  ``handshake_timeout``; dropping at once would let a burst of new connections cut short
  handshakes that were about to finish. A client that has not finished its handshake
  two seconds after it connected is stalled or on a very bad network; one that is
  still working gets its turn back from the backlog.
* **in time**: every pending handshake has one deadline, ``handshake_timeout`` after it
  was accepted (:meth:`PendingHandshake.guard`).
* **in memory**: :func:`client_hello_arrived` waits for a TLS client's first record
  without reading it, so that the TLS state (about 55 KiB: OpenSSL's buffers and
  objects) is made only once the ClientHello is whole in the socket's receive buffer. A
  client that sends a few bytes and stops costs a socket and a small task.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Final

import trio

from ._streams import socket_peer_closed

__all__ = [
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "EVICTABLE_AFTER",
    "HandshakeSlots",
    "PendingHandshake",
    "client_hello_arrived",
    "serve_listeners",
]

logger = logging.getLogger("trio_wsroutes")

DEFAULT_MAX_PENDING_HANDSHAKES: Final = 256
"""Connections that may be in their TLS or HTTP handshake at once, by default: each holds
at most about 75 KiB (the TLS state and a 16 KiB request head), about 20 MiB for all."""
EVICTABLE_AFTER: Final = 2.0
"""Seconds after which a pending handshake may be dropped to make room for a new one."""

_TLS_HANDSHAKE: Final = 0x16
_RECORD_HEADER: Final = 5
_MAX_RECORD: Final = 16384
"""The largest TLS plaintext record (RFC 8446 5.1): a ClientHello in one record fits."""
_POLL_INTERVAL: Final = 0.05
_CONNECTION_TASK: Final = "trio_wsroutes connection"
"""Where ``SO_RCVLOWAT`` cannot be set: how often the socket is looked at again."""
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)


class PendingHandshake:
    """One connection in its TLS or HTTP handshake: its deadline, and its slot.

    Made by :meth:`HandshakeSlots.admit`; :meth:`done` gives the slot back (once the
    request is read, or when the connection ends).
    """

    __slots__ = ("_scope", "_slots", "deadline", "evicted", "started")

    def __init__(self, slots: HandshakeSlots | None, deadline: float) -> None:
        self._slots = slots
        self._scope: trio.CancelScope | None = None
        self.started: float = trio.current_time()
        self.deadline: float = deadline
        """When the handshake must be over (``trio.current_time()`` clock)."""
        self.evicted: bool = False
        """Whether it was dropped to make room for a newer one."""

    @contextmanager
    def guard(self) -> Generator[trio.CancelScope]:
        """Run the block until the deadline, or until the handshake is dropped to make
        room: then it is cancelled (the scope's ``cancelled_caught`` says so)."""
        with trio.CancelScope(deadline=self.deadline) as scope:
            if self.evicted:
                scope.cancel()
            self._scope = scope
            try:
                yield scope
            finally:
                self._scope = None

    def evict(self) -> None:
        """Drop this handshake: its guarded block is cancelled, its slot freed."""
        self.evicted = True
        if self._scope is not None:
            self._scope.cancel()
        self.done()

    def done(self) -> None:
        """Give the slot back (idempotent)."""
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.release(self)


class HandshakeSlots:
    """At most ``limit`` pending handshakes (``None``: no limit); see the module."""

    def __init__(self, limit: int | None, *, evictable_after: float = EVICTABLE_AFTER) -> None:
        if limit is not None and limit < 1:
            raise ValueError("max_pending_handshakes must be positive (or None)")
        self.limit = limit
        self.evictable_after = evictable_after
        self.evictions = 0
        """How many pending handshakes were dropped to make room."""
        # Insertion order is age order: the first is the oldest.
        self._pending: dict[PendingHandshake, None] = {}
        self._freed = trio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    async def admit(self, deadline: float) -> PendingHandshake:
        """A slot for a new connection, whose handshake must end by ``deadline``: waits
        while all are taken by handshakes younger than ``evictable_after``, and drops the
        oldest once it is older."""
        await trio.lowlevel.checkpoint_if_cancelled()
        limit = self.limit
        if limit is None:
            return PendingHandshake(None, deadline)
        while len(self._pending) >= limit:
            oldest = next(iter(self._pending))
            evictable = oldest.started + self.evictable_after
            if trio.current_time() >= evictable:
                self.evictions += 1
                oldest.evict()
                continue
            freed = self._freed
            with trio.move_on_at(evictable):
                await freed.wait()
        handshake = PendingHandshake(self, deadline)
        self._pending[handshake] = None
        return handshake

    def release(self, handshake: PendingHandshake) -> None:
        """Free ``handshake``'s slot (:meth:`PendingHandshake.done` calls it)."""
        if handshake in self._pending:
            del self._pending[handshake]
            self._freed.set()
            self._freed = trio.Event()


async def client_hello_arrived(sock: trio.socket.SocketType) -> bool:
    """Wait, reading nothing, until the first TLS record (the ClientHello) is whole in
    ``sock``'s receive buffer. ``False`` if the peer closes first or sends something that
    is not a TLS handshake record.

    The socket is only peeked at (``MSG_PEEK``), so nothing is allocated for the bytes that
    came; while more are needed, ``SO_RCVLOWAT`` makes the socket readable only once they
    are all there (where it cannot be set, the socket is looked at every 50 ms).
    """
    need = _RECORD_HEADER
    lowered = False
    waited = False  # whether the socket was waited on for the current ``need``
    try:
        while True:
            try:
                head = await sock.recv(need, socket.MSG_PEEK)
            except OSError:
                return False
            if not head:
                return False  # closed before sending anything
            if need == _RECORD_HEADER and len(head) == _RECORD_HEADER:
                length = int.from_bytes(head[3:5], "big")
                if head[0] != _TLS_HANDSHAKE or head[1] != 3 or not 0 < length <= _MAX_RECORD:
                    return False
                need += length
                waited = False
                continue
            if len(head) >= need:
                return True
            if waited:
                if socket_peer_closed(sock):
                    return False  # the peer closed with the record cut short
                # Woken early (the kernel does so under memory pressure): from now on,
                # look again now and then rather than spin.
                await trio.sleep(_POLL_INTERVAL)
                continue
            if _set_low_water_mark(sock, need):
                lowered = True
                await trio.lowlevel.wait_readable(sock)
            else:
                await trio.sleep(_POLL_INTERVAL)
            waited = True
    finally:
        if lowered:
            _set_low_water_mark(sock, 1)


def _set_low_water_mark(sock: trio.socket.SocketType, size: int) -> bool:
    option = getattr(socket, "SO_RCVLOWAT", None)
    if option is None:  # pragma: no cover - every platform the tests run on has it
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    except OSError:  # pragma: no cover - Windows refuses it
        return False
    return True


async def serve_listeners(
    handle: Callable[[trio.SocketStream, PendingHandshake], Awaitable[object]],
    listeners: list[trio.SocketListener],
    *,
    slots: HandshakeSlots,
    handshake_seconds: float,
    handler_nursery: trio.Nursery,
) -> None:
    """Accept on every listener until cancelled, each connection with a slot from
    ``slots`` (whose handshake must end within ``handshake_seconds`` of its accept);
    ``handle(stream, handshake)``
    runs in ``handler_nursery`` as the connection's task; it must call
    ``handshake.done()`` once the request is read, and close the stream (or its socket)
    by the time it returns, whatever happens."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(
                _accept_loop, handle, listener, slots, handshake_seconds, handler_nursery
            )


async def _accept_loop(
    handle: Callable[[trio.SocketStream, PendingHandshake], Awaitable[object]],
    listener: trio.SocketListener,
    slots: HandshakeSlots,
    handshake_seconds: float,
    handler_nursery: trio.Nursery,
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            logger.error(  # noqa: TRY400 - the error says it all; it may repeat
                "accept failed: %s (%s); retrying in 0.1 s",
                errno.errorcode[exc.errno],
                os.strerror(exc.errno),
            )
            await trio.sleep(0.1)
            continue
        # One accepted socket may wait here for a slot: its data stays in the kernel.
        deadline = trio.current_time() + handshake_seconds
        try:
            handshake = await slots.admit(deadline)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        # No wrapper task function (its frame would stay for the connection's life), and
        # one name for every connection task (Trio would format one per task).
        handler_nursery.start_soon(handle, stream, handshake, name=_CONNECTION_TASK)
