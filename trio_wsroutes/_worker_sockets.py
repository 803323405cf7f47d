"""The listening sockets of the native transport's worker processes: on Linux every
worker opens its own with ``SO_REUSEPORT`` and the kernel spreads new connections over
them; elsewhere the supervisor opens them and the workers inherit them. Either way the
supervisor first binds the address itself (without ``SO_REUSEPORT``), so an address in
use is one clear error, and port 0 becomes one free port for every worker.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ._serving import StartupError

__all__ = ["inherited_listeners", "reserve", "reuse_port_balances", "reuse_port_listeners"]

BACKLOG = 65535  # the kernel caps it at net.core.somaxconn, as trio's listeners do


def reuse_port_balances() -> bool:
    """Whether each worker can bind its own socket to the port and let the kernel spread
    connections over them (Linux's ``SO_REUSEPORT``)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _addresses(host: str, port: int) -> list[Any]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)


def _socket_for(family: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def reserve(host: str, port: int, listen: bool) -> tuple[list[socket.socket], int]:
    """Bind every address of ``host`` on ``port`` (one free port for all when 0), without
    ``SO_REUSEPORT``: an address in use, by anyone, fails here. ``listen``: these are the
    sockets the workers will share. Returns the sockets and the port."""
    sockets: list[socket.socket] = []
    try:
        try:
            infos = _addresses(host, port)
        except socket.gaierror as exc:
            raise StartupError(
                errno.EADDRNOTAVAIL, f"cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        for family, _, _, _, address in infos:
            sock = _socket_for(family, reuse_port=False)
            sockets.append(sock)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise StartupError(
                    exc.errno, f"cannot listen on {host}:{port}: {reason}"
                ) from None
            if listen:
                sock.listen(BACKLOG)
        return sockets, int(sockets[0].getsockname()[1])
    except BaseException:
        for sock in sockets:
            sock.close()
        raise


async def reuse_port_listeners(host: str, port: int) -> list[trio.SocketListener]:
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, _, _, _, address in await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = trio.socket.from_stdlib_socket(_socket_for(family, reuse_port=True))
            sockets.append(sock)
            await sock.bind(address)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(sock) for sock in sockets]


async def inherited_listeners(fds: Sequence[int]) -> list[trio.SocketListener]:
    return [
        trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd))) for fd in fds
    ]
