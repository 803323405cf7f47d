"""The server the generated client's runtime tests talk to (``tests/test_client_ts.py``).

One route with every kind of answer: a declared reply (``ping``), an ``ack`` (``note``),
a handler without a return annotation (``echo``: any message or an ack), a handler
error (``fail``), a late reply (``slow``), a frame of an undeclared type (``weird``),
publications on a topic with history (``shout``), and a dropped connection that misses
publications (``drop``). Tokens are read from the ``key`` query parameter.

``/beat`` has the envelope heartbeat: the server sends ``{"type": "ping"}`` and the
client must answer ``{"type": "pong"}``; the route's own ``pong`` handler answers that
with a ``beat``, so a test sees the client answer.

The hostile and refusing servers (``tests/test_attacks_clients.py`` has the Python
client's side): ``/proto`` names its client messages like ``Object.prototype``'s members;
``/many/{key}`` subscribes a connection to many topics with history (again on each
connection) and tells it which ``since`` values its upgrade named; ``/nosince`` refuses
any upgrade that names positions; ``/flap`` accepts and closes at once with 1012.

Users and tokens: ``kick`` on ``/rpc/...`` disconnects a user (3003); ``/expiring`` takes
tokens ``NAME:GENERATION:EXPIRY`` (UNIX seconds) that expire, asks for a new one halfway
(``token_refresh``), and tells a connection which token it holds now (``whoami``).
"""

from __future__ import annotations

import attrs
import trio

from trio_wsroutes import (
    Authenticated,
    Connection,
    Context,
    History,
    MessageError,
    Reject,
    Request,
    WebSocketServer,
    create_token_auth,
    create_websocket_route,
    message,
)


@attrs.frozen
class Ping:
    timestamp: float


@attrs.frozen
class Note:
    text: str


@attrs.frozen
class Fail:
    code: str


@attrs.frozen
class Echo:
    text: str
    reply: bool = True


@attrs.frozen
class Shout:
    text: str


@attrs.frozen
class Drop:
    """Leave the room, let ``missed`` publications happen there, then close with ``code``."""

    code: int = 1012
    missed: int = 0


@attrs.frozen
class Weird:
    pass


@attrs.frozen
class Slow:
    seconds: float


@message("hello")
@attrs.frozen
class Hello:
    user: str
    room: str


@message("pong")
@attrs.frozen
class Pong:
    timestamp: float


@message("echoed")
@attrs.frozen
class Echoed:
    text: str


@message("said")
@attrs.frozen
class Said:
    text: str
    by: str


def verify(token: str) -> str | None:
    return token.removeprefix("user-") if token.startswith("user-") else None


rpc = (
    create_websocket_route("/rpc/:room")
    .server_messages(Hello, Pong, Echoed, Said)
    .authenticate(create_token_auth(verify, query_param_name="key"))
)

Out = Hello | Pong | Echoed | Said


def room_topic(ctx: Context[str]) -> str:
    return f"room:{ctx.params['room']}"


@rpc.on_connect
async def joined(ws: Connection[Out], ctx: Context[str]) -> None:
    await ws.subscribe(room_topic(ctx))
    await ws.send(Hello(user=ctx.user, room=ctx.params["room"]))


@rpc.on("ping", Ping)
async def on_ping(ws: Connection[Out], data: Ping, ctx: Context[str]) -> Pong:
    return Pong(timestamp=data.timestamp)


@rpc.on("note", Note)
async def on_note(ws: Connection[Out], data: Note, ctx: Context[str]) -> None:
    return None


@rpc.on("fail", Fail)
async def on_fail(ws: Connection[Out], data: Fail, ctx: Context[str]) -> None:
    raise MessageError("refused on purpose", code=data.code)


@rpc.on("echo", Echo)
async def on_echo(ws: Connection[Out], data: Echo, ctx: Context[str]):  # type: ignore[no-untyped-def]
    # No return annotation: the client accepts any server message, or an ack.
    return Echoed(text=data.text) if data.reply else None


@rpc.on("shout", Shout)
async def on_shout(ws: Connection[Out], data: Shout, ctx: Context[str]) -> None:
    await ws.publish(room_topic(ctx), Said(text=data.text, by=ctx.user), include_self=True)


@rpc.on("drop", Drop)
async def on_drop(ws: Connection[Out], data: Drop, ctx: Context[str]) -> None:
    topic = room_topic(ctx)
    await ws.unsubscribe(topic)
    for n in range(data.missed):
        await server.publish(topic, Said(text=f"missed {n}", by="server"))
    await ws.close(data.code, "dropped on purpose")


@attrs.frozen
class Kick:
    user: str


@rpc.on("kick", Kick)
async def on_kick(ws: Connection[Out], data: Kick, ctx: Context[str]) -> None:
    await server.disconnect(user=data.user, reason="kicked")


@rpc.on("weird", Weird)
async def on_weird(ws: Connection[Out], data: Weird, ctx: Context[str]) -> None:
    await ws.send_text('{"type":"surprise","data":{}}')


@rpc.on("slow", Slow)
async def on_slow(ws: Connection[Out], data: Slow, ctx: Context[str]) -> Pong:
    await trio.sleep(data.seconds)
    return Pong(timestamp=-1.0)


