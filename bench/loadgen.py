"""The load generator: picows (Cython) clients on uvloop, one scenario per process.

    python bench/loadgen.py echo --port P [--connections 50] [--warmup 1] [--seconds 5]
    python bench/loadgen.py fanout --port P [--subscribers 200] [--inflight 8 | --rate R]
                                       [--deflate]
    python bench/loadgen.py connect --port P [--concurrency 16]
    python bench/loadgen.py idle --port P [--connections 5000] [--deflate]

``run.py`` starts these pinned to the load-generator core(s) and reads one JSON object from
stdout (``idle`` prints a ``ready`` line, waits for a line on stdin, then closes).
``--start-at`` (a ``time.time()``) lets several processes measure the same window.
``--server-pid`` adds the server's CPU use over the window, user and system apart
(repeated: the sum, for worker processes); ``--strace FILE`` also counts its system calls
over the window with ``strace -c -f`` (which slows the server down: ``run.py
--syscalls`` does it in a repetition of its own).

The clients do as little per frame as they can so that the server is the limit: the
fan-out subscribers count frames without parsing them (every 1024th is parsed to check
the count lines up with the publisher's sequence number), and with ``--deflate`` only
every tenth subscriber inflates what it receives (all of it, to check the stream); the
others count the compressed frames. ``client_cpu`` (the share of one core this process
used during the window) tells when the client was the limit anyway.

``fanout`` is a closed loop by default: how fast it publishes depends on how fast the
deliveries come back, so a server with a longer path (workers behind Redis) also gets
fewer publications per wake-up and writes fewer frames per system call. ``--rate R``
publishes R messages a second instead, whatever comes back (an open loop), so that
configurations compare at the same load; ``behind`` then counts the ticks it held back
because half the ring of sequence numbers (511 messages) was still undelivered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import figures
import harness
import picows
from picows import WSFrame, WSListener, WSMsgType, WSTransport

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
# What a browser sends (Chrome and Firefox offer exactly this).
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
# ~100 bytes on the wire, as in the documentation's echo figures.
ECHO_PAYLOAD = b'{"type":"echo","data":{"text":"%s"},"id":1}' % (b"x" * 60)
# A chat-like message, ~200 bytes: long enough that every server compresses it.
TICK_TEXT = (
    b"Meet at the north entrance at half past nine; bring the printed tickets, "
    b"a charged phone and something warm, the forecast says rain after ten."
)
SAMPLE_EVERY = 10  # fan-out: one subscriber in this many records latency / inflates
MASK = 1023  # ring of in-flight sequence numbers (far more than --inflight)


def now_ns() -> int:
    return time.perf_counter_ns()


# -- permessage-deflate, client side (picows passes RSV1 through) --------------------------


class Deflate:
    """The client half of permessage-deflate (RFC 7692) for what the server agreed to."""

    def __init__(self, header: str) -> None:
        params: dict[str, str] = {}
        for part in header.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        self.server_bits = int(params.get("server_max_window_bits") or 15)
        self.client_bits = int(params.get("client_max_window_bits") or 15)
        self.client_no_context = "client_no_context_takeover" in params
        self.inflater = zlib.decompressobj(-self.server_bits)
        self.compressor: Any = None

    def inflate(self, payload: bytes) -> bytes:
        return self.inflater.decompress(payload + b"\x00\x00\xff\xff")

    def deflate(self, payload: bytes) -> bytes:
        # zlib cannot compress with a window of 8 bits; a fresh 9-bit compressor per
        # message never reaches back more than the (short) message itself.
        bits = max(self.client_bits, 9)
        if self.compressor is None or self.client_no_context or self.client_bits < 9:
            self.compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
        data = self.compressor.compress(payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        return bytes(data[:-4])


def negotiated(transport: WSTransport) -> str:
    return str(transport.response.headers.get("sec-websocket-extensions", ""))


def offer(deflate: bool) -> dict[str, str] | None:
    return {"Sec-WebSocket-Extensions": DEFLATE_OFFER} if deflate else None


def close_on_close_frame(transport: WSTransport, frame: WSFrame) -> None:
    with contextlib.suppress(Exception):
        transport.send_close(frame.get_close_code())
    transport.disconnect()


# -- measurement window ------------------------------------------------------------------


class Window:
    """The measured interval: CPU of this process and of the server, core usage."""

    def __init__(self, server_pids: list[int] | None, strace: Path | None = None) -> None:
        self.server_pids = server_pids or []
        self.latencies: list[int] = []
        self.count = 0
        self.measuring = False
        self.started = self.ended = 0.0
        self._cpu0 = 0.0
        self._server0 = (0.0, 0.0)
        self._cores0: dict[int, tuple[float, float]] = {}
        self._steal0: dict[int, tuple[float, float]] = {}
        self._trace = figures.SyscallTrace(self.server_pids, strace) if strace else None
        self.result: dict[str, Any] = {}

    def open(self) -> None:
        if self._trace is not None:
            self._trace.start()  # attached before the window: its calls are the window's
        self._cores0 = harness.core_times()
        self._steal0 = harness.core_steal()
        self._server0 = self._server_cpu()
        self._cpu0 = time.process_time()
        self.started = time.perf_counter()
        self.measuring = True

    def close(self) -> None:
        self.measuring = False
        self.ended = time.perf_counter()
        cpu = time.process_time() - self._cpu0
        elapsed = self.ended - self.started
        user, system = self._server_cpu()
        user -= self._server0[0]
        system -= self._server0[1]
        steal = harness.core_busy(self._steal0, harness.core_steal())
        self.result = {
            "elapsed": elapsed,
            "count": self.count,
            "rate": self.count / elapsed if elapsed else 0.0,
            "client_cpu": cpu / elapsed if elapsed else 0.0,
            "server_cpu": (user + system) / elapsed if self.server_pids and elapsed else None,
            "server_user": user / elapsed if self.server_pids and elapsed else None,
            "server_system": system / elapsed if self.server_pids and elapsed else None,
            "core_busy": harness.core_busy(self._cores0, harness.core_times()),
            "core_steal": steal,
            "latency_us": latency_sample(self.latencies),
        }
        if self._trace is not None:
            self.result["syscalls"] = self._trace.stop()

    def _server_cpu(self) -> tuple[float, float]:
        splits = [harness.process_cpu_split(pid) for pid in self.server_pids]
        return sum(u for u, _ in splits), sum(s for _, s in splits)


def latency_sample(latencies_ns: list[int], keep: int = 10_000) -> list[float]:
    """An evenly spaced subsample of the sorted latencies (µs), for pooled percentiles."""
    values = sorted(latencies_ns)
    if len(values) > keep:
        step = len(values) / keep
        values = [values[int(i * step)] for i in range(keep)]
    return [round(v / 1000, 1) for v in values]


async def sleep_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def connect_all(
    factory: Callable[[int], Callable[[], WSListener]],
    url: str,
    count: int,
    *,
    deflate: bool = False,
    concurrency: int = 64,
) -> tuple[list[WSTransport], int]:
    """Open ``count`` connections, ``concurrency`` handshakes at a time."""
    transports: list[WSTransport | None] = [None] * count
    failures = 0
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        nonlocal failures
        async with semaphore:
            try:
                transport, _ = await picows.ws_connect(
                    factory(index), url, extra_headers=offer(deflate), max_frame_size=2**24
                )
            except Exception:
                failures += 1
                return
            transports[index] = transport

    await asyncio.gather(*(one(i) for i in range(count)))
    return [t for t in transports if t is not None], failures


# -- echo --------------------------------------------------------------------------------


class EchoState:
    def __init__(self, window: Window) -> None:
        self.window = window
        self.sending = False
        self.outstanding = 0
        self.mismatched = 0
        self.closed_by_server = 0


class EchoClient(WSListener):  # type: ignore[misc]
    def __init__(self, state: EchoState) -> None:
        self.state = state
        self.sent_at = 0
        self.expected_size = -1
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def start(self) -> None:
        assert self.transport is not None
        self.sent_at = now_ns()
        self.state.outstanding += 1
        self.transport.send(TEXT, ECHO_PAYLOAD)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        state = self.state
        if frame.msg_type is not TEXT:
            if frame.msg_type is CLOSE:
                state.closed_by_server += 1
                close_on_close_frame(transport, frame)
            return
        received = now_ns()
        state.outstanding -= 1
        if self.expected_size < 0:
            reply = json.loads(frame.get_payload_as_bytes())
            ok = reply.get("type") == "echo" and reply["data"]["text"] == "x" * 60
            self.expected_size = frame.payload_size if ok else 0
        if frame.payload_size != self.expected_size:
            state.mismatched += 1
        window = state.window
        if window.measuring:
            window.count += 1
            window.latencies.append(received - self.sent_at)
        if state.sending:
            self.sent_at = received
            state.outstanding += 1
            transport.send(TEXT, ECHO_PAYLOAD)


async def echo(args: argparse.Namespace) -> dict[str, Any]:
    window = Window(args.server_pid, args.strace)
    state = EchoState(window)
    clients: list[EchoClient] = []

    def factory(index: int) -> Callable[[], WSListener]:
        def make() -> WSListener:
            client = EchoClient(state)
            clients.append(client)
            return client

        return make

    url = f"ws://127.0.0.1:{args.port}/echo"
    transports, failures = await connect_all(factory, url, args.connections)
    await sleep_until(args.start_at)
    state.sending = True
    for client in clients:
        if client.transport is not None:
            client.start()
    await asyncio.sleep(args.warmup)
    window.open()
    await asyncio.sleep(args.seconds)
    window.close()
    state.sending = False
    end = time.monotonic() + 5
    while state.outstanding > 0 and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for transport in transports:
        transport.disconnect()
    return {
        **window.result,
        "connections": len(transports),
        "connect_failures": failures,
        "mismatched_replies": state.mismatched,
        "closed_by_server": state.closed_by_server,
    }


# -- fan-out -----------------------------------------------------------------------------


class FanOut:
    """One publisher keeping at most ``inflight`` messages undelivered: message ``n + 1``
    goes out when every subscriber has received message ``n + 1 - inflight``; or, with
    a ``rate``, publishing that many a second (:meth:`publish_at_rate`)."""

    def __init__(self, window: Window, subscribers: int, inflight: int, rate: float) -> None:
        self.window = window
        self.subscribers = subscribers
        self.inflight = inflight
        self.rate = rate  # > 0: an open loop at this many publications a second
        self.running = False  # counting (after the sync phase)
        self.publishing = False
        self.behind = 0
        self.published = 0
        self.completed = 0
        self.misaligned = 0
        self.disconnected = 0
        self.errors = 0
        self.closed_by_server = 0
        self.acks = [0] * (MASK + 1)
        self.sent_at = [0] * (MASK + 1)
        self.publisher: WSTransport | None = None
        self.publisher_deflate: Deflate | None = None

    def publish(self, n: int) -> None:
        payload = b'{"type":"publish","data":{"n":%d,"user":"alice","text":"%s"}}' % (n, TICK_TEXT)
        assert self.publisher is not None
        self.sent_at[n & MASK] = now_ns()
        if self.publisher_deflate is not None:
            self.publisher.send(TEXT, self.publisher_deflate.deflate(payload), rsv1=True)
        else:
            self.publisher.send(TEXT, payload)
        self.published = n

    def complete(self, n: int) -> None:
        self.completed = n
        if self.publishing and not self.rate:
            self.publish(self.published + 1)

    async def publish_at_rate(self) -> None:
        """Publish ``rate`` messages a second, a millisecond's worth at a time, never
        more than half the ring ahead of the deliveries."""
        start = time.monotonic()
        first = self.published
        while self.publishing:
            due = first + int((time.monotonic() - start) * self.rate)
            while self.published < due:
                if self.published - self.completed >= MASK // 2:
                    self.behind += 1
                    break
                self.publish(self.published + 1)
            await asyncio.sleep(0.001)


class Subscriber(WSListener):  # type: ignore[misc]
    """Counts frames; one in ``SAMPLE_EVERY`` also inflates them (when compressed),
    records latencies and checks every 1024th against the sequence number."""

    def __init__(self, fan: FanOut, index: int) -> None:
        self.fan = fan
        self.count = 0
        self.sample = index % SAMPLE_EVERY == 0
        self.deflate: Deflate | None = None
        self.frames = self.compressed = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        header = negotiated(transport)
        if self.sample and header.startswith("permessage-deflate"):
            self.deflate = Deflate(header)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.fan.disconnected += 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not TEXT:
            if frame.msg_type is CLOSE:
                self.fan.closed_by_server += 1
                close_on_close_frame(transport, frame)
            return
        count = self.count = self.count + 1
        fan = self.fan
        if self.sample:
            self.check(frame, count)
        if fan.running:
            acks = fan.acks
            slot = count & MASK
            done = acks[slot] + 1
            if done == fan.subscribers:
                acks[slot] = 0
                fan.complete(count)
            else:
                acks[slot] = done

    def check(self, frame: WSFrame, count: int) -> None:
        fan = self.fan
        payload = None
        self.frames += 1
        if frame.rsv1:
            self.compressed += 1
            if self.deflate is not None:  # all of them: the stream has a context
                payload = self.deflate.inflate(frame.get_payload_as_bytes())
        if not fan.running:
            return
        if fan.window.measuring:
            fan.window.latencies.append(now_ns() - fan.sent_at[count & MASK])
        if count & 1023 == 0:
            payload = payload or frame.get_payload_as_bytes()
            if json.loads(payload)["data"]["n"] != count:
                fan.misaligned += 1


class Publisher(WSListener):  # type: ignore[misc]
    def __init__(self, fan: FanOut) -> None:
        self.fan = fan

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is TEXT:
            self.fan.errors += 1  # the publisher gets nothing back but errors
        elif frame.msg_type is CLOSE:
            self.fan.closed_by_server += 1
            close_on_close_frame(transport, frame)


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    window = Window(args.server_pid, args.strace)
    fan = FanOut(window, args.subscribers, args.inflight, args.rate)
    subscribers: list[Subscriber] = []

    def factory(index: int) -> Callable[[], WSListener]:
        def make() -> WSListener:
            subscriber = Subscriber(fan, index)
            subscribers.append(subscriber)
            return subscriber

        return make

    base = f"ws://127.0.0.1:{args.port}"
    transports, failures = await connect_all(
        factory, f"{base}/sub", args.subscribers, deflate=args.deflate
    )
    if failures:
        raise RuntimeError(f"{failures} subscribers could not connect")
    publisher, _ = await picows.ws_connect(
        lambda: Publisher(fan), f"{base}/pub", extra_headers=offer(args.deflate)
    )
    fan.publisher = publisher
    header = negotiated(publisher)
    if header.startswith("permessage-deflate"):
        fan.publisher_deflate = Deflate(header)
    # Sync: publish message 0 until every subscriber has one (the servers subscribe a
    # connection just after its handshake), let the stragglers drain, start counting.
    end = time.monotonic() + 20
    while any(s.count == 0 for s in subscribers):
        if time.monotonic() > end:
            raise RuntimeError("subscribers never received the sync message")
        fan.publish(0)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    for subscriber in subscribers:
        subscriber.count = subscriber.frames = subscriber.compressed = 0
    await sleep_until(args.start_at)
    fan.running = fan.publishing = True
    pacer = None
    if args.rate:
        pacer = asyncio.ensure_future(fan.publish_at_rate())
    else:
        for n in range(1, args.inflight + 1):
            fan.publish(n)

    async def watch(seconds: float) -> bool:
        """Sleep ``seconds``; False if deliveries stopped for 1 s (a lost message)."""
        end = time.monotonic() + seconds
        last, last_change = fan.completed, time.monotonic()
        while time.monotonic() < end:
            await asyncio.sleep(min(0.25, max(0.0, end - time.monotonic())))
            if fan.completed != last:
                last, last_change = fan.completed, time.monotonic()
            elif time.monotonic() - last_change > 1:
                return False
        return True

    def delivered() -> int:
        return sum(s.count for s in subscribers)

    stalled = not await watch(args.warmup)
    before = delivered()
    window.open()
    if not stalled:
        stalled = not await watch(args.seconds)
    window.count = delivered() - before
    window.close()
    fan.publishing = False
    if pacer is not None:
        await pacer
    lost = fan.disconnected
    end = time.monotonic() + 5
    while fan.completed < fan.published and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for transport in [*transports, publisher]:
        transport.disconnect()
    return {
        **window.result,
        "subscribers": len(transports),
        "negotiated": header,
        "compressed_fraction": sum(s.compressed for s in subscribers)
        / max(1, sum(s.frames for s in subscribers)),
        "published": fan.published,
        "behind": fan.behind,
        "stalled": stalled,
        "misaligned": fan.misaligned,
        "errors": fan.errors,
        "closed_by_server": fan.closed_by_server,
        "disconnected": lost,
    }


# -- connection setup --------------------------------------------------------------------


KEY = base64.b64encode(b"trio-wsroutes-be").decode()
ACCEPT = base64.b64encode(
    hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
)
MASK_KEY = b"\x01\x02\x03\x04"
CLOSE_1000 = b"\x88\x82" + MASK_KEY + bytes(b ^ MASK_KEY[i] for i, b in enumerate(b"\x03\xe8"))


class Handshake(asyncio.Protocol):
    """A WebSocket client that only opens and closes: the upgrade request (prebuilt),
    the 101 response (status and ``Sec-WebSocket-Accept`` checked), a close frame, the
    server's close, then the TCP close. picows does a lot more per connection than a
    handshake needs, and was the limit of this scenario."""

    def __init__(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.upgraded: asyncio.Future[bool] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.upgraded.done():
            self.transport.close()  # the server's close frame: done
            return
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if sep:
            ok = head.startswith(b"HTTP/1.1 101") and ACCEPT in head
            self.upgraded.set_result(ok)
            if ok and not rest:
                self.transport.write(CLOSE_1000)
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)


async def connect(args: argparse.Namespace) -> dict[str, Any]:
    """Handshakes per second: each worker opens a connection (TCP, upgrade), closes it
    (close frames both ways, then TCP), and opens the next."""
    window = Window(args.server_pid, args.strace)
    loop = asyncio.get_running_loop()
    request = (
        f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    sending = True
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while sending:
            started = now_ns()
            try:
                _, protocol = await loop.create_connection(
                    lambda: Handshake(request), "127.0.0.1", args.port
                )
                ok = await asyncio.wait_for(protocol.upgraded, 10)
            except (OSError, TimeoutError):
                ok = False
            if not ok:
                failures += 1
                await asyncio.sleep(0.01)
                continue
            if window.measuring:
                window.count += 1
                window.latencies.append(now_ns() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.closed, 5)

    await sleep_until(args.start_at)
    workers = [asyncio.ensure_future(worker()) for _ in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    window.open()
    await asyncio.sleep(args.seconds)
    window.close()
    sending = False
    await asyncio.wait(workers, timeout=10)
    return {**window.result, "concurrency": args.concurrency, "connect_failures": failures}


# -- idle connections --------------------------------------------------------------------


class IdleClient(WSListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.replied: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.deflate: Deflate | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is TEXT and not self.replied.done():
            payload = frame.get_payload_as_bytes()
            if frame.rsv1 and self.deflate is not None:
                payload = self.deflate.inflate(payload)
            self.replied.set_result(json.loads(payload).get("type") == "echo")
        elif frame.msg_type is CLOSE:
            if not self.replied.done():
                self.replied.set_result(False)
            close_on_close_frame(transport, frame)


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    """Open ``--connections`` connections, exchange one echo on each (compressed both
    ways when deflate was agreed, as a browser does), report, hold them until a line
    arrives on stdin, close them."""
    url = f"ws://127.0.0.1:{args.port}/echo"
    semaphore = asyncio.Semaphore(64)
    transports: list[WSTransport] = []
    failures = 0
    headers: set[str] = set()
    handshake_ns: list[int] = []

    async def one() -> None:
        nonlocal failures
        async with semaphore:
            try:
                started = now_ns()
                transport, client = await picows.ws_connect(
                    IdleClient, url, extra_headers=offer(args.deflate)
                )
                handshake_ns.append(now_ns() - started)
                header = negotiated(transport)
                headers.add(header)
                assert isinstance(client, IdleClient)
                if header.startswith("permessage-deflate"):
                    client.deflate = Deflate(header)
                    transport.send(TEXT, client.deflate.deflate(ECHO_PAYLOAD), rsv1=True)
                else:
                    transport.send(TEXT, ECHO_PAYLOAD)
                ok = await asyncio.wait_for(client.replied, 10)
            except Exception:
                failures += 1
                return
            if ok:
                transports.append(transport)
            else:
                failures += 1
                transport.disconnect()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(args.connections)))
    elapsed = time.perf_counter() - started
    ready = {
        "event": "ready",
        "connections": len(transports),
        "failures": failures,
        "negotiated": sorted(headers),
        "setup_seconds": elapsed,
        "latency_us": latency_sample(handshake_ns),
    }
    print(json.dumps(ready), flush=True)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold)
    for transport in transports:
        transport.disconnect()
    await asyncio.sleep(0.2)
    return {"event": "done"}


# -- main --------------------------------------------------------------------------------

SCENARIOS = {"echo": echo, "fanout": fanout, "connect": connect, "idle": idle}


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, action="append", help="repeatable: summed")
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument(
        "--strace", type=Path, help="count the server's system calls in the window (a file)"
    )
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="fanout: publications a second (open loop)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--hold", type=float, default=120.0, help="idle: longest hold, s")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    harness.raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        runner: Callable[[Any], Any] = asyncio.run
    else:
        runner = uvloop.run
    result = runner(SCENARIOS[args.scenario](args))
    # The event loop may leave stdout non-blocking: a big line would be cut short.
    os.set_blocking(sys.stdout.fileno(), True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
