"""The fan-out floor: the least Python can do to hand one message to every subscriber.

    python bench/floor.py PORT [--batch]

A server in one process on 127.0.0.1:PORT, with nothing but the standard library: an
epoll loop (``selectors``), a hand-written WebSocket handshake, and for ``/pub`` a parser
of the publisher's (masked) frames. For every message the publisher sends, it builds the
server frame once (header + the payload as it came) and then, in a plain loop, calls
``sock.send(frame)`` on each subscriber's non-blocking socket, one call per subscriber per
message. That is the part it measures; the rest is there so that the load generator's
fan-out scenario (``loadgen.py fanout``: subscribers on ``/sub``, a publisher on ``/pub``
pacing on their receipts) runs against it unchanged, and so ``run.py`` measures its
deliveries per second and per server CPU-second exactly as for the frameworks.

What it leaves out, on purpose: validation, JSON, topics, tasks, per-connection queues,
permessage-deflate (it never accepts the extension: ``run.py`` runs it only in the fan-out
scenarios without compression), pings, timeouts and limits. A send that does not take the
whole frame (a full socket buffer) keeps the rest for that socket and writes it when the
socket is writable, so nothing is lost; with the load generator's 8 messages in flight it
does not happen in practice.

It is a floor for a server that makes one ``send`` per message per subscriber. A server
that puts several queued messages for one subscriber into one ``send`` (several published
messages arrive before the first is written) can go under it: ``--batch`` (the system
``floor-batched`` of ``run.py``) measures that floor too. It frames every complete message
of one ``recv`` from the publisher and hands them, joined, to each subscriber in one
``send``: how many messages go together depends on how many the publisher had sent by
then, as it would for a server that batches.
"""

from __future__ import annotations

import base64
import hashlib
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
CLOSE_1000 = b"\x88\x02\x03\xe8"


def frame_header(size: int, opcode: int = 0x1) -> bytes:
    if size < 126:
        return bytes((0x80 | opcode, size))
    if size < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, size)
    return struct.pack("!BBQ", 0x80 | opcode, 127, size)


