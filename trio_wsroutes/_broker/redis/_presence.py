"""Presence in Redis, for :class:`~trio_wsroutes.RedisBroker`: entries that expire unless
their process refreshes them (Redis 7.0 has no per-field hash expiry, so a sorted set by
expiry stands beside the hash).

Three keys per topic, one cluster slot by the hash tag::

    <prefix>presence:{<topic>}        a hash: connection id -> [user_id, info] (JSON),
                                      the listed connections (at most max_entries)
    <prefix>presence-exp:{<topic>}    a sorted set: "<connection id> <user key>" scored
                                      by its expiry (Redis time, ms), every connection
    <prefix>presence-users:{<topic>}  a hash: user key -> its connections in the topic

A user key is the user id as JSON, or ``#<connection id>`` for a connection without one.
Three Lua scripts keep them consistent, each atomic: *sync* (sweep what expired, then add
or refresh connections; says for each whether it was added and whether its user is new
in the topic), *leave* (remove one; says whether it was its user's last) and *read*
(sweep, then count or list). A sweep returns the users whose last connection expired, so
that one process, the one that swept, sends their leave event.

Each process refreshes its own entries every ``ttl / 4`` seconds (one script call per
topic and 500 connections, pipelined) and sweeps those topics at the same time; an entry
lives ``3/4 * ttl`` past its last refresh, so the users of a process that died have left
(events sent) at most ``ttl`` after it died. A refresh re-adds an entry that Redis lost (a
restart, an outage it outlived) without an event; a join that could not reach Redis is
made by the next refresh, with its event. Every key expires ``ttl`` after the last write,
so a topic whose every process died leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, cast

import orjson
import trio

from ..._frames import Frame
from ..._presence import (
    PRESENCE_JOIN,
    PRESENCE_LEAVE,
    OverCapLog,
    Presence,
    PresenceEntry,
    PresenceMember,
    PresencePolicy,
    PresenceStats,
    decode_entry,
    event_frame,
    user_json,
)
from .._base import Subscriber
from ._common import (
    Link,
    NodeDown,
    RedisBrokerStats,
    Settings,
    describe,
    is_unexpected,
    logger,
    once,
)

if TYPE_CHECKING:
    from ._common import Requests

__all__ = ["READ_SCRIPT", "SYNC_SCRIPT", "RedisPresence"]

_BATCH: Final = 500
"""Connections per sync script call."""
_SWEEP_LIMIT: Final = 1000
"""Expired connections one script call removes at most (the next call goes on)."""
_MAX_PENDING_LEAVES: Final = 100_000
"""Leaves kept while Redis is unreachable, to send on reconnection (past it, the
entries expire on their own)."""
_TICK: Final = 0.25
"""Seconds between checks of the link (a reconnection syncs at once)."""

# Removes up to ARGV[sweep] expired connections; gone = {user key, entry or '', ...} for
# the users whose last connection expired.
_SWEEP: Final = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = {}
local function sweep(limit)
  if limit <= 0 then
    return
  end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
  for i = 1, #expired do
    local member = expired[i]
    redis.call('ZREM', KEYS[2], member)
    local cut = string.find(member, ' ', 1, true)
    if cut then
      local conn = string.sub(member, 1, cut - 1)
      local user = string.sub(member, cut + 1)
      local entry = redis.call('HGET', KEYS[1], conn)
      if entry then
        redis.call('HDEL', KEYS[1], conn)
      end
      if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
        redis.call('HDEL', KEYS[3], user)
        gone[#gone + 1] = user
        gone[#gone + 1] = entry or ''
      end
    end
  end
end
"""

# KEYS: entries, expiries, users. ARGV: 1 lifetime (ms), 2 max_entries, 3 key ttl (ms),
# 4 sweep limit (0: none), then (connection id, user key, entry) per connection.
# Returns {states, gone}: per connection 4 (added) + 2 (its user is new) + 1 (listed),
# or 0 when it was there already (refreshed).
SYNC_SCRIPT: Final = (
    _SWEEP
    + b"""
sweep(tonumber(ARGV[4]))
local states = {}
if #ARGV >= 7 then
  local expiry = now + tonumber(ARGV[1])
  local most = tonumber(ARGV[2])
  local size = redis.call('HLEN', KEYS[1])
  for i = 5, #ARGV - 2, 3 do
    local conn, user = ARGV[i], ARGV[i + 1]
    local state = 0
    if redis.call('ZADD', KEYS[2], expiry, conn .. ' ' .. user) == 1 then
      state = 4
      if redis.call('HINCRBY', KEYS[3], user, 1) == 1 then
        state = state + 2
      end
      if size < most then
        redis.call('HSET', KEYS[1], conn, ARGV[i + 2])
        size = size + 1
        state = state + 1
      end
    end
    states[#states + 1] = state
  end
  for k = 1, 3 do
    redis.call('PEXPIRE', KEYS[k], ARGV[3])
  end
end
return {states, gone}
"""
)

