"""The native transport's codec alone, without I/O: bytes in, events out.

The codec parses the common frames itself (the fast path) and leaves the rest to the
``websockets`` protocol; on any sequence of frames, cut anywhere, it must give exactly the
messages the protocol alone gives (as ``websockets``' own ``tests/test_protocol.py`` checks
its parser). The bounds it adds are checked one by one.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings
from websockets.frames import Opcode
from websockets.server import ServerProtocol

from tests._rawws import BINARY, CONT, PING, TEXT, encode_frame
from trio_wsroutes._frames import Frame
from trio_wsroutes._transports import Disconnect, Violation
from trio_wsroutes._transports._codec import MAX_PONG_BYTES, MAX_REQUEST_HEAD, ServerCodec

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def open_codec(*, max_size: int = 1 << 20, compression: Any = None) -> ServerCodec:
    codec = ServerCodec(max_size=max_size, compression=compression)
    codec.feed(UPGRADE)
    request = codec.next_request()
    assert not isinstance(request, int) and request is not None
    assert codec.prepare(request).status_code == 101
    codec.accept(None, ())
    while codec.owed.take() is not None:
        pass  # the 101 response
    return codec


def events(codec: ServerCodec) -> list[Any]:
    out: list[Any] = []
    while (event := codec.next_event()) is not None:
        out.append(event)
    return out


# -- the fast path against the protocol's own parser --------------------------------------

# Lengths on either side of the header's size classes (7 bits, 16 bits, 64 bits).
lengths = st.one_of(
    st.sampled_from([0, 1, 125, 126, 127, 255, 256, 1000, 65535, 65536, 70000]),
    st.integers(min_value=0, max_value=70_000),
)
frame_specs = st.lists(
    st.one_of(
        st.tuples(st.just(TEXT), st.text(max_size=300).map(str.encode), st.just(True)),
        st.tuples(st.just(TEXT), lengths.map(lambda n: b"t" * n), st.just(True)),
        st.tuples(st.just(BINARY), lengths.map(os.urandom), st.just(True)),
        st.tuples(st.just(PING), st.binary(max_size=125), st.just(True)),
        # A message in two fragments.
        st.tuples(st.just(-1), st.text(min_size=1, max_size=200).map(str.encode), st.just(True)),
    ),
    max_size=12,
)


def wire(specs: list[tuple[int, bytes, bool]]) -> bytes:
    data = b""
    for opcode, payload, _ in specs:
        if opcode == -1:
            half = len(payload) // 2
            data += encode_frame(TEXT, payload[:half], fin=False)
            data += encode_frame(CONT, payload[half:], fin=True)
        else:
            data += encode_frame(opcode, payload)
    return data


def protocol_messages(data: bytes) -> list[str | bytes]:
    """What ``websockets``' protocol alone makes of ``data`` (messages, joined)."""
    protocol = ServerProtocol(max_size=1 << 20)
    protocol.receive_data(UPGRADE)
    (request,) = protocol.events_received()
    protocol.send_response(protocol.accept(request))
    protocol.receive_data(data)
    messages: list[str | bytes] = []
    parts: list[bytes] = []
    kind = Opcode.TEXT
    for frame in protocol.events_received():
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            kind, parts = frame.opcode, [frame.data]
        elif frame.opcode is Opcode.CONT:
            parts.append(frame.data)
        else:
            continue
        if frame.fin:
            joined = b"".join(parts)
            messages.append(joined.decode() if kind is Opcode.TEXT else joined)
    return messages


@settings(max_examples=150, deadline=None)
@given(specs=frame_specs, cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=8))
def test_the_fast_path_gives_what_the_protocol_gives(
    specs: list[tuple[int, bytes, bool]], cuts: list[int]
) -> None:
    data = wire(specs)
    codec = open_codec()
    got: list[Any] = []
    start = 0
    for cut in [*cuts, len(data)]:
        end = min(len(data), start + cut)
        codec.feed(data[start:end])
        got += events(codec)
        start = end
        if start >= len(data):
            break
    assert got == protocol_messages(data)
    # Every ping got its pong (few, well under the bound).
    pings = sum(1 for opcode, _, _ in specs if opcode == PING)
    pongs = 0
    while codec.owed.take() is not None:
        pongs += 1
    assert pongs == pings


