"""``RedisBroker``: topics shared by every process and host through Redis pub/sub.

::

    server = WebSocketServer([chat], broker=RedisBroker("redis://127.0.0.1:6379/0"))

Each process keeps its own subscribers in a :class:`~trio_wsroutes._broker._topics.TopicTable`
and holds two Redis connections: one subscribed to the channels of the topics that have a
local subscriber, one that publishes. A publish is delivered to local subscribers at once
(encoded once, slow-consumer policy) and queued for Redis; every other process receives it
from Redis and fans it out to its own subscribers. Delivery across processes is at most
once: nothing is retried, a gap is counted, nothing is duplicated (and on a topic with
history, a gap makes the subscribers resume from their positions, see ``_continuity.py``).

Wire format of a message on the Redis channel ``<channel_prefix><topic>``::

    wsr1 <kind> <origin> <seq>[ <signature>][ <extensions>]\n<payload>

    wsr1 h <origin> <seq>[ <signature>][ <extensions>] <offset> <epoch>\n<payload>

``kind`` is ``t`` (a WebSocket text frame; ``payload`` is UTF-8), ``b`` (binary) or ``h``
(a text frame with a history position, ``offset`` and ``epoch``, already spliced into the
payload); ``origin`` identifies the publishing broker (``<pid>-<hex>``, or ``-`` for none);
``seq`` numbers the origin's messages on that topic from 1 (``0`` for none). ``payload``
is the frame exactly as it goes to WebSocket clients. With a ``secret``, ``signature`` is
the hex HMAC-SHA256 of the kind, the channel, the origin, the seq and the payload, and
for ``h`` also of the epoch and the offset (the payload carries them too); a message
without a valid one is dropped. ``extensions`` are optional ``<name>=<value>`` fields:
``t=<ms>`` (the publish time, Unix ms), ``tp=<traceparent>`` and ``ts=<tracestate>``
(the publish span's W3C trace context, with tracing), unknown names skipped, and with a
``secret`` a last ``x=<hex HMAC-SHA256>`` over the signature and the fields before it; a
known field with a bad value is left out and counted (``extensions_ignored``). The
header is at most 1 024 bytes. Version 0.3 added the extensions: it accepts 0.2's
messages, but a 0.2 process drops every 0.3 message as malformed, so processes of both
versions cannot share Redis. (Version 0.2 signed ``h`` messages without their
position: a 0.2 process and this one, sharing a secret, drop each other's history
publications, so upgrade the processes of a deployment with history together.) A message
that does not start with ``wsr1 `` is delivered as a text frame when there is no secret,
so ``PUBLISH wsroutes:room:1 '{"type":"message",...}'`` works from any Redis client.
Every field is parsed strictly, and a message over ``max_message_size`` is dropped before
it is decoded; what is dropped is counted in :class:`RedisBrokerStats` and never reaches
a client or the sequence tracking.

History (topics matched by the history policy) lives in Redis, two keys per topic::

    <channel_prefix>h:{<topic>}:m   a hash: e (the epoch), o (the last offset), b (the
                                    bytes kept); with a secret, c (the ``<origin> <seq>``
                                    of the publication at o) and w (whose turn it is)
    <channel_prefix>h:{<topic>}:l   a stream of the kept publications, entry id <offset>-0,
                                    fields t (Redis time, ms), p (the payload) and s
                                    (``<origin> <seq> <signature>``, with a secret)

Only a publication creates them. One Lua script per publication numbers it, adds it to
the stream (trimming the oldest entries to ``size`` entries and ``max_bytes`` bytes; one
larger than ``max_bytes`` empties the stream instead), refreshes both keys' expiry and
``PUBLISH``-es it, atomically: offsets, the stream and the channel have one order for
every process. Without a secret Redis gives it the next offset; with one, the publisher
proposes the position it signed and the script commits it only if it is the next one
(see :class:`RedisBroker`). History needs Redis 6.2 or later.

On a Redis Cluster (``redis+cluster://``) the channel of topic ``t`` is
``<channel_prefix>{<t>}``, a sharded channel in the slot of the topic's keys (a topic that
is empty or holds a ``}`` is tagged ``{#<digest>}<t>`` instead, keys and channel alike),
and the history script publishes with ``SPUBLISH``.

The parts, one job each, composed by :class:`RedisBroker` (``broker.py``):

* ``_session.py``: holding the two connections, reconnecting, resubscribing;
* ``_cluster.py``: the same on a Redis Cluster: the slot map, a connection pair and a
  reconnection loop per master, the routing of each command to its slot's master, and
  the catch-up of topics with history after a gap in a master's subscription;
* ``_channels.py``: the channels subscribed, ``SUBSCRIBE``/``UNSUBSCRIBE`` and their
  acknowledgements;
* ``_inbound.py``: receiving, checking and queueing messages, and the local fan-out;
* ``_outbound.py``: publishing, the queue to Redis and its pipelining, the proposals;
* ``_recovery.py``: history reads, subscribers recovering, their buffers, the lagging;
* ``_continuity.py``: the last position delivered per topic with history, and a gap in
  it (or, after a reconnection, behind Redis) ending the subscribers that can resume;
* ``_control.py``: the control channel (``<channel_prefix>\\x00control``), which carries
  commands on a user's connections (``server.disconnect(user=...)`` and the like) to
  every process: its own strictly parsed, signed-with-a-secret message kind ``c``;
* ``_wire.py``, ``_scripts.py``, ``_positions.py``: the wire format, the Lua scripts and
  the positions a signing broker keeps; ``_common.py``: options, counters, errors.
"""

from ._common import RedisBrokerStats as RedisBrokerStats
from ._wire import WireMessage as WireMessage
from ._wire import authentic as _authentic  # noqa: F401  # pyright: ignore[reportUnusedImport]
from ._wire import decode_wire as decode_wire
from ._wire import encode_wire as encode_wire
from ._wire import sign as sign
from .broker import RedisBroker as RedisBroker

__all__ = [
    "RedisBroker",
    "RedisBrokerStats",
    "WireMessage",
    "decode_wire",
    "encode_wire",
    "sign",
]
