"""A :class:`~trio_wsroutes.RedisBroker` on a Redis Cluster (``redis+cluster://``).

The cluster's slot map is read from the first node that answers ``CLUSTER SLOTS``. Each
master gets a pair of connections of its own (a subscription one and a publishing one)
and its own reconnection loop, so a master that fails stops only the topics of its
slots: the others keep flowing. Every key and the channel of a topic carry the topic's
hash tag (``Settings.tag``), so they share one slot: the history scripts (``EVALSHA``)
run on the master owning it, and its publications are sharded (``SPUBLISH``, from
inside the script too), received by the processes that ``SSUBSCRIBE`` there.

What routes: :class:`ClusterPub` stands for the publishing connection (commands go to
the master of their channel's or first key's slot, ``SCRIPT LOAD`` to every master),
:class:`ClusterSub` for the subscription connection (``SUBSCRIBE`` becomes one
``SSUBSCRIBE`` per channel on its master). A command for a master that is down fails
with :class:`NodeDown` (a :class:`ConnectionError`).

When the map changes (a ``MOVED``/``ASK``/``CLUSTERDOWN`` reply, a master that stops
answering, Redis ending a sharded subscription because its slot moved), the map is read
again; if it differs, the whole session ends and the broker reconnects to the new map
(see ``_session.py``). After a master's subscription is back, the topics with history
whose subscription had a gap catch up from the stream (``Recoveries.catch_up``).
"""

from __future__ import annotations

import hashlib
import random
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, NoReturn, cast
from urllib.parse import unquote, urlsplit

import trio

from ..._history import History, Position
from ._channels import Channels
from ._common import (
    ConnectionLost,
    Link,
    NodeDown,
    RedisBrokerStats,
    Settings,
    describe,
    is_unexpected,
    logger,
    text,
)
from ._continuity import Continuity
from ._control import Control
from ._inbound import Inbound
from ._outbound import Outbound
from ._recovery import Recoveries
from ._scripts import PUBLISH_SCRIPT, PUBLISH_SHA, SCRIPTS
from ._session import Session

if TYPE_CHECKING:
    from coredis.connection import BaseConnection

__all__ = [
    "CLUSTER_PUBLISH_SCRIPT",
    "ClusterPub",
    "ClusterSession",
    "ClusterSub",
    "cluster_once_client",
    "parse_cluster_url",
]

SLOTS: Final = 16384
CLUSTER_PUBLISH_SCRIPT: Final = PUBLISH_SCRIPT.replace(
    b"redis.call('PUBLISH',", b"redis.call('SPUBLISH',"
)
"""The history publish script with a sharded publish: the channel is in its keys' slot."""
CLUSTER_PUBLISH_SHA: Final = hashlib.sha1(CLUSTER_PUBLISH_SCRIPT).hexdigest().encode()
assert CLUSTER_PUBLISH_SCRIPT != PUBLISH_SCRIPT


