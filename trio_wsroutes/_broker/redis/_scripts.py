"""The Lua scripts of :class:`~trio_wsroutes.RedisBroker`'s history, their arguments, and
the checked, paged reading of their replies.

Two keys per topic (one cluster slot, by the hash tag)::

    <prefix>h:{<topic>}:m   a hash: e (the epoch), o (the last offset), b (the bytes of the
                            kept payloads); with a secret, c (``<origin> <seq>`` of the
                            publication at o) and w (``<origin> <until, ms>``: the
                            publisher whose turn it is, after a refusal)
    <prefix>h:{<topic>}:l   a stream of the kept publications, entry id <offset>-0, fields
                            t (Redis time, ms), p (the payload), s (``<origin> <seq>
                            <signature>``, with a secret)

Only a publication creates them; a read never writes. Reads page: one reply carries at
most :data:`READ_BUDGET` bytes of payloads (or one entry, when it is larger), and an entry
over the reader's ``max_message_size`` is refused inside Redis, so it never reaches the
reading process. The scripts need Redis 6.2 or later (exclusive ranges).
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import trio

from ..._history import History, Position, new_epoch
from ._wire import entry_problem

if TYPE_CHECKING:
    from ._common import Requests

__all__ = [
    "PUBLISH_SCRIPT",
    "PUBLISH_SHA",
    "READ_BUDGET",
    "READ_SCRIPT",
    "READ_SHA",
    "SCRIPTS",
    "HistoryRead",
    "evalsha",
    "load_scripts",
    "publish_args",
]

READ_BUDGET: Final = 4 * 1024 * 1024
"""Payload bytes one history read returns at most (a larger entry comes alone)."""

# KEYS: meta hash, log stream. ARGV:
#  1 mode: 'a' (Redis assigns the position) or 'c' (checked: commit the proposed one)
#  2 epoch: for 'a' the epoch of a topic without one; for 'c' the proposed epoch
#  3 the proposed offset ('c')      4 '1' if the proposal starts the topic ('c')
#  5 '<origin> <seq>' expected in c, '' for any ('c')   6 '<origin> <seq>' of this one ('c')
#  7 size   8 max_bytes (0: none)   9 log ttl (ms)   10 meta ttl (ms)   11 channel
# 12 'a': the wire header up to the offset; 'c': the whole header line
# 13 'a': the payload up to the offset (envelope_head); 'c': the whole payload
# 14 '<origin> <seq> <signature>' ('' without a secret)
# 15 ms a publisher refused for its position has the topic to itself ('c')
# Returns {1, number of processes the PUBLISH reached}, or for a refused proposal
# {0, the epoch ('' if none), the last offset, ms left of another publisher's turn or 0}.
# A publisher refused for its position gets the next turn on the topic (w: '<origin>
# <until, ms>') unless another has it: until then only its proposals commit, so that a
# publisher whose proposals keep arriving late is not starved by one that keeps its
# pipeline full, and each turn commits a run of publications rather than one.
PUBLISH_SCRIPT: Final = b"""
local meta = redis.call('HMGET', KEYS[1], 'e', 'o', 'c', 'b', 'w')
local epoch = meta[1]
local last = tonumber(meta[2]) or 0
local checked = ARGV[1] == 'c'
if checked then
  local origin = string.match(ARGV[6], '^[^ ]*')
  local turn = nil
  local now = nil
  local expiry = 0
  if meta[5] then
    now = redis.call('TIME')
    now = now[1] * 1000 + math.floor(now[2] / 1000)
    local owner, ends = string.match(meta[5], '^([^ ]*) (%d+)$')
    expiry = tonumber(ends) or 0
    if owner and expiry > now then
      turn = owner
    end
  end
  if turn and turn ~= origin then
    return {0, epoch or '', last, expiry - now}
  end
  if not epoch then
    if ARGV[4] ~= '1' or ARGV[3] ~= '1' then
      return {0, '', 0, 0}
    end
    epoch = ARGV[2]
    last = 0
    redis.call('DEL', KEYS[2])
  elseif epoch ~= ARGV[2] or tonumber(ARGV[3]) ~= last + 1
      or (ARGV[5] ~= '' and meta[3] ~= ARGV[5]) then
    if not now then
      now = redis.call('TIME')
      now = now[1] * 1000 + math.floor(now[2] / 1000)
    end
    if not turn then
      redis.call('HSET', KEYS[1], 'w', origin .. ' ' .. string.format('%d', now + ARGV[15]))
    end
    return {0, epoch, last, 0}
  end
