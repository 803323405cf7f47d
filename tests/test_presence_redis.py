"""Presence with RedisBroker against a real redis-server: servers sharing who is in a topic,
events once per user across servers, a server killed with SIGKILL, a short Redis outage.

Each test starts its own ``redis-server`` (``tests/_redis.py``; skipped without one,
failed under ``CI=true``). Every wait is bounded; nothing asserts on timing.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests._redis import RedisServer, free_port
from tests.conftest import ServeLive, live_server, wait_until
from tests.presence_app import Hello, Marker, Out, make_server, room_route
from trio_wsroutes import PresenceJoin, PresenceLeave, PresenceStats, RedisBroker, WebSocketServer
from trio_wsroutes.client import Client, connect

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30


def redis_server(url: str, ttl: float = 30.0) -> WebSocketServer:
    broker = RedisBroker(url, reconnect_delay=0.05, max_reconnect_delay=0.5, timeout=2.0)
    return make_server(broker, ttl=ttl)


async def enter(stack: AsyncExitStack, base: str, user: str, room: str = "a") -> Client[Out, Any]:
    """Connect as ``user``; return once listed (the hello comes after the listing)."""
    ws = connect(f"{base}/room/{room}", room_route(), token=user, proxy=False, open_timeout=10)
    await stack.enter_async_context(ws)
    while not isinstance(await ws.receive(), Hello):
        pass
    return ws


async def stats(server: WebSocketServer, topic: str = "room:a") -> PresenceStats:
    """The stats once Redis answers (a broker reconnecting raises meanwhile)."""
    while True:
        try:
            return await server.presence_stats(topic)
        except ConnectionError:
            await trio.sleep(0.05)


async def until_stats(server: WebSocketServer, expected: PresenceStats) -> None:
    while await stats(server) != expected:  # noqa: ASYNC110 - polls other tasks' work
        await trio.sleep(0.05)


async def only_markers(
    servers: list[WebSocketServer], watchers: list[Client[Out, Any]], n: int
) -> None:
    """Every server publishes marker ``n`` on room:a; each watcher must get them all, and
    nothing else in between (an event sent before a server's marker comes before it:
    one publisher's messages keep their order through Redis)."""
    for i, server in enumerate(servers):
        await server.publish("room:a", Marker(n * 10 + i))
    expected = sorted(n * 10 + i for i in range(len(servers)))
    for ws in watchers:
        got = [await ws.receive() for _ in servers]
        assert all(isinstance(m, Marker) for m in got), got
        assert sorted(m.n for m in got if isinstance(m, Marker)) == expected


@asynccontextmanager
async def two_servers(
    serve_live: ServeLive, url: str, ttl: float = 30.0
) -> AsyncIterator[tuple[WebSocketServer, WebSocketServer, str, str]]:
    one, two = redis_server(url, ttl), redis_server(url, ttl)
    async with serve_live(one) as a, serve_live(two) as b:
        await wait_until(lambda: one.broker.connected and two.broker.connected)  # type: ignore[attr-defined]
        yield one, two, a.ws_url, b.ws_url


def seat_of(user: str) -> dict[str, str]:
    return {"name": f"seat of {user}"}


async def test_two_servers_share_lists_counts_and_once_per_user_events(
    serve_live: ServeLive, redis: RedisServer
) -> None:
    with trio.fail_after(TIMEOUT):
        async with two_servers(serve_live, redis.url) as (one, two, url1, url2):
            async with AsyncExitStack() as stack:
                carol = await enter(stack, url1, "carol")
                dave = await enter(stack, url2, "dave")
                assert await carol.receive() == PresenceJoin("room:a", "dave", seat_of("dave"))
                alice1 = await enter(stack, url1, "alice")
                for ws in (carol, dave):
                    assert await ws.receive() == PresenceJoin("room:a", "alice", seat_of("alice"))
                # Alice again, on the other server: no second join anywhere.
                alice2 = await enter(stack, url2, "alice")
                await only_markers([one, two], [carol, dave], 1)
                bob = await enter(stack, url2, "bob")
                for ws in (carol, dave):
                    assert await ws.receive() == PresenceJoin("room:a", "bob", seat_of("bob"))

                # Lists and counts from either server, through Redis.
                for server in (one, two):
                    entries = await server.presence("room:a")
                    users = sorted(str(e.user_id) for e in entries)
                    assert users == ["alice", "alice", "bob", "carol", "dave"]
                    assert await server.presence_stats("room:a") == PresenceStats(5, 4)
                ids = {c.id for s in (one, two) for c in s.registry.all()}
                assert {e.connection_id for e in await one.presence("room:a")} == ids

                # The Redis layout: three keys with the topic as hash tag, all expiring.
                for key in ("presence", "presence-exp", "presence-users"):
                    name = f"wsroutes:{key}:{{room:a}}"
                    assert int(redis.command("PTTL", name).strip(b":\r\n")) > 0

                # Alice's first connection goes: no leave; her last: one, everywhere.
                await alice1.close()
                await until_stats(one, PresenceStats(4, 4))
                await trio.sleep(0.2)  # what it would have sent is on its way
                await only_markers([one, two], [carol, dave, bob], 2)
                await alice2.close()
                for ws in (carol, dave, bob):
                    assert await ws.receive() == PresenceLeave("room:a", "alice", seat_of("alice"))
                await only_markers([one, two], [carol, dave, bob], 3)


async def test_a_server_killed_with_sigkill_leaves_within_the_ttl(
    redis: RedisServer, tmp_path: Path
) -> None:
    """A server process killed with SIGKILL: its users leave once its entries expire, one
    leave event each; a user still connected elsewhere stays."""
    ttl = 2.0
    port = free_port()
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "0"]
    command += ["--bind", f"127.0.0.1:{port}", "tests.presence_app:server"]
    env = {**os.environ, "WSROUTES_REDIS_URL": redis.url, "PRESENCE_TTL": str(ttl)}
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            command, cwd=ROOT, env=env, stdout=log, stderr=log
        )
    local = redis_server(redis.url, ttl)
    try:
        with trio.fail_after(TIMEOUT * 2):
            async with live_server(local, "native") as address, AsyncExitStack() as stack:
                await wait_until(lambda: local.broker.connected)  # type: ignore[attr-defined]
                carol = await enter(stack, address.ws_url, "carol")
                alice = await enter(stack, address.ws_url, "alice")
                assert await carol.receive() == PresenceJoin("room:a", "alice", seat_of("alice"))
                remote_url = f"ws://127.0.0.1:{port}"
                await wait_until(lambda: b"Running on" in log_path.read_bytes())
                await enter(stack, remote_url, "bob")
                assert await carol.receive() == PresenceJoin("room:a", "bob", seat_of("bob"))
                await enter(stack, remote_url, "alice")  # alice there too: no event
                await until_stats(local, PresenceStats(4, 3))

                process.send_signal(signal.SIGKILL)
                await process.wait()

                # Bob leaves (once); alice stays, her entry there expired silently.
                for ws in (carol, alice):
                    if ws is alice:
                        assert await ws.receive() == PresenceJoin("room:a", "bob", seat_of("bob"))
                    assert await ws.receive() == PresenceLeave("room:a", "bob", seat_of("bob"))
                await until_stats(local, PresenceStats(2, 2))
                assert {e.user_id for e in await local.presence("room:a")} == {"carol", "alice"}
                await trio.sleep(ttl)  # sweeps come and go: nothing more to send
                await only_markers([local], [carol, alice], 1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("outage", ["restart", "pause"])
async def test_a_short_redis_outage_sends_no_leave_or_join(
    serve_live: ServeLive, stopped_redis: RedisServer, outage: str
) -> None:
    """Redis restarted (losing every entry: no persistence) or paused (SIGSTOP) for less
    than the ttl: the entries come back (or stay), and nobody hears of a leave or a join."""
    stopped_redis.start()
    with trio.fail_after(TIMEOUT * 2):
        async with two_servers(serve_live, stopped_redis.url, ttl=8.0) as (one, two, url1, url2):
            async with AsyncExitStack() as stack:
                carol = await enter(stack, url1, "carol")
                dave = await enter(stack, url2, "dave")
                assert await carol.receive() == PresenceJoin("room:a", "dave", seat_of("dave"))
                await enter(stack, url1, "alice")
                await enter(stack, url2, "bob")
                for name in ("alice", "bob"):
                    for ws in (carol, dave):
                        assert await ws.receive() == PresenceJoin("room:a", name, seat_of(name))
                await until_stats(one, PresenceStats(4, 4))

                if outage == "restart":
                    stopped_redis.kill()
                    await wait_until(
                        lambda: not one.broker.connected or not two.broker.connected  # type: ignore[attr-defined]
                    )
                    await trio.sleep(0.5)
                    stopped_redis.start()
                else:
                    process = stopped_redis.process
                    assert process is not None
                    os.kill(process.pid, signal.SIGSTOP)
                    try:
                        await trio.sleep(1.5)
                    finally:
                        os.kill(process.pid, signal.SIGCONT)
                await wait_until(lambda: one.broker.connected and two.broker.connected)  # type: ignore[attr-defined]
                # Every entry back (re-added without events after a restart) or still there.
                await until_stats(one, PresenceStats(4, 4))
                await until_stats(two, PresenceStats(4, 4))
                assert len(await one.presence("room:a")) == 4
                await trio.sleep(1.0)  # a refresh and a sweep on each server
                await only_markers([one, two], [carol, dave], 1)


async def test_a_join_while_redis_is_down_is_made_and_announced_on_reconnection(
    serve_live: ServeLive, stopped_redis: RedisServer
) -> None:
    stopped_redis.start()
    with trio.fail_after(TIMEOUT * 2):
        async with two_servers(serve_live, stopped_redis.url, ttl=8.0) as (one, two, _, url2):
            async with AsyncExitStack() as stack:
                carol = await enter(stack, url2, "carol")
                stopped_redis.kill()
                await wait_until(lambda: not two.broker.connected)  # type: ignore[attr-defined]
                await enter(stack, url2, "erin")  # subscribes; Redis cannot list her yet
                stopped_redis.start()
                # Listed on reconnection, and her join announced then (once).
                assert await carol.receive() == PresenceJoin("room:a", "erin", seat_of("erin"))
                await until_stats(one, PresenceStats(2, 2))
                await trio.sleep(1.0)
                await only_markers([one, two], [carol], 1)
