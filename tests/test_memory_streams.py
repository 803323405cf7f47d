"""The in-memory connection the test client runs the native transport over
(``trio_wsroutes/_transports/_memory.py``): bounded like a socket's buffers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_wsroutes._transports._memory import memory_stream_pair

PEER = ("127.0.0.1", 50000)


async def test_bytes_go_both_ways_and_the_server_end_knows_its_peer() -> None:
    client, server = memory_stream_pair(PEER)
    assert (client.peer(), server.peer()) == (None, PEER)
    with trio.fail_after(5):
        await client.send_all(b"hello")
        assert await server.receive_some() == b"hello"
        await server.send_all(b"back")
        assert await client.receive_some(2) == b"ba"
        assert await client.receive_some() == b"ck"
    assert client.read_by_peer == 5
    assert server.read_by_peer == 4


async def test_a_full_buffer_makes_the_writer_wait_until_the_peer_reads() -> None:
    client, server = memory_stream_pair(PEER, capacity=10)
    assert client.send_nowait(b"x" * 25) == 10  # what fits, no more
    assert client.send_nowait(b"y") == 0
    done = trio.Event()

    async def write() -> None:
        await client.send_all(b"z" * 5)
        done.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # waits like a full TCP window
            assert await server.receive_some(4) == b"x" * 4
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # 4 of 5 bytes fit: still waiting for room
            assert await server.receive_some(100) == b"x" * 6 + b"z" * 4
            await done.wait()
    assert server.receive_nowait(100) == b"z"
    assert server.receive_nowait(100) is None  # nothing yet, not the end


async def test_half_close_and_close() -> None:
    client, server = memory_stream_pair(PEER)
    await client.send_all(b"last")
    await client.send_eof()
    assert server.peer_closed()
    with trio.fail_after(5):
        assert await server.receive_some() == b"last"
        assert await server.receive_some() == b""  # end of stream after what was sent
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"more")  # after send_eof, as on every Trio stream
    await server.aclose()
    assert client.peer_closed()
    assert await client.receive_some() == b""
    other_client, other_server = memory_stream_pair(PEER)
    await other_server.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await other_client.send_all(b"more")  # the other end is gone
