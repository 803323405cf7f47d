"""The notifications, live data and HTTP + WebSocket examples, as their users meet them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected, open_websocket_url

from examples.http_and_ws import app as http_and_ws
from examples.live_data import app as live_data
from examples.notifications import app as notifications
from tests._http import http_request
from trio_wsroutes.testing import ConnectionDenied, TestClient

# -- notifications -------------------------------------------------------------------------


async def test_notifications_reach_only_their_user_and_can_be_marked_read() -> None:
    server = notifications.server
    async with (
        TestClient(server) as client,
        client.connect("/notifications", query={"token": "alice-token"}) as alice,
        client.connect("/notifications", headers={"Authorization": "Bearer bob-token"}) as bob,
    ):
        await trio.testing.wait_all_tasks_blocked()
        assert await notifications.notify("1", "Build finished", "main is green") == 1
        note = await alice.receive()
        assert note["type"] == "notification"
        assert note["data"]["title"] == "Build finished"
        with pytest.raises(trio.TooSlowError):
            await bob.receive(timeout=0.05)

        reply = await alice.request("mark_read", {"id": note["data"]["id"]})
        assert reply["type"] == "read"
        again = await alice.request("mark_read", {"id": note["data"]["id"]})
        assert again["code"] == "NOT_FOUND"


async def test_notifications_need_a_valid_token() -> None:
    async with TestClient(notifications.server) as client:
        for query in ({}, {"token": "stolen"}):
            with pytest.raises(ConnectionDenied) as denied:
                async with client.connect("/notifications", query=query):
                    pass
            assert denied.value.status == 401


async def test_notifications_cookie_token() -> None:
    async with (
        TestClient(notifications.server) as client,
        client.connect("/notifications", headers={"Cookie": "token=bob-token"}) as bob,
    ):
        await trio.testing.wait_all_tasks_blocked()
        assert await notifications.notify("2", "Hi", "Bob") == 1
        assert (await bob.receive())["data"]["body"] == "Bob"


# -- live data -------------------------------------------------------------------------------


async def test_live_data_streams_ticks_in_order_and_reports_its_queue() -> None:
    async with TestClient(live_data.server) as client, client.connect("/live") as ws:
        await ws.send("subscribe")
        seqs = [(await ws.receive())["data"]["seq"] for _ in range(5)]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 5
        stats = await ws.request("stats")
        assert stats["type"] == "stats"
        assert stats["data"]["dropped"] == 0


async def test_send_latest_skips_while_the_client_is_behind() -> None:
    server = live_data.server
    async with TestClient(server) as client, client.connect("/live") as ws:
        await trio.testing.wait_all_tasks_blocked()
        connection = server.registry.all()[0]
        ws.pause_reading()
        tick = live_data.Tick(seq=0, value=0.0)
        sent = 0
        while await live_data.send_latest(connection, tick):
            sent += 1
        assert connection.buffered_amount > live_data.SNAPSHOT_SKIP_AT
        assert sent > 0
        ws.resume_reading()


# -- HTTP and WebSocket on one port, one verify_token -------------------------------------------


@pytest.mark.transports("hypercorn")  # HTTP beside WebSocket on one port
async def test_http_and_websocket_share_one_token_check(
    serve_live: Callable[..., Any],
) -> None:
    async with serve_live(http_and_ws.server) as address:
        anonymous = await http_request(address, "GET", "/api/me")
        assert anonymous.status == 403
        me = await http_request(
            address, "GET", "/api/me", [("Authorization", "Bearer alice-token")]
        )
        assert me.status == 200
        assert orjson.loads(me.body) == {"id": "1", "name": "Alice"}

        login = await http_request(address, "POST", "/login?token=bob-token")
        assert login.status == 200
        cookie = login.header("set-cookie")
        assert cookie is not None
        assert cookie.startswith("session=bob-token")

        url = f"{address.ws_url}/ws/updates"
        async with open_websocket_url(
            url, extra_headers=[(b"authorization", b"Bearer alice-token")]
        ) as ws:
            await ws.send_message('{"type": "whoami", "id": 1}')
            reply = orjson.loads(await ws.get_message())
            assert reply["data"] == {"id": "1", "name": "Alice", "via": "header"}
        async with open_websocket_url(
            url, extra_headers=[(b"cookie", b"session=bob-token")]
        ) as ws:
            await ws.send_message('{"type": "whoami", "id": 2}')
            reply = orjson.loads(await ws.get_message())
            assert reply["data"] == {"id": "2", "name": "Bob", "via": "cookie"}
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url):
                pass
        assert rejected.value.status_code == 401


# -- collaborative editing -------------------------------------------------------------------


async def test_collaborative_editing_initial_state_and_ordered_edits() -> None:
    from examples.collaborative_editing import app as editing

    editing.documents.clear()
    server = editing.server
    async with (
        TestClient(server) as client,
        client.connect("/document/notes?token=ada") as ada,
    ):
        init = await ada.receive()
        assert init == {"type": "init", "data": {"doc_id": "notes", "content": "", "version": 0}}
        await ada.send("edit", {"base_version": 0, "start": 0, "end": 0, "insert": "Hello"})
        assert (await ada.receive())["data"]["version"] == 1

        async with client.connect("/document/notes?token=grace") as grace:
            snapshot = await grace.receive()
            assert snapshot["data"] == {"doc_id": "notes", "content": "Hello", "version": 1}
            await grace.send("edit", {"base_version": 1, "start": 5, "end": 5, "insert": "!"})
            for ws in (ada, grace):
                edit = await ws.receive()
                assert edit["type"] == "edit"
                assert edit["data"] == {
                    "user_id": "grace",
                    "start": 5,
                    "end": 5,
                    "insert": "!",
                    "version": 2,
                }
            stale = await ada.request("edit", {"base_version": 1, "start": 0, "end": 0})
            assert stale["code"] == "STALE_VERSION"
            bad = await ada.request("edit", {"base_version": 2, "start": 0, "end": 99})
            assert bad["code"] == "BAD_RANGE"
            negative = await ada.request("edit", {"base_version": 2, "start": -1, "end": 0})
            assert negative["code"] == "VALIDATION_ERROR"
        assert editing.documents["notes"].content == "Hello!"
        with pytest.raises(ConnectionDenied):
            async with client.connect("/document/notes"):
                pass


# -- binary stream -----------------------------------------------------------------------------


async def test_binary_stream_relays_chunks_and_summarises() -> None:
    import hashlib

    from examples.binary_stream import app as binary

    chunks = [bytes([n]) * (1000 + n) for n in range(5)]
    async with (
        TestClient(binary.server) as client,
        client.connect("/stream/radio/listen") as listener,
        client.connect("/stream/radio/publish") as producer,
    ):
        started = await producer.request("start", {"content_type": "audio/ogg"})
        assert started["data"] == {"stream": "radio", "content_type": "audio/ogg"}
        assert (await listener.receive())["type"] == "started"
        for chunk in chunks:
            await producer.send_bytes(chunk)
        assert [await listener.receive_bytes() for _ in chunks] == chunks
        stopped = await producer.request("stop")
        expected = {
            "stream": "radio",
            "chunks": 5,
            "bytes": sum(map(len, chunks)),
            "sha256": hashlib.sha256(b"".join(chunks)).hexdigest(),
        }
        assert stopped["data"] == expected
        assert (await listener.receive())["data"] == expected
        # Listeners do not take binary frames.
        await listener.send_bytes(b"nope")
        assert await listener.wait_closed() == 1003


async def test_binary_stream_needs_start_before_chunks() -> None:
    from examples.binary_stream import app as binary

    async with TestClient(binary.server) as client, client.connect("/stream/x/publish") as ws:
        await ws.send_bytes(b"too early")
        assert await ws.wait_closed() == 1008