# KEYS: entries, expiries, users. ARGV: 1 connection id, 2 user key.
# Returns {1 if it was its user's last connection in the topic, its entry or ''}.
LEAVE_SCRIPT: Final = b"""
local removed = redis.call('ZREM', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if removed == 0 then
  return {0, ''}
end
if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[2])
  return {1, entry or ''}
end
return {0, ''}
"""

# KEYS: entries, expiries, users. ARGV: 1 'l' (list) or 's' (stats), 2 sweep limit.
# Returns {gone, connections, users[, connection id, entry, ...]}.
READ_SCRIPT: Final = (
    _SWEEP
    + b"""
sweep(tonumber(ARGV[2]))
local out = {gone, redis.call('ZCARD', KEYS[2]), redis.call('HLEN', KEYS[3])}
if ARGV[1] == 'l' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do
    out[#out + 1] = all[i]
  end
end
return out
"""
)

_SCRIPTS: Final = {
    name: (hashlib.sha1(script).hexdigest().encode(), script)
    for name, script in (("sync", SYNC_SCRIPT), ("leave", LEAVE_SCRIPT), ("read", READ_SCRIPT))
}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class RedisPresence:
    """One broker's presence: its own connections per topic (which it refreshes), the
    scripts, the sweeps, and the events they call for (sent with ``publish``)."""

    def __init__(
        self,
        settings: Settings,
        stats: RedisBrokerStats,
        link: Link,
        policy: PresencePolicy,
        publish: Callable[[str, Frame, Subscriber | None], Awaitable[int]],
    ) -> None:
        self.policy = policy
        self._settings = settings
        self._stats = stats
        self._link = link
        self._publish = publish
        self._local: dict[str, dict[str, PresenceMember]] = {}
        """Topic -> connection id -> member: this process's connections."""
        self._pending_leaves: deque[tuple[str, PresenceMember]] = deque()
        self._over_cap = OverCapLog()
        self._failing = False
        self.interval = policy.shortest_ttl / 4
        """Seconds between refreshes."""

    # -- keys and scripts ------------------------------------------------------------------

    def keys(self, topic: str) -> tuple[bytes, bytes, bytes]:
        """The three keys of ``topic``'s presence."""
        tag = self._settings.tag(topic).encode()  # one cluster slot for the three
        prefix = self._settings.prefix.encode()
        return (
            prefix + b"presence:" + tag,
            prefix + b"presence-exp:" + tag,
            prefix + b"presence-users:" + tag,
        )

    @staticmethod
    def _lifetimes(presence: Presence) -> tuple[bytes, bytes]:
        """An entry's lifetime past a refresh, and the keys' ttl, in ms (as ARGV)."""
        ttl_ms = max(4, math.ceil(presence.ttl * 1000))
        return b"%d" % (ttl_ms * 3 // 4), b"%d" % (ttl_ms * 2)

    async def _run(self, name: str, keys: tuple[bytes, ...], args: tuple[bytes, ...]) -> Any:
        """Run a script on the broker's connection (or a connection of its own when the
        broker is not running); raises what Redis or the network raise."""
        sha, script = _SCRIPTS[name]
        link, timeout = self._link, self._settings.timeout
        if not link.running:
            return await once(
                self._settings,
                self._stats,
                lambda client: client.eval(script, keys, args),
                what="read presence from",
            )
        pub = link.pub
        if pub is None or link.state != "connected":
            raise ConnectionError("Redis is not connected")
        return await _evalsha(pub, sha, script, keys, args, timeout)

    def _expected_failure(self, exc: BaseException, what: str) -> None:
        """Log a Redis failure once until the next success; re-raise a bug."""
        if is_unexpected(exc) and not isinstance(exc, ConnectionError):
            raise exc
        if not self._failing:
            self._failing = True
            logger.warning("redis broker: presence could not %s: %s", what, describe(exc))

    # -- joins and leaves ------------------------------------------------------------------

    async def join(self, topic: str, member: PresenceMember) -> None:
        """List ``member`` in ``topic``. Unreachable Redis: the next sync does it."""
        presence = self.policy.match(topic)
        if presence is None:
            await trio.lowlevel.checkpoint()
            return
        members = self._local.setdefault(topic, {})
        if member.connection_id in members:
            await trio.lowlevel.checkpoint()
            return
        members[member.connection_id] = member
        member.announced = not presence.events
        life, key_ttl = self._lifetimes(presence)
        args = (
            *(life, b"%d" % presence.max_entries, key_ttl, b"0"),
            *(member.connection_id.encode(), member.user_key.encode(), member.entry),
        )
        try:
            reply = await self._run("sync", self.keys(topic), args)
        except Exception as exc:
            self._expected_failure(exc, "list a connection")
            return
        self._failing = False
        states = cast("list[Any]", cast("list[Any]", reply)[0])
        await self._settle(topic, presence, [member], states)

    async def leave(self, topic: str, connection_id: str) -> None:
        """Unlist the connection from ``topic`` (idempotent); its user's leave event if
        it was the last connection. Unreachable Redis: tried again on reconnection."""
        members = self._local.get(topic)
        member = None if members is None else members.pop(connection_id, None)
        if members is not None and not members:
            del self._local[topic]
        if member is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._leave(topic, member)
        except Exception as exc:
            self._expected_failure(exc, "unlist a connection")
            if len(self._pending_leaves) < _MAX_PENDING_LEAVES:
                self._pending_leaves.append((topic, member))

    async def _leave(self, topic: str, member: PresenceMember) -> None:
        args = (member.connection_id.encode(), member.user_key.encode())
        reply = cast("list[Any]", await self._run("leave", self.keys(topic), args))
        self._failing = False
        presence = self.policy.match(topic)
        if int(reply[0]) == 1 and presence is not None and presence.events:
            await self._event(PRESENCE_LEAVE, topic, member.user_key, member.info)

    # -- reads -----------------------------------------------------------------------------

    async def entries(self, topic: str) -> list[PresenceEntry]:
        """The connections listed in ``topic``, expired ones swept first."""
        items = await self._read(topic, b"l")
        found: list[PresenceEntry] = []
        for i in range(3, len(items) - 1, 2):
            entry = decode_entry(_text(items[i]), _bytes(items[i + 1]))
            if entry is not None:
                found.append(entry)
        return found

    async def stats(self, topic: str) -> PresenceStats:
        """Connections and users in ``topic``, expired ones swept first: two counters."""
        items = await self._read(topic, b"s")
        return PresenceStats(int(items[1]), int(items[2]))

    async def _read(self, topic: str, mode: bytes) -> list[Any]:
        presence = self.policy.match(topic)
        if presence is None:
            raise ValueError(f"topic {topic!r} has no presence")
        reply = cast(
            "list[Any]", await self._run("read", self.keys(topic), (mode, b"%d" % _SWEEP_LIMIT))
        )
        await self._gone(topic, presence, cast("list[Any]", reply[0]))
        return reply

    # -- refreshing, sweeping, events ------------------------------------------------------

    async def maintain(self) -> None:
        """Refresh and sweep this process's topics every :attr:`interval` seconds and at
        once after a reconnection; send the leaves Redis missed. Runs with the broker."""
        link = self._link
        was_connected = False
        due = 0.0
        while True:
            connected = link.state == "connected"
            now = trio.current_time()
            if connected and (not was_connected or now >= due):
                due = now + self.interval
                try:
                    await self.sync()
                except Exception as exc:
                    self._expected_failure(exc, "refresh its entries")
                    connected = False  # sync again as soon as the link is back
            was_connected = connected
            await trio.sleep(min(_TICK, self.interval))

    async def sync(self) -> None:
        """Send the leaves that failed, then refresh (or re-add) every entry of this
        process and sweep its topics, in one pipeline."""
        pending = self._pending_leaves
        for _ in range(len(pending)):
            if self._link.state != "connected":
                break
            topic, member = pending[0]
            try:
                await self._leave(topic, member)
            except NodeDown:
                pending.rotate(-1)  # its cluster master is down: later
                continue
            pending.popleft()
        pub = self._link.pub
        if pub is None or self._link.state != "connected":
            raise ConnectionError("Redis is not connected")
        from coredis.exceptions import NoScriptError

        calls: list[tuple[str, Presence, list[PresenceMember], tuple[bytes, ...], Any]] = []
        timeout = self._settings.timeout
        sha, script = _SCRIPTS["sync"]
        for topic, members in list(self._local.items()):
            presence = self.policy.match(topic)
            if presence is None:
                continue
            life, key_ttl = self._lifetimes(presence)
            head = (life, b"%d" % presence.max_entries, key_ttl, b"%d" % _SWEEP_LIMIT)
            batch = list(members.values())
            for start in range(0, len(batch), _BATCH):
                chunk = batch[start : start + _BATCH]
                argv = list(head)
                for member in chunk:
                    argv += (member.connection_id.encode(), member.user_key.encode(), member.entry)
                request = pub.create_request(
                    b"EVALSHA", sha, b"3", *self.keys(topic), *argv, timeout=timeout
                )
                calls.append((topic, presence, chunk, tuple(argv), request))
        for topic, presence, chunk, args, request in calls:
            try:
                with trio.fail_after(timeout):
                    reply = cast("list[Any]", await request)
            except NoScriptError:  # Redis lost its scripts (a restart, SCRIPT FLUSH)
                reply = await _evalsha(pub, sha, script, self.keys(topic), args, timeout)
            except NodeDown:
                # On a cluster, this topic's master is down: the others are refreshed,
                # and the next sync after it is back lists these entries again.
                continue
            self._failing = False
            await self._gone(topic, presence, cast("list[Any]", reply[1]))
            await self._settle(topic, presence, chunk, cast("list[Any]", reply[0]))

    async def _settle(
        self, topic: str, presence: Presence, members: list[PresenceMember], states: list[Any]
    ) -> None:
        """Act on what a sync said of ``members``: the join events for users new in the
        topic, for members whose join was not decided yet."""
        for member, raw in zip(members, states, strict=False):
            state = int(raw)
            if not state & 4:
                continue  # there already: a refresh
            member.listed = bool(state & 1)
            if not member.listed:
                self._over_cap.note(topic, presence)
            if member.announced:
                continue  # re-added after Redis lost it: no event
            member.announced = True
            if state & 2 and presence.events:
                await self._event(
                    PRESENCE_JOIN, topic, member.user_key, member.info, member.subscriber
                )

    async def _gone(self, topic: str, presence: Presence, gone: list[Any]) -> None:
        """Leave events for the users a sweep found gone."""
        if not presence.events:
            return
        for i in range(0, len(gone) - 1, 2):
            user_key = _text(gone[i])
            entry = _bytes(gone[i + 1])
            info = b"null"
            if entry:
                decoded = decode_entry("", entry)
                if decoded is not None:
                    info = orjson.dumps(decoded.info)
            await self._event(PRESENCE_LEAVE, topic, user_key, info)

    async def _event(
        self,
        kind: str,
        topic: str,
        user_key: str,
        info: bytes,
        exclude: Subscriber | None = None,
    ) -> None:
        with_topic = self._settings.history_for(topic) is None
        frame = event_frame(kind, topic, user_json(user_key), info, with_topic=with_topic)
        await self._publish(topic, frame, exclude)

    @property
    def local_entries(self) -> int:
        """Connections of this process listed or counted, all topics together."""
        return sum(len(members) for members in self._local.values())


async def _evalsha(
    pub: Requests,
    sha: bytes,
    script: bytes,
    keys: tuple[bytes, ...],
    args: tuple[bytes, ...],
    timeout: float,  # noqa: ASYNC109  # coredis' per-request timeout too
) -> Any:
    """Run a script by its hash, loading it first if Redis does not have it."""
    from coredis.exceptions import NoScriptError

    with trio.fail_after(timeout):
        try:
            return await pub.create_request(
                b"EVALSHA", sha, b"%d" % len(keys), *keys, *args, timeout=timeout
            )
        except NoScriptError:
            await pub.create_request(b"SCRIPT", b"LOAD", script, timeout=timeout)
            return await pub.create_request(
                b"EVALSHA", sha, b"%d" % len(keys), *keys, *args, timeout=timeout
            )