elseif not epoch then
  epoch = ARGV[2]
  last = 0
  redis.call('DEL', KEYS[2])
end
local id = string.format('%d', last + 1)
local payload, message
if checked then
  payload = ARGV[13]
  message = ARGV[12] .. payload
else
  payload = ARGV[13] .. id .. ',"epoch":' .. cjson.encode(epoch) .. '}'
  message = ARGV[12] .. id .. ' ' .. epoch .. '\\n' .. payload
end
local size = string.len(payload)
local most = tonumber(ARGV[8])
local count = redis.call('XLEN', KEYS[2])
local bytes = 0
if count > 0 then
  bytes = tonumber(meta[4]) or 0
end
if most > 0 and size > most then
  -- Too large to keep: numbered and published, and what came before is dropped, so
  -- the kept entries stay contiguous up to the last offset.
  if count > 0 then
    redis.call('DEL', KEYS[2])
  end
  bytes = 0
else
  local now = redis.call('TIME')
  local stamp = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
  if most == 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[7], id .. '-0',
      't', stamp, 'p', payload, 's', ARGV[14])
  else
    redis.call('XADD', KEYS[2], id .. '-0', 't', stamp, 'p', payload, 's', ARGV[14])
    count = count + 1
    bytes = bytes + size
    local size_limit = tonumber(ARGV[7])
    while count > size_limit or bytes > most do
      local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
      if not oldest then
        break
      end
      local fields = oldest[2]
      for i = 1, #fields - 1, 2 do
        if fields[i] == 'p' then
          bytes = bytes - string.len(fields[i + 1])
        end
      end
      redis.call('XDEL', KEYS[2], oldest[1])
      count = count - 1
    end
    if count <= 0 or bytes < 0 then
      bytes = 0
    end
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
if checked then
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', id, 'b', bytes, 'c', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', id, 'b', bytes)
end
redis.call('PEXPIRE', KEYS[1], ARGV[10])
local receivers = redis.call('PUBLISH', ARGV[11], message)
return {1, receivers}
"""

# KEYS: meta hash, log stream. ARGV:
#  1 the since epoch ('' for the latest entries)
#  2 the since offset; for the latest entries, read those before this offset (0: from
#    the newest)
#  3 limit (-1: none)   4 ttl (ms, 0: none)   5 the most publications after since (-1:
#    any)   6 the largest payload   7 payload bytes per reply
# Returns {epoch ('' if the topic has no history: nothing is created), the last offset,
#          status, entry id, payload, signature line ('' if none), ...}. Entries are in
# offset order after since, newest first for the latest ones. Status: 0 since cannot be
# honoured, 1 complete, 2 more than the most after since (no entries), 3 an entry over
# the largest payload (no entries), 4 more to read (the reply is full).
READ_SCRIPT: Final = b"""
local meta = redis.call('HMGET', KEYS[1], 'e', 'o')
local epoch = meta[1]
if not epoch then
  return {'', 0, 0}
end
local last = tonumber(meta[2]) or 0
local out = {epoch, last, 1}
local limit = tonumber(ARGV[3])
local oldest = 0
if ARGV[4] ~= '0' then
  local now = redis.call('TIME')
  oldest = now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ARGV[4])
end
local largest = tonumber(ARGV[6])
local budget = tonumber(ARGV[7])
local used = 0
local got = 0
local function field(fields, name)
  for i = 1, #fields - 1, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end
local function stamp(entry)
  return tonumber(field(entry[2], 't') or '0') or 0
