"""Presence kept in memory, for :class:`~trio_wsroutes.MemoryBroker`: per topic, every
connection's member, the listed ones, and each user's number of connections."""

from __future__ import annotations

import orjson

from .._flow import MemoryBudget
from .._presence import (
    OverCapLog,
    PresenceEntry,
    PresenceMember,
    PresencePolicy,
    PresenceStats,
)

__all__ = ["PresenceStore"]


class _Topic:
    __slots__ = ("listed", "members", "users")

    def __init__(self) -> None:
        self.members: dict[str, PresenceMember] = {}
        """Every connection in the topic, listed or not, by id."""
        self.listed = 0
        self.users: dict[str, int] = {}
        """Connections per user key."""


class PresenceStore:
    """The entries of one process's topics. Joins and leaves answer whether the user
    came or went (for once-per-user events); the bytes held count in the budget."""

    def __init__(self, policy: PresencePolicy, budget: MemoryBudget | None) -> None:
        self.policy = policy
        self._budget = budget
        self._topics: dict[str, _Topic] = {}
        self._over_cap = OverCapLog()
        self.bytes = 0
        """Bytes held by every entry (counted in the budget when there is one)."""

    def use_budget(self, budget: MemoryBudget) -> None:
        """Count the bytes held in ``budget`` from now on (and those held already)."""
        if self._budget is None:
            budget.take(self.bytes)
        self._budget = budget

    def join(self, topic: str, member: PresenceMember) -> bool:
        """Add ``member`` to ``topic``; whether its user was not there before. A
        connection already there is left as it is (``False``)."""
        presence = self.policy.match(topic)
        if presence is None:
            return False
        entries = self._topics.get(topic)
        if entries is None:
            entries = self._topics[topic] = _Topic()
        if member.connection_id in entries.members:
            return False
        entries.members[member.connection_id] = member
        if entries.listed < presence.max_entries:
            member.listed = True
            entries.listed += 1
        else:
            self._over_cap.note(topic, presence)
        count = entries.users.get(member.user_key, 0)
        entries.users[member.user_key] = count + 1
        size = member.size
        self.bytes += size
        if self._budget is not None:
            self._budget.take(size)
        return count == 0

    def leave(self, topic: str, connection_id: str) -> PresenceMember | None:
        """Remove the connection from ``topic``: its member if it was its user's last
        connection there, else ``None``."""
        entries = self._topics.get(topic)
        if entries is None:
            return None
        member = entries.members.pop(connection_id, None)
        if member is None:
            return None
        if member.listed:
            entries.listed -= 1
        size = member.size
        self.bytes -= size
        if self._budget is not None:
            self._budget.release(size)
        users = entries.users
        count = users[member.user_key] - 1
        if count:
            users[member.user_key] = count
            return None
        del users[member.user_key]
        if not entries.members:
            del self._topics[topic]
        return member

    def entries(self, topic: str) -> list[PresenceEntry]:
        """The listed connections of ``topic``, in the order they joined."""
        entries = self._topics.get(topic)
        if entries is None:
            return []
        return [
            PresenceEntry(member.connection_id, member.user_id, orjson.loads(member.info))
            for member in entries.members.values()
            if member.listed
        ]

    def stats(self, topic: str) -> PresenceStats:
        """Connections and distinct users in ``topic``."""
        entries = self._topics.get(topic)
        if entries is None:
            return PresenceStats(0, 0)
        return PresenceStats(len(entries.members), len(entries.users))

    def __len__(self) -> int:
        """Topics with someone in them."""
        return len(self._topics)
