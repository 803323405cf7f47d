"""The wire envelope, byte for byte (``trio_wsroutes/_envelope.py``): what the server,
the Python client and the test client write and read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from trio_wsroutes import ErrorDetail, Position, ProtocolError
from trio_wsroutes._envelope import (
    PING,
    encode_ack,
    encode_envelope,
    encode_error,
    encode_pong,
    parse_envelope,
    request_id_of,
    with_position,
)


def test_an_envelope_is_type_data_id_in_that_order_without_what_is_none() -> None:
    assert encode_envelope("chat", {"text": "hi"}, "42") == (
        b'{"type":"chat","data":{"text":"hi"},"id":"42"}'
    )
    assert encode_envelope("chat", {}, 7) == b'{"type":"chat","data":{},"id":7}'
    assert encode_envelope("chat", {"a": 1}) == b'{"type":"chat","data":{"a":1}}'
    assert encode_envelope("ping") == b'{"type":"ping"}'


def test_ack_error_ping_and_pong() -> None:
    assert encode_ack("r1").payload == b'{"type":"ack","id":"r1"}'
    assert encode_ack(3).payload == b'{"type":"ack","id":3}'
    error = encode_error("BAD", "Nope", "r1", [ErrorDetail("$.data.x", "missing")])
    assert not error.binary
    assert orjson.loads(error.payload) == {
        "type": "error",
        "error": "Nope",
        "code": "BAD",
        "id": "r1",
        "details": [{"path": "$.data.x", "message": "missing"}],
    }
    assert orjson.loads(encode_error("BAD", "Nope").payload) == {
        "type": "error",
        "error": "Nope",
        "code": "BAD",
    }
    assert PING == b'{"type":"ping"}'
    assert encode_pong() == b'{"type":"pong"}'
    assert encode_pong("p1") == b'{"type":"pong","id":"p1"}'


def test_what_is_written_reads_back() -> None:
    assert parse_envelope(encode_envelope("chat", {"x": [1]}, "i")) == ("chat", {"x": [1]}, "i")
    assert parse_envelope(encode_envelope("chat")) == ("chat", {}, None)  # no data: {}
    assert parse_envelope('{"type":"t","data":null}').data is None


@pytest.mark.parametrize(
    ("text", "code", "request_id"),
    [
        ("not json", "INVALID_JSON", None),
        ("[1, 2]", "INVALID_MESSAGE", None),
        ('{"data": {}}', "INVALID_MESSAGE", None),
        ('{"type": 1, "id": "r9"}', "INVALID_MESSAGE", "r9"),  # answerable: it has an id
        ('{"type": "t", "id": 1.5}', "INVALID_MESSAGE", None),
        ('{"type": "t", "id": true}', "INVALID_MESSAGE", None),
    ],
)
def test_a_bad_envelope_is_a_protocol_error_carrying_its_id_when_valid(
    text: str, code: str, request_id: str | None
) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_envelope(text)
    assert raised.value.code == code
    assert raised.value.request_id == request_id
    assert request_id_of(text) == request_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "t", "id": "a"}', "a"),
        ('{"type": "t", "id": 5}', 5),
        ('{"id": 5}', 5),  # no type: still answerable
        ('{"type": "t"}', None),
        ('{"type": "t", "id": null}', None),
        ('{"type": "t", "id": ["a"]}', None),
        ("[]", None),
        ("", None),
    ],
)
def test_the_id_of_any_frame(text: str, expected: Any) -> None:
    assert request_id_of(text) == expected


def test_the_splice_adds_topic_offset_and_epoch_without_re_encoding() -> None:
    payload = encode_envelope("said", {"text": 'quote " backslash \\ snowman ☃'})
    spliced = with_position(payload, 'room:"a"\n☃', Position("Ep-1", 42))
    assert spliced is not None
    assert spliced.startswith(payload[:-1])  # the payload's bytes, untouched
    assert orjson.loads(spliced) == {
        **orjson.loads(payload),
        "topic": 'room:"a"\n☃',
        "offset": 42,
        "epoch": "Ep-1",
    }
    # An empty object, whitespace around, not an object at all.
    assert with_position(b"{}", "t", Position("e", 1)) == b'{"topic":"t","offset":1,"epoch":"e"}'
    assert orjson.loads(with_position(b"{ } \n", "t", Position("e", 1)) or b"") == {
        "topic": "t",
        "offset": 1,
        "epoch": "e",
    }
    for bad in (b"[1,2]", b'"text"', b"", b"{", b"}", b"plain text"):
        assert with_position(bad, "t", Position("e", 1)) is None
