"""Acting on a user's connections, in every process: ``server.disconnect(user=...)``,
``server.subscribe(user=..., topic=...)`` and ``server.unsubscribe(...)``.

The server acts on its own connections at once (found by user id in the registry), then
hands the command to its broker, which carries it to the other processes
(:class:`~trio_wsroutes.RedisBroker`'s control channel), whose servers act on theirs
through :meth:`Users.apply`. With :class:`~trio_wsroutes.MemoryBroker`, or any broker
without ``publish_control``, the process is the whole deployment.
"""

from __future__ import annotations

import logging
from typing import Any

from ._broker import Broker
from ._broker._control import MAX_CONTROL_TOPIC, UserCommand, check_close, check_user_id
from ._containment import must_propagate
from ._engine import Connection, ConnectionClosed, close_now, subscribe_by_server
from ._errors import MessageError
from ._registry import ConnectionRegistry

__all__ = ["Users"]

logger = logging.getLogger("trio_wsroutes")


class Users:
    """What ``server.disconnect``, ``server.subscribe`` and ``server.unsubscribe`` do."""

    def __init__(self, registry: ConnectionRegistry, broker: Broker) -> None:
        self._registry = registry
        self._broker = broker
        configure = getattr(broker, "configure_control", None)
        if configure is not None:
            configure(self.apply)

    async def disconnect(self, user: object, code: int, reason: str) -> int:
        """Close ``user``'s connections here, and ask the other processes to; how many
        were closed here."""
        user_id = check_user_id(user)
        check_close(code, reason)
        closed = self._disconnect_here(user_id, code, reason)
        await self._tell_others(UserCommand("disconnect", user_id, code=code, reason=reason))
        return closed

    async def subscribe(self, user: object, topic: str) -> int:
        """Subscribe ``user``'s connections to ``topic`` here and everywhere; how many
        were subscribed here."""
        user_id = check_user_id(user)
        _check_topic(topic)
        done = await self._subscribe_here(user_id, topic)
        await self._tell_others(UserCommand("subscribe", user_id, topic=topic))
        return done

    async def unsubscribe(self, user: object, topic: str) -> int:
        """Unsubscribe ``user``'s connections from ``topic`` here and everywhere; how many
        were subscribed here."""
        user_id = check_user_id(user)
        _check_topic(topic)
        done = await self._unsubscribe_here(user_id, topic)
        await self._tell_others(UserCommand("unsubscribe", user_id, topic=topic))
        return done

    async def apply(self, command: UserCommand) -> None:
        """Carry out a command another process sent (the broker calls it)."""
        if command.op == "disconnect":
            self._disconnect_here(command.user, command.code, command.reason)
        elif command.op == "subscribe":
            await self._subscribe_here(command.user, command.topic)
        else:
            await self._unsubscribe_here(command.user, command.topic)

    # -- here ---------------------------------------------------------------------------

    def _disconnect_here(self, user_id: str | int, code: int, reason: str) -> int:
        connections = [c for c in self._registry.by_user_id(user_id) if not c.closed]
        for connection in connections:
            # At once: what is queued for a user being shown the door is dropped.
            close_now(connection, code, reason)
        if connections:
            logger.info(
                "disconnected %d connections of user %r (%d)", len(connections), user_id, code
            )
        return len(connections)

    async def _subscribe_here(self, user_id: str | int, topic: str) -> int:
        done = 0
        for connection in self._registry.by_user_id(user_id):
            if await _quietly(connection, subscribe_by_server(connection, topic), topic):
                done += 1
        return done

    async def _unsubscribe_here(self, user_id: str | int, topic: str) -> int:
        done = 0
        for connection in self._registry.by_user_id(user_id):
            if topic in connection.topics and await _quietly(
                connection, connection.unsubscribe(topic), topic
            ):
                done += 1
        return done

    async def _tell_others(self, command: UserCommand) -> None:
        publish = getattr(self._broker, "publish_control", None)
        if publish is None:
            return
        try:
            await publish(command)
        except ConnectionError as exc:
            logger.warning("could not tell the other processes to %s: %s", command.op, exc)


async def _quietly(connection: Connection[Any], call: Any, topic: str) -> bool:
    """Await ``call`` on ``connection``; ``False`` (logged) when it cannot be done: the
    connection closed, or a limit refused the topic."""
    try:
        await call
    except ConnectionClosed:
        return False
    except MessageError as exc:
        logger.warning(
            "%s: no change to its %r subscription: %s", connection.id, topic, exc.message
        )
        return False
    except BaseException as exc:
        if must_propagate(exc):
            raise
        logger.exception("%s: changing its %r subscription failed", connection.id, topic)
        return False
    return True


def _check_topic(topic: object) -> None:
    if not isinstance(topic, str):
        raise TypeError("topic is a str")
    if not 0 < len(topic) <= MAX_CONTROL_TOPIC:
        raise ValueError(f"topic is 1 to {MAX_CONTROL_TOPIC} characters")
