"""A raw RFC 6455 client over TCP, for frames and timings that real clients hide.

It sends exactly the bytes a test asks for (fragments, control frames in between, bad
UTF-8, unmasked or oversized frames, compressed payloads) and reads frames as they come,
RSV bits included. 127.0.0.1 only; every wait is bounded by the caller's ``fail_after``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from trio_wsroutes import BoundAddress

MAGIC = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


@attrs.frozen
class RawFrame:
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int:
        assert self.opcode == CLOSE
        return int(struct.unpack("!H", self.payload[:2])[0]) if self.payload else 1005


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame; ``length`` overrides the announced payload length."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + mask_bytes(payload, key)


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def deflate(payload: bytes, window_bits: int = 15) -> bytes:
    """A permessage-deflate payload (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(wbits=-window_bits)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflate(payload: bytes, window_bits: int = 15) -> bytes:
    return zlib.decompressobj(wbits=-window_bits).decompress(payload + b"\x00\x00\xff\xff")


class RawClient:
    def __init__(self, stream: trio.abc.Stream, headers: dict[str, str], leftover: bytes):
        self.stream = stream
        self.headers = headers
        """The 101 response's headers, names lower-cased."""
        self.buffer = bytearray(leftover)

    async def send(self, opcode: int, payload: bytes = b"", **kwargs: bool) -> None:
        await self.stream.send_all(encode_frame(opcode, payload, **kwargs))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self, n: int) -> bool:
        while len(self.buffer) < n:
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return False
            if not chunk:
                return False
            self.buffer += chunk
        return True

    async def _take(self, n: int) -> bytes | None:
        if not await self._fill(n):
            return None
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def receive(self) -> RawFrame | None:
        """The next frame from the server, or ``None`` at EOF."""
        head = await self._take(2)
        if head is None:
            return None
        assert not head[1] & 0x80, "server frames are never masked"
        length = head[1] & 0x7F
        if length == 126:
            ext = await self._take(2)
            assert ext is not None
            (length,) = struct.unpack("!H", ext)
        elif length == 127:
            ext = await self._take(8)
            assert ext is not None
            (length,) = struct.unpack("!Q", ext)
        payload = await self._take(length)
        assert payload is not None
        return RawFrame(bool(head[0] & 0x80), bool(head[0] & 0x40), head[0] & 0x0F, payload)

    async def receive_data(self) -> RawFrame:
        """The next data frame, skipping pings."""
        while True:
            frame = await self.receive()
            assert frame is not None, "connection ended"
            if frame.opcode != PING:
                return frame

    async def close_frame(self) -> RawFrame | None:
        """Read until the server's close frame (data frames are skipped); ``None`` if
        the connection ended without one."""
        while True:
            frame = await self.receive()
            if frame is None or frame.opcode == CLOSE:
                return frame

    async def eof(self) -> bool:
        """Read until EOF; ``True`` if it came (nothing but close frames before)."""
        while True:
            frame = await self.receive()
            if frame is None:
                return True


async def handshake(
    address: BoundAddress, path: str, extra_headers: dict[str, str] | None = None
) -> tuple[trio.SocketStream, int, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream(address.host, address.port)
    status, headers, leftover = await handshake_on(
        stream, f"{address.host}:{address.port}", path, extra_headers
    )
    return stream, status, headers, leftover


async def handshake_on(
    stream: trio.abc.Stream, host: str, path: str, extra_headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """The opening handshake on any stream: status, headers, and bytes read past it."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in (extra_headers or {}).items()),
    ]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"connection closed during the handshake: {data!r}"
        data += chunk
    head, _, leftover = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in header_lines)
    }
    status = int(status_line.split(" ")[1])
    if status == 101:
        accept = base64.b64encode(hashlib.sha1((key + MAGIC).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == accept
    return status, headers, leftover


@asynccontextmanager
async def raw_connect(
    address: BoundAddress, path: str, extra_headers: dict[str, str] | None = None
) -> AsyncIterator[RawClient]:
    stream, status, headers, leftover = await handshake(address, path, extra_headers)
    async with stream:
        assert status == 101, status
        yield RawClient(stream, headers, leftover)