# -- the bounds the codec adds --------------------------------------------------------------


def test_a_request_head_over_16_kib_is_refused() -> None:
    codec = ServerCodec(max_size=1 << 20, compression=None)
    codec.feed(b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 8000 + b"\r\n")
    assert codec.next_request() is None
    codec.feed(b"X-Long-Too: " + b"a" * (MAX_REQUEST_HEAD - 8000) + b"\r\n")
    assert codec.next_request() == 431


def test_a_frame_over_the_limit_is_refused_from_its_header_after_what_came_before() -> None:
    codec = open_codec(max_size=1000)
    codec.feed(encode_frame(TEXT, b"first") + encode_frame(BINARY, b"", length=5000))
    assert events(codec) == ["first", Violation(1009, "message too big")]
    codec.feed(b"x" * 5000)  # the rest is discarded, never buffered
    assert events(codec) == []


def test_invalid_utf8_fails_at_its_fragment_and_fragments_are_charged() -> None:
    codec = open_codec()
    codec.feed(encode_frame(TEXT, b"ok", fin=False) + encode_frame(CONT, b"\xff", fin=False))
    assert events(codec) == [Disconnect(1007, "invalid UTF-8")]
    small = open_codec(max_size=64 * 10)
    small.feed(b"".join(encode_frame(CONT if n else BINARY, b"", fin=False) for n in range(20)))
    assert events(small) == [Disconnect(1009, "too many fragments")]


def test_pongs_owed_are_bounded_in_bytes_and_the_latest_is_kept() -> None:
    codec = open_codec()
    payloads = [b"%03d" % n + b"p" * 120 for n in range(100)]
    codec.feed(b"".join(encode_frame(PING, p) for p in payloads))
    events(codec)
    assert codec.owed.size <= MAX_PONG_BYTES
    owed: list[bytes] = []
    while (data := codec.owed.take()) is not None:
        owed.append(data[2:])  # an unmasked server frame: 2 bytes of header here
    assert owed[0] == payloads[0]  # the first ones are answered in order...
    assert owed[-1] == payloads[-1]  # ...and the newest replaces the last one owed
    assert len(owed) < len(payloads)


def test_a_close_from_the_peer_is_echoed_then_the_half_close_is_owed() -> None:
    codec = open_codec()
    codec.feed(encode_frame(0x8, (1001).to_bytes(2, "big") + b"bye"))
    assert events(codec) == [Disconnect(1001, "bye")]
    assert not codec.open and codec.closing_done
    assert codec.owed.take() is not None  # the echoed close frame
    assert codec.owed.eof


def test_a_publish_is_encoded_once_for_every_connection_with_shared_compression() -> None:
    first, second = open_codec(), open_codec()
    frame = Frame(b'{"type":"t","data":{}}')
    assert first.encode(frame) is second.encode(frame)  # the frame's cached wire bytes


def test_an_idle_connection_holds_no_frame_parser_until_a_frame_needs_it() -> None:
    codec = open_codec()
    protocol: Any = codec._protocol  # pyright: ignore[reportPrivateUsage]
    assert protocol.parser is None  # made when needed: the fast path reads most frames
    assert not hasattr(protocol, "id")  # nor the UUID websockets keeps for its logs
    codec.feed(encode_frame(TEXT, b"fast"))
    assert events(codec) == ["fast"] and protocol.parser is None
    codec.feed(encode_frame(PING, b"p") + encode_frame(TEXT, b"after"))
    assert events(codec) == ["after"]
    assert protocol.parser is not None
    assert codec.owed.take() == b"\x8a\x01p"  # the pong
    assert codec.owed.take() is None and codec.owed.size == 0
    codec.feed(b"")
    assert codec.ended() == Disconnect(1006, "")


def test_a_peer_that_only_closes_the_stream_starts_the_parser_for_its_end() -> None:
    codec = open_codec()
    codec.feed(b"")
    assert codec.eof_received and codec.ended() == Disconnect(1006, "")