def cluster_script(script: bytes) -> bytes:
    """The script to run on a cluster in place of ``script``."""
    return CLUSTER_PUBLISH_SCRIPT if script == PUBLISH_SCRIPT else script


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes of ``redis+cluster://[user:password@]host:port[,host:port...][/0]``
    and the connection options (credentials, TLS for ``rediss+cluster://``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a Redis Cluster URL names nodes as host:port: {item!r}")
        seeds.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0") or parts.query:
        raise ValueError("a Redis Cluster has database 0 only, and this URL takes no options")
    options: dict[str, Any] = {}
    if userinfo:
        user, colon, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if colon:
            options["password"] = unquote(password)
    if parts.scheme == "rediss+cluster":
        options["ssl_context"] = ssl.create_default_context()
    return seeds, options


def slot_of(name: bytes) -> int:
    """The cluster slot of a key or sharded channel."""
    from coredis._utils import hash_slot  # pyright: ignore[reportPrivateUsage]

    return int(hash_slot(name))


class Node:
    """One master: its address, its two connections while up."""

    __slots__ = ("gap", "host", "port", "pub", "sub", "tried", "up")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sub: BaseConnection | None = None
        self.pub: BaseConnection | None = None
        self.up = False
        """Connected, and the channels of its slots subscribed."""
        self.gap = False
        """Its subscription was down after it had been up: catch up once it is back."""
        self.tried = False

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


_Held = tuple[str, History, Position, list[Any]]
"""A topic held for a catch-up: its history, its last position here, its recoveries."""

SlotMap = tuple[tuple[int, int, str, int], ...]
"""``(first slot, last slot, host, port)`` of each range, sorted."""


def parse_slots(reply: Any) -> SlotMap:
    """The slot map in a ``CLUSTER SLOTS`` reply (its masters only)."""
    ranges: list[tuple[int, int, str, int]] = []
    for entry in cast("list[Any]", reply):
        first, last, master = int(entry[0]), int(entry[1]), entry[2]
        ranges.append((first, last, text(master[0]), int(master[1])))
    return tuple(sorted(ranges))


class Router:
    """The slot map of one session and the masters it names."""

    def __init__(self, slot_map: SlotMap, channels: Channels) -> None:
        self.slot_map = slot_map
        self.nodes: dict[tuple[str, int], Node] = {}
        self._slots: list[Node | None] = [None] * SLOTS
        for first, last, host, port in slot_map:
            node = self.nodes.get((host, port))
            if node is None:
                node = self.nodes[(host, port)] = Node(host, port)
            for slot in range(first, last + 1):
                self._slots[slot] = node
        self.channels = channels
        self.stale = trio.Event()
        """Set when the map may have changed: read it again."""
        self.changed = trio.Event()
        """Set when it did: the session ends."""
        self.settled = trio.Event()
        """Every master has been tried once."""
        self.pub = ClusterPub(self)
        self.sub = ClusterSub(self)

    def owner(self, name: bytes) -> Node | None:
        """The master of the slot of ``name`` (a key or channel)."""
        return self._slots[slot_of(name)]

    def live(self, name: bytes) -> Node | None:
        """That master, if it is up."""
        node = self._slots[slot_of(name)]
        return node if node is not None and node.up else None

    def tried(self, node: Node) -> None:
        node.tried = True
        if all(n.tried for n in self.nodes.values()):
            self.settled.set()

    def suspect(self) -> None:
        """Something said the map may have changed."""
        self.stale.set()

    def lost(self, node: Node) -> None:
        """``node`` went down: its channels are no longer subscribed."""
        channels = self.channels
        for channel in list(channels.subscribed):
            if self.owner(channel) is node:
                channels.unreachable(channel)


class ClusterPub:
    """The publishing "connection" of a cluster session: each command to its master."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def create_request(
        self,
        command: bytes,
        *args: Any,
        timeout: float | None = None,
    ) -> Awaitable[Any]:
        """Send ``command`` to the master of its slot; the reply, or :class:`NodeDown`."""
        router = self._router
        if command == b"SCRIPT":
            return self._everywhere(command, args, timeout)
        if command == b"PUBLISH":
            command, name = b"SPUBLISH", cast(bytes, args[0])
        elif command == b"EVALSHA":
            if args[0] == PUBLISH_SHA:
                args = (CLUSTER_PUBLISH_SHA, *args[1:])
            name = cast(bytes, args[2])
        else:
            raise ValueError(f"no route for {command!r}")
        node = router.live(name)
        if node is None or node.pub is None:
            return _fail(NodeDown(f"the cluster node of slot {slot_of(name)} is down"))
        try:
            request = node.pub.create_request(command, *args, timeout=timeout)
        except Exception as exc:
            return _fail(NodeDown(f"cluster node {node.name}: {describe(exc)}"), exc)
        return self._guard(request, node)

    async def _guard(self, request: Awaitable[Any], node: Node) -> Any:
        from coredis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError

        try:
            return await request
        except (AskError, ClusterDownError, TryAgainError):
            self._router.suspect()  # the slot moved (or is moving): read the map again
            raise
        except ResponseError:
            raise
        except Exception as exc:
            if is_unexpected(exc):
                raise
            raise NodeDown(f"cluster node {node.name}: {describe(exc)}") from exc

    async def _everywhere(
        self,
        command: bytes,
        args: tuple[Any, ...],
        timeout: float | None,  # noqa: ASYNC109
    ) -> Any:
        if command == b"SCRIPT" and args[:1] == (b"LOAD",):
            args = (b"LOAD", cluster_script(cast(bytes, args[1])))
        reply: Any = None
        for node in list(self._router.nodes.values()):
            pub = node.pub
            if node.up and pub is not None:
                try:
                    reply = await pub.create_request(command, *args, timeout=timeout)
                except Exception as exc:
                    if is_unexpected(exc):
                        raise
                    logger.debug("redis broker: %s on %s failed: %s", command, node.name, exc)
        return reply


def _fail(error: Exception, cause: BaseException | None = None) -> Coroutine[Any, Any, NoReturn]:
    async def fail() -> NoReturn:
        await trio.lowlevel.checkpoint()
        raise error from cause

    return fail()


class ClusterSub:
    """The subscription "connection" of a cluster session: ``SUBSCRIBE`` and
    ``UNSUBSCRIBE`` of each channel as ``SSUBSCRIBE`` and ``SUNSUBSCRIBE`` on its
    master; a channel whose master is down is reported unreachable to the channels."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def send_command(self, command: bytes, *args: Any) -> None:
        """Route ``SUBSCRIBE``/``UNSUBSCRIBE`` of ``args`` (channels) by slot."""
        sharded = b"SSUBSCRIBE" if command == b"SUBSCRIBE" else b"SUNSUBSCRIBE"
        router = self._router
        for channel in cast("tuple[bytes, ...]", args):
            node = router.live(channel)
            sent = False
            if node is not None and node.sub is not None:
                try:
                    node.sub.send_command(sharded, channel)
                    sent = True
                except Exception as exc:
                    if is_unexpected(exc):
                        raise
            if not sent and sharded == b"SSUBSCRIBE":
                router.channels.unreachable(channel)


async def _read_slots(
    settings: Settings, seeds: list[tuple[str, int]], options: dict[str, Any]
) -> SlotMap:
    """The slot map, from the first seed that answers."""
    from coredis.connection import ClusterConnection, TCPLocation

    errors: list[str] = []
    for host, port in random.sample(seeds, len(seeds)):
        connection = ClusterConnection(
            TCPLocation(host, port), connect_timeout=settings.timeout, **options
        )
        try:
            with trio.fail_after(settings.timeout):
                async with trio.open_nursery() as nursery:
                    await nursery.start(connection.run)
                    reply = await connection.create_request(b"CLUSTER", b"SLOTS")
                    nursery.cancel_scope.cancel()
            slot_map = parse_slots(reply)
            if slot_map:
                return slot_map
            errors.append(f"{host}:{port}: no slots assigned")
        except Exception as exc:
            if is_unexpected(exc):
                raise
            errors.append(f"{host}:{port}: {describe(exc)}")
    raise ConnectionLost("no cluster node gave its slots (" + "; ".join(errors) + ")")


class ClusterSession(Session):
    """A :class:`Session` on a Redis Cluster: the slot map, then one connection loop per
    master, until the map changes."""

    def __init__(
        self,
        settings: Settings,
        stats: RedisBrokerStats,
        link: Link,
        channels: Channels,
        inbound: Inbound,
        outbound: Outbound,
        wanted: Callable[[], list[str]],
        control: Control,
        continuity: Continuity,
        recoveries: Recoveries,
    ) -> None:
        super().__init__(
            settings, stats, link, channels, inbound, outbound, wanted, control, continuity
        )
        self._recoveries = recoveries
        self._seeds, self._options = parse_cluster_url(settings.url)
        self._router: Router | None = None
        self._connected_before = False
        inbound.on_unsubscribed = self._unsubscribed

    def _prepare(self) -> None:
        pass  # the seeds were parsed at construction

    def _unsubscribed(self, channel: bytes) -> None:
        """Redis ended a sharded subscription we hold (its slot moved)."""
        router = self._router
        if router is not None:
            self._channels.unreachable(channel)
            router.suspect()

    async def _session(self, connected: Callable[[], None]) -> None:
        settings, link, stats = self._settings, self._link, self._stats
        slot_map = await _read_slots(settings, self._seeds, self._options)
        router = self._router = Router(slot_map, self._channels)
        if self._connected_before:
            for node in router.nodes.values():
                node.gap = True  # the last session's subscriptions ended
        link.router = router
        link.sub = router.sub
        link.pub = router.pub
        try:
            async with trio.open_nursery() as nursery:
                for node in router.nodes.values():
                    nursery.start_soon(self._node_loop, router, node)
                with trio.move_on_after(2 * settings.timeout):
                    await router.settled.wait()
                if not any(node.up for node in router.nodes.values()):
                    raise ConnectionLost("no cluster master reachable")
                nursery.start_soon(self._outbound.sender, router.pub)
                nursery.start_soon(self._watch, router, slot_map)
                link.state = "connected"
                stats.connects += 1
                up = sum(node.up for node in router.nodes.values())
                logger.info(
                    "redis broker: connected to the Redis Cluster at %s (%d of %d masters up, "
                    "origin %s)",
                    settings.safe_url,
                    up,
                    len(router.nodes),
                    self._outbound.origin.decode(),
                )
                self._down_since = None
                self._connected_before = True
                connected()
                await router.changed.wait()
                raise ConnectionLost("the cluster's slot map changed")
        finally:
            link.router = None
            self._router = None

    async def _watch(self, router: Router, slot_map: SlotMap) -> None:
        """Read the map again when something says it moved, and every few seconds while
        a master is down (a failover promotes a replica elsewhere)."""
        settings = self._settings
        while True:
            down = any(not node.up for node in router.nodes.values())
            with trio.move_on_after(max(1.0, settings.base_delay * 10) if down else 60.0):
                await router.stale.wait()
            router.stale = trio.Event()
            try:
                current = await _read_slots(settings, self._known(router), self._options)
            except Exception as exc:
                if is_unexpected(exc):
                    raise
                continue
            if current != slot_map:
                router.changed.set()
                return

    def _known(self, router: Router) -> list[tuple[str, int]]:
        up = [(n.host, n.port) for n in router.nodes.values() if n.up]
        return up or self._seeds

    async def _node_loop(self, router: Router, node: Node) -> None:
        settings, stats = self._settings, self._stats
        attempt = 0
        while True:
            error: Exception | None = None
            try:
                await self._node_session(router, node)
            except Exception as exc:
                error = exc
            was_up = node.up
            node.up = False
            node.sub = node.pub = None
            router.lost(node)
            router.tried(node)
            if was_up:
                attempt = 0
                node.gap = True
                stats.disconnects += 1
                router.suspect()
                logger.warning(
                    "redis broker: lost the cluster node %s (%s); reconnecting, its topics' "
                    "publications meanwhile do not reach other processes",
                    node.name,
                    describe(error),
                    exc_info=error if is_unexpected(error) else None,
                )
            elif attempt == 0:
                logger.warning(
                    "redis broker: cannot connect to the cluster node %s (%s); retrying",
                    node.name,
                    describe(error),
                    exc_info=error if is_unexpected(error) else None,
                )
            delay = min(settings.max_delay, settings.base_delay * 2**attempt)
            attempt = min(attempt + 1, 32)
            await trio.sleep(delay * random.uniform(0.5, 1.0))

    async def _node_session(self, router: Router, node: Node) -> None:
        import anyio
        from coredis.connection import ClusterConnection, TCPLocation

        settings = self._settings
        location = TCPLocation(node.host, node.port)

        async def open_one(
            nursery: trio.Nursery, budget: Any, subscribing: bool
        ) -> BaseConnection:
            connection = ClusterConnection(
                location,
                connect_timeout=settings.timeout,
                processing_budget=budget,
                **self._options,
            )
            if subscribing:
                self._inbound.attach(connection)

            async def hold(*, task_status: trio.TaskStatus[None]) -> None:
                await connection.run(task_status=task_status)
                raise ConnectionLost(f"connection closed by the cluster node {node.name}")

            await nursery.start(hold)
            return connection

        async with trio.open_nursery() as nursery:
            with trio.fail_after(settings.timeout):
                gate = anyio.CapacityLimiter(1)
                sub = await open_one(nursery, gate, True)
                pub = await open_one(nursery, anyio.CapacityLimiter(1), False)
                if settings.policy is not None:
                    for _, script in SCRIPTS:
                        await pub.create_request(
                            b"SCRIPT", b"LOAD", cluster_script(script), timeout=settings.timeout
                        )
            node.sub, node.pub = sub, pub
            nursery.start_soon(self._inbound.drain, sub, gate)
            node.up = True
            channel = settings.channel
            topics = [t for t in self._wanted() if router.owner(channel(t)) is node]
            # Topics to catch up are held (live publications buffered) from before their
            # subscription is made again: none is delivered past the gap first.
            held = self._hold(topics) if node.gap else []
            try:
                await self._subscribe(router, node, sub, topics)
            except BaseException:
                for topic, _, _, group in held:
                    self._recoveries.unhold(topic, group)
                raise
            router.tried(node)
            if node.gap:
                node.gap = False
                logger.info(
                    "redis broker: the cluster node %s is back, %d topics resubscribed",
                    node.name,
                    len(topics),
                )
                nursery.start_soon(self._catch_up, held)
            nursery.start_soon(self._ping, sub)

    async def _subscribe(
        self, router: Router, node: Node, sub: BaseConnection, topics: list[str]
    ) -> None:
        """Subscribe ``topics`` (and the control channel if it is ``node``'s) on the
        node's new connection ``sub``, and wait until Redis acknowledges them."""
        settings = self._settings
        waiters = self._channels.subscribe(topics)
        control = settings.control_channel
        if self._control.handler is not None and router.owner(control) is node:
            waiters += self._channels.subscribe_control()
        with trio.fail_after(settings.timeout + len(topics) / 10_000):
            for event in waiters:
                await event.wait()
        if not node.up or node.sub is not sub:
            raise ConnectionLost("subscription connection lost")

    def _hold(self, topics: list[str]) -> list[_Held]:
        """The subscriptions of ``topics`` had a gap: hold the local subscribers of each
        topic with history that delivered something here, with its last position."""
        delivered = self._inbound.delivered
        held: list[_Held] = []
        for topic in topics:
            history = self._settings.history_for(topic)
            last = delivered.get(topic)
            if history is not None and last is not None:
                group = self._recoveries.hold(topic)
                if group:
                    held.append((topic, history, Position(*last), group))
        return held

    async def _catch_up(self, held: list[_Held]) -> None:
        """Catch the held topics up, one after the other (each held until its turn)."""
        for index, (topic, history, since, group) in enumerate(held):
            try:
                await self._recoveries.catch_up(topic, history, since, group)
            except BaseException:
                for later, _, _, waiting in held[index + 1 :]:
                    self._recoveries.unhold(later, waiting)
                raise

    async def _ping(self, sub: BaseConnection) -> None:
        """Check the node's subscription connection every ``health_check_interval``."""
        settings = self._settings
        while True:
            await trio.sleep(settings.health_interval)
            with trio.fail_after(settings.timeout):
                await sub.create_request(b"PING")


class _OnceCluster:
    """What a broker that is not running needs of a cluster client for one call."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def publish(self, channel: bytes, payload: bytes) -> int:
        return int(await self._client.spublish(channel, payload))

    async def eval(self, script: bytes, keys: tuple[bytes, ...], args: tuple[bytes, ...]) -> Any:
        return await self._client.eval(cluster_script(script), keys, args)


def cluster_once_client(settings: Settings) -> tuple[Any, Callable[[Any], Any]]:
    """A coredis ``RedisCluster`` for ``settings``' URL (to use with ``async with``) and
    the wrapper that gives it the single-Redis calls ``once`` makes."""
    from coredis import RedisCluster
    from coredis.retry import NoRetryPolicy

    seeds, options = parse_cluster_url(settings.url)
    client = RedisCluster(
        startup_nodes=[{"host": host, "port": port} for host, port in seeds],
        retry_policy=NoRetryPolicy(),
        connect_timeout=settings.timeout,
        stream_timeout=settings.timeout,
        **options,
    )
    return client, _OnceCluster
