"""The fast path of the native codec's reading: the messages that make up nearly all
traffic (whole, masked text or binary frames with a short header) parsed without the
protocol's general parser. ``tests/transports/test_codec.py`` checks it against the
protocol's own parser on random frames."""

from __future__ import annotations

from typing import Any

from websockets.utils import apply_mask

try:  # the C version, as the protocol itself uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its C extension
    pass

__all__ = ["parse_simple_frames"]


def parse_simple_frames(data: bytes, limit: int | None, items: list[Any]) -> int:
    """The fast path of reading: whole, unfragmented, masked text or binary frames
    with a short header, at the start of ``data``, become messages here without the
    protocol's general parser. Returns how many bytes it took; anything else (control
    frames, fragments, long or oversized frames, a frame cut short, invalid UTF-8) is
    left, from there on, to the protocol, which parses it exactly as it would have.

    The messages are appended to ``items``; ``limit`` is the largest message taken."""
    size = len(data)
    taken = 0
    while size - taken >= 6:
        first = data[taken]
        second = data[taken + 1]
        if (first != 0x81 and first != 0x82) or not second & 0x80:
            break  # not FIN + text/binary without RSV bits, or not masked
        length = second & 0x7F
        start = taken + 6
        if length == 126:
            if size - taken < 8:
                break
            length = (data[taken + 2] << 8) | data[taken + 3]
            start = taken + 8
        elif length == 127:
            break
        end = start + length
        if end > size or (limit is not None and length > limit):
            break
        payload = apply_mask(data[start:end], data[start - 4 : start])
        if first == 0x81:
            try:
                items.append(str(payload, "utf-8"))
            except UnicodeDecodeError:
                break  # the protocol's path fails it with 1007
        else:
            items.append(payload)
        taken = end
    return taken