@attrs.frozen
class HeartbeatPong:
    pass


@message("beat")
@attrs.frozen
class Beat:
    pass


beat = create_websocket_route("/beat").server_messages(Beat).heartbeat(0.05, timeout=30.0)


@beat.on("pong", HeartbeatPong)
async def on_heartbeat_pong(ws: Connection[Beat], data: HeartbeatPong, ctx: Context[None]) -> None:
    await ws.send(Beat())


# -- hostile and refusing servers ------------------------------------------------------


@message("answer")
@attrs.frozen
class Answer:
    text: str


@attrs.frozen
class Text:
    text: str


proto = create_websocket_route("/proto").server_messages(Answer)


@proto.on("toString", Text)
async def on_to_string(ws: Connection[Answer], data: Text, ctx: Context[None]):  # type: ignore[no-untyped-def]
    # No return annotation: the client has no declared replies for "toString".
    return Answer(text=data.text)


@proto.on("constructor", Text)
async def on_constructor(ws: Connection[Answer], data: Text, ctx: Context[None]) -> Answer:
    return Answer(text=data.text)


@proto.on("__proto__", Text)
async def on_proto(ws: Connection[Answer], data: Text, ctx: Context[None]) -> Answer:
    return Answer(text=data.text)


@proto.on("hasOwnProperty", Text)
async def on_has_own_property(ws: Connection[Answer], data: Text, ctx: Context[None]) -> None:
    return None


@message("resumed")
@attrs.frozen
class Resumed:
    """The ``since`` values the upgrade request named."""

    since: list[str]


@message("tally")
@attrs.frozen
class Tally:
    n: int


@attrs.frozen
class Spread:
    """Subscribe to ``count`` topics whose names are ``length`` characters long, then
    publish one note on each, in order."""

    count: int
    length: int


@attrs.frozen
class Restart:
    """Close with 1012."""


many = create_websocket_route("/many/:key").server_messages(Resumed, Tally)
_many_topics: dict[str, list[str]] = {}


@many.on_connect
async def many_connected(ws: Connection[Resumed | Tally], ctx: Context[None]) -> None:
    await ws.send(Resumed(since=ctx.request.query.get_all("since")))
    for topic in _many_topics.get(ctx.params["key"], []):
        await ws.subscribe(topic)  # from the position the client named, if any


@many.on("spread", Spread)
async def on_spread(ws: Connection[Resumed | Tally], data: Spread, ctx: Context[None]) -> None:
    key = ctx.params["key"]
    topics = [f"many:{key}:{n}:".ljust(data.length, "x") for n in range(data.count)]
    _many_topics[key] = topics
    for topic in topics:
        await ws.subscribe(topic)
    for n, topic in enumerate(topics):
        await server.publish(topic, Tally(n))


@many.on("restart", Restart)
async def on_restart(ws: Connection[Resumed | Tally], data: Restart, ctx: Context[None]) -> None:
    await ws.close(1012, "restarting")


def refuse_since(request: Request) -> str:
    if request.query.get_all("since"):
        raise Reject(400, "Resuming is not offered here", "NO_SINCE")
    return "anyone"


nosince = create_websocket_route("/nosince").server_messages(Tally).authenticate(refuse_since)


@nosince.on_connect
async def nosince_connected(ws: Connection[Tally], ctx: Context[str]) -> None:
    await ws.subscribe("many:nosince")


@nosince.on("shout", Shout)
async def on_nosince_shout(ws: Connection[Tally], data: Shout, ctx: Context[str]) -> None:
    await ws.publish("many:nosince", Tally(len(data.text)), include_self=True)


@nosince.on("restart", Restart)
async def on_nosince_restart(ws: Connection[Tally], data: Restart, ctx: Context[str]) -> None:
    await ws.close(1012, "restarting")


flap = create_websocket_route("/flap").server_messages(Tally)


@flap.on_connect
async def flap_connected(ws: Connection[Tally], ctx: Context[None]) -> None:
    await ws.close(1012, "restarting")


@attrs.frozen
class Holder:
    id: str
    generation: int


@attrs.frozen
class WhoAmI:
    pass


@message("me")
@attrs.frozen
class Me:
    id: str
    generation: int


def verify_expiring(token: str) -> Authenticated[Holder] | None:
    name, generation, expiry = [*token.split(":"), "", ""][:3]
    if not name or not generation.isdigit():
        return None
    return Authenticated(Holder(name, int(generation)), expires_at=float(expiry))


expiring = (
    create_websocket_route("/expiring")
    .server_messages(Me)
    .authenticate(create_token_auth(verify_expiring))
    .token_refresh(before=1.0, grace=0.5)
)


@expiring.on("whoami", WhoAmI)
async def on_whoami(ws: Connection[Me], data: WhoAmI, ctx: Context[Holder]) -> Me:
    return Me(ctx.user.id, ctx.user.generation)


server = WebSocketServer(
    [rpc, beat, proto, many, nosince, flap, expiring],
    history={"room:*": History(size=100), "many:*": History(size=10)},
)
