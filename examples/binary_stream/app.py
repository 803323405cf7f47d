"""Binary frames beside JSON envelopes: an upload of chunks, relayed to listeners.

A *producer* connects to ``/stream/:name/publish`` and sends binary frames (audio chunks,
image tiles: any bytes). Each chunk is relayed, as the same binary frame, to every
*listener* of ``/stream/:name/listen``, and counted. JSON envelopes on the producer's
connection control the stream (``start`` with a content type, ``stop``) and answer with a
summary, so one route mixes ``.on()`` handlers and ``.on_binary``. A route without
``.on_binary`` (the listeners') closes with 1003 when it receives a binary frame.
Run: ``python -m examples.binary_stream``.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import attrs

from trio_wsroutes import (
    Connection,
    Context,
    MessageError,
    WebSocketServer,
    create_websocket_route,
    message,
)

MAX_CHUNK = 64 * 1024


@attrs.frozen
class Start:
    """Begin a stream of ``content_type`` chunks."""

    content_type: str = attrs.field(validator=attrs.validators.max_len(100))


@attrs.frozen
class Stop:
    """End the stream."""


@message("started")
@attrs.frozen
class Started:
    """Sent to listeners (and the producer) when a stream begins."""

    stream: str
    content_type: str


@message("stopped")
@attrs.frozen
class Stopped:
    """Sent when a stream ends: what went through, and a digest to check it."""

    stream: str
    chunks: int
    bytes: int
    sha256: str


StreamMessage = Started | Stopped


class Digest(Protocol):
    """What the upload needs of a hash object."""

    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


@attrs.define
class Upload:
    """A producer's stream in progress."""

    content_type: str
    chunks: int = 0
    size: int = 0
    digest: Digest = attrs.field(factory=hashlib.sha256)


publish = create_websocket_route("/stream/:name/publish").server_messages(Started, Stopped)
listen = create_websocket_route("/stream/:name/listen").server_messages(Started, Stopped)


def _topic(ctx: Context[None]) -> str:
    return f"stream:{ctx.params['name']}"


@publish.on("start", Start)
async def start(ws: Connection[StreamMessage], data: Start, ctx: Context[None]) -> Started:
    ctx.data["upload"] = Upload(content_type=data.content_type)
    started = Started(stream=ctx.params["name"], content_type=data.content_type)
    await ws.publish(_topic(ctx), started)
    return started


@publish.on_binary
async def chunk(ws: Connection[StreamMessage], data: bytes, ctx: Context[None]) -> None:
    upload = ctx.data.get("upload")
    if not isinstance(upload, Upload):
        await ws.close(1008, "send start first")
        return
    if len(data) > MAX_CHUNK:
        await ws.close(1009, "chunk too big")
        return
    upload.chunks += 1
    upload.size += len(data)
    upload.digest.update(data)
    await ws.publish_binary(_topic(ctx), data)


@publish.on("stop", Stop)
async def stop(ws: Connection[StreamMessage], data: Stop, ctx: Context[None]) -> Stopped:
    upload = ctx.data.pop("upload", None)
    if not isinstance(upload, Upload):
        raise MessageError("No stream in progress", code="NOT_STARTED")
    stopped = Stopped(
        stream=ctx.params["name"],
        chunks=upload.chunks,
        bytes=upload.size,
        sha256=upload.digest.hexdigest(),
    )
    await ws.publish(_topic(ctx), stopped)
    return stopped


@listen.on_connect
async def join(ws: Connection[StreamMessage], ctx: Context[None]) -> None:
    await ws.subscribe(_topic(ctx))


server = WebSocketServer([publish, listen], max_payload_length=MAX_CHUNK * 2)
