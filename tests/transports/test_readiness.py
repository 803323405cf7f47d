"""The readiness hub of the native transport's sockets: one epoll registration per
socket, reads woken by one task that waits in Trio for the whole set, waits that stay
cancellable, a close that wakes its reader, and Trio's own waits where there is no hub."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_wsroutes._transports import _readiness
from trio_wsroutes._transports._streams import SocketStream

pytestmark = pytest.mark.skipif(not _readiness._SUPPORTED, reason="Linux only (epoll)")

TIMEOUT = 10


def _pair() -> tuple[SocketStream, socket.socket]:
    """The stream end and the raw peer of a connected TCP pair."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        served, _ = listener.accept()
    return SocketStream(served), peer


@asynccontextmanager
async def blocked_in(wait: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """``wait()`` started and blocked in it: the block runs while it waits, and ends
    once it has returned."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        yield


def _trio_readers() -> int:
    return trio.lowlevel.current_statistics().io_statistics.tasks_waiting_read


async def test_many_readers_are_one_wait_in_trio() -> None:
    pairs = [_pair() for _ in range(5)]
    got: dict[int, bytes] = {}
    others = _trio_readers()

    async def read(index: int, stream: SocketStream) -> None:
        got[index] = await stream.receive_some()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for index, (stream, _) in enumerate(pairs):
                nursery.start_soon(read, index, stream)
            await trio.testing.wait_all_tasks_blocked()
            assert _trio_readers() == others + 1  # the hub, for the five sockets
            for index, (_, peer) in enumerate(pairs):
                peer.sendall(b"m%d" % index)
    assert got == {index: b"m%d" % index for index in range(5)}
    for stream, peer in pairs:
        await stream.aclose()
        peer.close()


async def test_a_socket_is_registered_once_and_removed_on_close() -> None:
    stream, peer = _pair()
    registrations = []
    with trio.fail_after(TIMEOUT):
        for _ in range(3):
            async with blocked_in(stream.receive_some):
                peer.sendall(b"x")
            registrations.append(stream._registration)
    registration = registrations[0]
    assert registration is not None
    assert registrations == [registration] * 3
    hub = registration.hub
    assert registration.fd in hub._registered
    await stream.aclose()
    assert not registration.active
    assert registration.fd not in hub._registered
    peer.close()


async def test_a_waiting_reader_can_be_cancelled() -> None:
    stream, peer = _pair()
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(0.05) as scope:
            await stream.receive_some()
        assert scope.cancelled_caught
        registration = stream._registration
        assert registration is not None
        assert registration.task is None
        peer.sendall(b"after")
        assert await stream.receive_some() == b"after"
    await stream.aclose()
    peer.close()


async def test_closing_the_stream_wakes_its_reader() -> None:
    stream, peer = _pair()
    woke = False

    async def wait() -> None:
        nonlocal woke
        await stream.wait_readable()
        woke = True

    with trio.fail_after(TIMEOUT):
        async with blocked_in(wait):
            stream.abort()
    assert woke
    assert stream.receive_nowait(100) == b""
    with trio.fail_after(TIMEOUT):
        await stream.wait_readable()  # closed: returns, the read says the end
    peer.close()


async def test_the_peer_closing_wakes_the_reader() -> None:
    stream, peer = _pair()
    with trio.fail_after(TIMEOUT):
        async with blocked_in(stream.receive_some):
            peer.sendall(b"x")
        peer.close()
        assert await stream.receive_some() == b""
    await stream.aclose()


async def test_data_that_came_while_nobody_waited_is_not_waited_for() -> None:
    stream, peer = _pair()
    with trio.fail_after(TIMEOUT):
        async with blocked_in(stream.receive_some):  # registers the socket
            peer.sendall(b"first")
        peer.sendall(b"second")
        await trio.testing.wait_all_tasks_blocked()  # the hub saw the event
        registration = stream._registration
        assert registration is not None
        assert registration.ready
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.wait_readable()
        assert registration.ready  # a cancelled wait keeps the event for the next one
        await stream.wait_readable()  # at once: the edge will not come again
        assert stream.receive_nowait(100) == b"second"
        assert not registration.ready
        assert stream.receive_nowait(100) is None
    await stream.aclose()
    peer.close()


async def test_two_readers_of_one_socket_is_an_error() -> None:
    stream, peer = _pair()
    with trio.fail_after(TIMEOUT):
        async with blocked_in(stream.wait_readable):
            with pytest.raises(trio.BusyResourceError):
                await stream.wait_readable()
            peer.sendall(b"x")
    await stream.aclose()
    peer.close()


async def test_without_epoll_reads_wait_in_trio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_readiness, "_SUPPORTED", False)
    stream, peer = _pair()
    with trio.fail_after(TIMEOUT):
        async with blocked_in(stream.receive_some):
            assert stream._registration is None
            peer.sendall(b"x")
    await stream.aclose()
    peer.close()


def test_each_run_has_its_own_hub() -> None:
    hubs: list[_readiness.ReadinessHub] = []

    async def one_run() -> None:
        stream, peer = _pair()
        with trio.fail_after(TIMEOUT):
            async with blocked_in(stream.receive_some):
                peer.sendall(b"x")
        assert stream._registration is not None
        hubs.append(stream._registration.hub)
        await stream.aclose()
        peer.close()

    trio.run(one_run)
    trio.run(one_run)
    first, second = hubs
    assert first is not second
    assert first.closed  # closed with its run
    assert first._epoll.closed