def unmask(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")


def handshake_response(request: bytes) -> tuple[str, bytes] | None:
    """The path and the 101 response, or None for anything but a WebSocket upgrade."""
    lines = request.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or parts[0] != "GET":
        return None
    key = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip()
    if not key:
        return None
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return parts[1], response


class Floor:
    def __init__(self, port: int, *, batch: bool = False) -> None:
        self.batch = batch
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.listener.setblocking(False)
        self.selector.register(self.listener, READ, self.accept)
        self.subscribers: list[socket.socket] = []
        self.backlog: dict[socket.socket, bytearray] = {}

    # -- connections ---------------------------------------------------------------------

    def accept(self, sock: socket.socket, events: int) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = bytearray()
            self.selector.register(conn, READ, lambda c, e, b=buffer: self.handshake(c, b))

    def handshake(self, conn: socket.socket, buffer: bytearray) -> None:
        data = self.recv(conn)
        if data is None:
            return
        buffer += data
        head, sep, rest = bytes(buffer).partition(b"\r\n\r\n")
        if not sep:
            if len(buffer) > 16384:
                self.drop(conn)
            return
        answer = handshake_response(head)
        path, response = answer or ("", b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        if answer and path not in ("/sub", "/pub"):
            response = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        try:
            conn.sendall(response)  # a fresh socket's buffer takes it whole
        except OSError:
            self.drop(conn)
            return
        if path not in ("/sub", "/pub"):
            self.drop(conn)
            return
        handler: Callable[[socket.socket, int], None]
        stream = bytearray()  # the publisher's bytes not yet parsed
        if path == "/sub":
            self.subscribers.append(conn)
            handler = self.subscriber_event
        else:
            handler = lambda c, e, s=stream: self.publisher_data(c, s)  # noqa: E731
        self.selector.modify(conn, READ, handler)
        if path == "/pub" and rest:
            self.publisher_data(conn, stream, initial=rest)

    def recv(self, conn: socket.socket) -> bytes | None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.drop(conn)
            return None
        return data

    def drop(self, conn: socket.socket) -> None:
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        if conn in self.subscribers:
            self.subscribers.remove(conn)
        self.backlog.pop(conn, None)
        conn.close()

    # -- subscribers ---------------------------------------------------------------------

    def subscriber_event(self, conn: socket.socket, events: int) -> None:
        if events & WRITE:
            self.flush(conn)
        if events & READ:
            # Subscribers send nothing but their close: answer it and hang up.
            data = self.recv(conn)
            if data is not None and data[:1] and data[0] & 0x0F == 0x8:
                try:
                    conn.send(CLOSE_1000)
                except OSError:
                    pass
                self.drop(conn)

    def flush(self, conn: socket.socket) -> None:
        pending = self.backlog[conn]
        try:
            sent = conn.send(pending)
        except BlockingIOError:
            return
        except OSError:
            self.drop(conn)
            return
        del pending[:sent]
        if not pending:
            del self.backlog[conn]
            self.selector.modify(conn, READ, self.subscriber_event)

    def keep(self, conn: socket.socket, rest: bytes) -> None:
        pending = self.backlog.get(conn)
        if pending is None:
            self.backlog[conn] = bytearray(rest)
            self.selector.modify(conn, READ | WRITE, self.subscriber_event)
        else:
            pending += rest

    # -- the publisher and the loop this file is about -------------------------------------

    def deliver(self, frame: bytes) -> None:
        size = len(frame)
        dead = []
        if not self.backlog:
            for sock in self.subscribers:
                try:
                    sent = sock.send(frame)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    dead.append(sock)
                    continue
                if sent != size:
                    self.keep(sock, frame[sent:])
        else:  # some sockets have bytes waiting: those go behind them
            for sock in self.subscribers:
                if sock in self.backlog:
                    self.backlog[sock] += frame
                    continue
                try:
                    sent = sock.send(frame)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    dead.append(sock)
                    continue
                if sent != size:
                    self.keep(sock, frame[sent:])
        for sock in dead:
            self.drop(sock)

    def publisher_data(
        self, conn: socket.socket, stream: bytearray, initial: bytes | None = None
    ) -> None:
        data = initial if initial is not None else self.recv(conn)
        if data is None:
            return
        stream += data
        batch: list[bytes] | None = [] if self.batch else None
        try:
            self.parse(conn, stream, batch)
        finally:
            if batch:
                self.deliver(b"".join(batch))

    def parse(self, conn: socket.socket, stream: bytearray, batch: list[bytes] | None) -> None:
        while True:
            if len(stream) < 2:
                return
            first, second = stream[0], stream[1]
            size = second & 0x7F
            offset = 2
            if size == 126:
                if len(stream) < 4:
                    return
                (size,) = struct.unpack_from("!H", stream, 2)
                offset = 4
            elif size == 127:
                if len(stream) < 10:
                    return
                (size,) = struct.unpack_from("!Q", stream, 2)
                offset = 10
            masked = second & 0x80
            end = offset + (4 if masked else 0) + size
            if len(stream) < end:
                return
            payload = bytes(stream[end - size : end])
            if masked:
                payload = unmask(payload, bytes(stream[offset : offset + 4]))
            del stream[:end]
            opcode = first & 0x0F
            if opcode == 0x1 or opcode == 0x2:
                if batch is None:
                    self.deliver(frame_header(size, opcode) + payload)
                else:
                    batch.append(frame_header(size, opcode) + payload)
            elif opcode == 0x8:
                try:
                    conn.send(CLOSE_1000)
                except OSError:
                    pass
                self.drop(conn)
                return
            # pings, pongs and continuation frames: not sent by the load generator

    def serve_forever(self) -> None:
        select = self.selector.select
        while True:
            for key, events in select():
                key.data(key.fileobj, events)


def main() -> None:
    args = sys.argv[1:]
    batch = "--batch" in args
    if batch:
        args.remove("--batch")
    if len(args) != 1:
        raise SystemExit(__doc__)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        Floor(int(args[0]), batch=batch).serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