end
-- Adds an entry to out, or sets the status and returns false.
local function take(entry)
  local p = field(entry[2], 'p') or ''
  local size = string.len(p)
  if size > largest then
    out = {epoch, last, 3}
    return false
  end
  if got > 0 and used + size > budget then
    out[3] = 4
    return false
  end
  used = used + size
  got = got + 1
  out[#out + 1] = entry[1]
  out[#out + 1] = p
  out[#out + 1] = field(entry[2], 's') or ''
  return true
end
if ARGV[1] == '' then
  local stop = '+'
  if ARGV[2] ~= '0' then
    stop = '(' .. ARGV[2] .. '-0'
  end
  while limit < 0 or got < limit do
    local chunk = 16
    if limit >= 0 and limit - got < chunk then
      chunk = limit - got
    end
    local entries = redis.call('XREVRANGE', KEYS[2], stop, '-', 'COUNT', chunk)
    if #entries == 0 then
      break
    end
    for i = 1, #entries do
      if stamp(entries[i]) < oldest or not take(entries[i]) then
        return out
      end
      stop = '(' .. entries[i][1]
    end
  end
  return out
end
local since = tonumber(ARGV[2])
if ARGV[1] ~= epoch or since > last then
  out[3] = 0
  return out
end
if since == last then
  return out
end
local most = tonumber(ARGV[5])
if most >= 0 and last - since > most then
  out[3] = 2
  return out
end
local want = last - since
if limit >= 0 and limit < want then
  want = limit
end
local start = string.format('%d', since + 1)
local first = start .. '-0'
local stop = string.format('%d', last)
while got < want do
  local chunk = want - got
  if chunk > 16 then
    chunk = 16
  end
  local entries = redis.call('XRANGE', KEYS[2], start, stop, 'COUNT', chunk)
  if #entries == 0 then
    break
  end
  for i = 1, #entries do
    local entry = entries[i]
    if first then
      if entry[1] ~= first or stamp(entry) < oldest then
        out[3] = 0
        return out
      end
      first = nil
    end
    if not take(entry) then
      return out
    end
    start = '(' .. entry[1]
  end
end
if first then
  out[3] = 0
end
return out
"""
PUBLISH_SHA: Final = hashlib.sha1(PUBLISH_SCRIPT).hexdigest().encode()
READ_SHA: Final = hashlib.sha1(READ_SCRIPT).hexdigest().encode()
SCRIPTS: Final = ((PUBLISH_SHA, PUBLISH_SCRIPT), (READ_SHA, READ_SCRIPT))


async def load_scripts(pub: Requests, timeout: float) -> None:  # noqa: ASYNC109
    """Load both scripts on the connection ``pub`` (coredis), so that ``EVALSHA`` finds
    them."""
    for _, script in SCRIPTS:
        await pub.create_request(b"SCRIPT", b"LOAD", script, timeout=timeout)


async def evalsha(
    pub: Requests,
    sha: bytes,
    keys: tuple[bytes, ...],
    args: tuple[bytes, ...],
    timeout: float,  # noqa: ASYNC109  # coredis' per-request timeout too
) -> Any:
    """Run the loaded script ``sha`` on ``pub`` (loading the scripts again if Redis lost
    them), within ``timeout``."""
    from coredis.exceptions import NoScriptError

    with trio.fail_after(timeout):
        try:
            return await pub.create_request(
                b"EVALSHA", sha, len(keys), *keys, *args, timeout=timeout
            )
        except NoScriptError:  # Redis lost its scripts (SCRIPT FLUSH): load them again
            await load_scripts(pub, timeout)
            return await pub.create_request(
                b"EVALSHA", sha, len(keys), *keys, *args, timeout=timeout
            )


def publish_args(
    history: History,
    *,
    log_ttl_ms: int,
    meta_ttl_ms: int,
    channel: bytes,
    header: bytes,
    payload: bytes,
    signed: bytes = b"",
    proposal: tuple[bytes, int, bool, bytes, bytes] | None = None,
    turn_ms: int = 0,
) -> tuple[bytes, ...]:
    """The ``ARGV`` of :data:`PUBLISH_SCRIPT`. Without ``proposal`` Redis assigns the
    position (``header`` and ``payload`` stop before the offset); with one, ``(epoch,
    offset, new topic, expected committer, committer)``, the script commits that
    position or refuses (``header`` and ``payload`` are whole) and gives the refused
    publication the topic's next turn for ``turn_ms``."""
    if proposal is None:
        mode, epoch, offset, new, expected, committer = b"a", new_epoch().encode(), 0, 0, b"", b""
    else:
        mode = b"c"
        epoch, offset, fresh, expected, committer = proposal
        new = 1 if fresh else 0
    return (
        mode,
        epoch,
        b"%d" % offset,
        b"%d" % new,
        expected,
        committer,
        b"%d" % history.size,
        b"%d" % (history.max_bytes or 0),
        b"%d" % log_ttl_ms,
        b"%d" % meta_ttl_ms,
        channel,
        header,
        payload,
        signed,
        b"%d" % turn_ms,
    )


Outcome = Literal["more", "done", "none", "unreachable", "capped", "failed"]
"""What one reply did to a :class:`HistoryRead`: ``more`` (read again), ``done``, ``none``
(the topic has no history), ``unreachable`` (another epoch, not reaching back),
``capped`` (more publications than allowed), ``failed`` (an entry failed its checks:
:attr:`HistoryRead.problem` names the stats counter)."""


class HistoryRead:
    """One read of a topic's history, in as many bounded replies as it takes: builds each
    read's ``ARGV`` and checks each reply.

    Every entry is checked as a message from the channel is (size, position, UTF-8,
    signature), and together they must be one contiguous run of offsets: after ``since``
    up to the last offset in the topic's meta when it was read (or ``limit`` of them);
    without ``since``, the newest ones down from the last offset. An entry deleted,
    duplicated or moved in Redis fails the read (``history_gaps``): never a silent gap.
    """

    def __init__(
        self,
        channel: bytes,
        history: History,
        since: Position | None,
        limit: int | None,
        *,
        secret: bytes | None,
        max_message_size: int,
        cap: int | None = None,
    ) -> None:
        self.channel = channel
        self.since = since
        self.limit = limit
        self.secret = secret
        self.max_message_size = max_message_size
        self.cap = cap
        self.max_total = history.max_bytes
        self.ttl_ms = 0 if history.ttl is None else max(1, math.ceil(history.ttl * 1000))
        self.epoch: str | None = None
        self.last = 0
        """The topic's last offset in the latest reply."""
        self.offsets: list[int] = []
        self.payloads: list[bytes] = []
        """Oldest first after ``since``; newest first without it."""
        self.bytes = 0
        self.problem: str | None = None
        self._next = 0 if since is None else since.offset
        """After ``since``: the offset read up to; without: the oldest one read (0: none)."""

    def args(self) -> tuple[bytes, ...]:
        """The ``ARGV`` of the next read."""
        remaining = -1 if self.limit is None else self.limit - len(self.payloads)
        since = self.since
        if since is None:
            epoch, cap = b"", -1
        else:
            epoch = since.epoch.encode()
            cap = -1 if self.cap is None else self.cap - (self._next - since.offset)
        return (
            epoch,
            b"%d" % self._next,
            b"%d" % remaining,
            b"%d" % self.ttl_ms,
            b"%d" % cap,
            b"%d" % self.max_message_size,
            b"%d" % READ_BUDGET,
        )

    def take(self, reply: Any) -> Outcome:
        """Check one reply of :data:`READ_SCRIPT` and keep its entries."""
        items = cast("list[Any]", reply)
        raw_epoch = items[0]
        epoch = raw_epoch.decode() if isinstance(raw_epoch, bytes) else str(raw_epoch)
        if not epoch:
            return "none" if self.epoch is None else "unreachable"
        if self.epoch is not None and epoch != self.epoch:
            return "unreachable"  # the history was lost between two reads
        first_reply = self.epoch is None
        self.epoch = epoch
        last, status = int(items[1]), int(items[2])
        forward = self.since is not None
        if forward or first_reply:
            # Without since, the entries end at the first reply's last offset.
            self.last = last
        if status == 0:
            return "unreachable"
        if status == 2:
            return "capped"
        if status == 3:
            return self._fail("oversized")
        epoch_json = epoch.encode()
        if not forward and first_reply:
            self._next = last + 1
        for i in range(3, len(items) - 2, 3):
            offset = self._next + 1 if forward else self._next - 1
            if bytes(items[i]) != b"%d-0" % offset:
                return self._fail("history_gaps")
            payload = bytes(items[i + 1])
            problem = entry_problem(
                self.secret,
                self.channel,
                epoch_json,
                offset,
                payload,
                bytes(items[i + 2]),
                self.max_message_size,
            )
            if problem is not None:
                return self._fail(problem)
            self.bytes += len(payload)
            if self.max_total is not None and self.bytes > self.max_total:
                # More than the topic keeps: not what its publishers wrote.
                return self._fail("oversized")
            self.offsets.append(offset)
            self.payloads.append(payload)
            self._next = offset
        if status == 4:
            return "more" if len(items) > 3 else self._fail("malformed")
        if forward:
            assert self.since is not None
            end = last
            if self.limit is not None:
                end = min(last, self.since.offset + self.limit)
            if self._next != end:
                return self._fail("history_gaps")  # entries missing at the end
        return "done"

    def _fail(self, problem: str) -> Outcome:
        self.problem = problem
        self.offsets.clear()
        self.payloads.clear()
        return "failed"

    def publications(self) -> list[tuple[int, bytes]]:
        """``(offset, payload)`` of what was read, oldest first."""
        pairs = list(zip(self.offsets, self.payloads, strict=True))
        if self.since is None:
            pairs.reverse()
        return pairs
