"""A TCP proxy for fault tests: it listens on 127.0.0.1 and forwards every connection to a
target, and a test can stall it (pause: nothing forwarded either way, every socket kept
open, as a network that silently drops packets), resume it, or cut every connection.

``async with tcp_proxy(port) as proxy:`` runs it in a nursery of its own; the
connections it holds are closed on exit. Everything is bounded: one read of at most
64 KiB is held per direction while paused.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import trio

_CHUNK = 65536


class TcpProxy:
    """The running proxy: :attr:`port` to connect to, and its controls."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        """Connections accepted so far."""
        self._flowing = trio.Event()
        self._flowing.set()
        self._stalled: dict[int, trio.Event] = {}  # connections paused one by one
        self._scopes: set[trio.CancelScope] = set()

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def pause(self, only: int | None = None) -> None:
        """Stop forwarding, both ways, on every connection (new ones too), or ``only`` on
        the one accepted in that place (0: the first); sockets stay open, so neither
        side sees a reset or an end of stream."""
        if only is not None:
            self._stalled.setdefault(only, trio.Event())
        elif not self.paused:
            self._flowing = trio.Event()

    def resume(self) -> None:
        """Forward again, everywhere, what was held first."""
        self._flowing.set()
        for event in self._stalled.values():
            event.set()
        self._stalled.clear()

    async def _until_flowing(self, index: int) -> None:
        while True:
            stalled = self._stalled.get(index)
            if stalled is not None:
                await stalled.wait()
            elif not self._flowing.is_set():
                await self._flowing.wait()
            else:
                return

    def cut(self) -> None:
        """Close every connection held now (both sockets)."""
        for scope in list(self._scopes):
            scope.cancel()

    async def _pump(self, index: int, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while True:
            await self._until_flowing(index)
            data = await source.receive_some(_CHUNK)
            if not data:
                return
            await self._until_flowing(index)  # held while paused, sent on resume
            await sink.send_all(data)

    async def serve(self, client: trio.SocketStream) -> None:
        """Forward one accepted connection (``trio.serve_tcp``'s handler)."""
        index = self.connections
        self.connections += 1
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                    async with upstream, trio.open_nursery() as nursery:

                        async def forward(
                            source: trio.SocketStream, sink: trio.SocketStream
                        ) -> None:
                            try:
                                await self._pump(index, source, sink)
                            except (trio.BrokenResourceError, trio.ClosedResourceError):
                                pass
                            # One side ended: end the other too.
                            nursery.cancel_scope.cancel()

                        nursery.start_soon(forward, client, upstream)
                        nursery.start_soon(forward, upstream, client)
            except OSError:
                pass  # the target is down: the client sees its connection closed
            finally:
                self._scopes.discard(scope)


@asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncGenerator[TcpProxy]:
    """Forward 127.0.0.1:<free port> to 127.0.0.1:``target_port`` until exit."""
    proxy = TcpProxy(target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy.serve, 0, host="127.0.0.1")
        )
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            proxy.resume()
            nursery.cancel_scope.cancel()
