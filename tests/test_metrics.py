"""The Prometheus metrics: scraped from ``/metrics`` over real sockets on both transports,
and checked against what the test did (counts, codes, histogram buckets)."""

from __future__ import annotations

import json
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import HandshakeError, WebSocketConnection, open_websocket_url

from tests._http import http_request
from tests._messages import Ping, Pong
from tests._redis import RedisServer, free_port
from tests.conftest import ServeLive, live_server, wait_until
from trio_wsroutes import (
    BoundAddress,
    Connection,
    Context,
    MessageError,
    Metrics,
    Request,
    WebSocketServer,
    create_websocket_route,
    message,
)
from trio_wsroutes._metric_catalog import METRICS
from trio_wsroutes._metrics_sharing import merge_snapshots

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20

Sample = tuple[str, dict[str, str], float]


@attrs.frozen
class Join:
    topic: str


@attrs.frozen
class Fail:
    code: str


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class Bye:
    code: int


@message("joined")
@attrs.frozen
class Joined:
    topic: str


def app(**options: Any) -> WebSocketServer:
    """``/play/:room``: ping -> pong, join a topic, fail with an error code, sleep, bye
    (the server closes with the given code)."""
    route = create_websocket_route("/play/:room").server_messages(Pong, Joined)

    @route.on("ping", Ping)
    async def ping(ws: Connection[Pong | Joined], data: Ping, ctx: Context[None]) -> Pong:
        return Pong(data.n)

    @route.on("join", Join)
    async def join(ws: Connection[Pong | Joined], data: Join, ctx: Context[None]) -> Joined:
        await ws.subscribe(data.topic)
        return Joined(data.topic)

    @route.on("fail", Fail)
    async def fail(ws: Connection[Pong | Joined], data: Fail, ctx: Context[None]) -> None:
        raise MessageError("no", data.code)

    @route.on("sleep", Sleep)
    async def sleep(ws: Connection[Pong | Joined], data: Sleep, ctx: Context[None]) -> None:
        await trio.sleep(data.seconds)

    @route.on("bye", Bye)
    async def bye(ws: Connection[Pong | Joined], data: Bye, ctx: Context[None]) -> None:
        await ws.close(data.code, "bye")

    def nobody(request: Request) -> None:
        return None

    secret = create_websocket_route("/secret").authenticate(nobody)
    options.setdefault("metrics", Metrics(process_metrics=False))
    return WebSocketServer([route, secret], handler_timeout=0.2, **options)


def parse(text: str) -> dict[str, list[Sample]]:
    """Samples by family name (``trio_wsroutes_`` prefix kept)."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(s.name, dict(s.labels), s.value) for s in family.samples]
    return out


def value(metrics: dict[str, list[Sample]], sample: str, **labels: str) -> float:
    """The value of one sample (0 when absent, as Prometheus reads a missing series)."""
    for samples in metrics.values():
        for name, have, number in samples:
            if name == sample and all(have.get(k) == v for k, v in labels.items()):
                return number
    return 0.0


def buckets(metrics: dict[str, list[Sample]], family: str, **labels: str) -> list[float]:
    """A histogram's cumulative bucket counts, ``+Inf`` last."""
    return [
        number
        for name, have, number in metrics[family]
        if name == f"{family}_bucket" and all(have.get(k) == v for k, v in labels.items())
    ]


async def scrape(address: BoundAddress, path: str = "/metrics") -> dict[str, list[Sample]]:
    response = await http_request(address, "GET", path)
    assert response.status == 200, response
    assert (response.header("content-type") or "").startswith("text/plain")
    return parse(response.body.decode())


async def ws(address: BoundAddress, path: str, stack: AsyncExitStack) -> WebSocketConnection:
    return await stack.enter_async_context(
        open_websocket_url(f"ws://127.0.0.1:{address.port}{path}")
    )


async def ask(conn: WebSocketConnection, kind: str, **data: Any) -> dict[str, Any]:
    await conn.send_message(json.dumps({"type": kind, "data": data}))
    answer: dict[str, Any] = json.loads(await conn.get_message())
    return answer


async def test_every_count_matches_what_the_clients_did(serve_live: ServeLive) -> None:
    route = "/play/:room"
    server = app()
    sent_bytes = received_bytes = 0
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address, AsyncExitStack() as stack:
            first = await ws(address, "/play/a", stack)
            second = await ws(address, "/play/b", stack)
            scraped = await scrape(address)
            assert value(scraped, "trio_wsroutes_connections_open", route=route) == 2
            assert value(scraped, "trio_wsroutes_connections_opened_total", route=route) == 2

            frames: list[str] = []
            for n in range(5):
                frames.append(json.dumps({"type": "ping", "data": {"n": n}}))
            frames.append(json.dumps({"type": "ping", "data": {"n": "five"}}))  # invalid
            frames.append(json.dumps({"type": "nope", "data": {}}))  # unknown type
            frames.append(json.dumps({"type": "fail", "data": {"code": "SOLD_OUT"}}))
            frames.append(json.dumps({"type": "sleep", "data": {"seconds": 5}}))  # times out
            frames.append(json.dumps({"type": "join", "data": {"topic": "news"}}))
            replies: list[str] = []
            for frame in frames:
                await first.send_message(frame)
                sent_bytes += len(frame.encode())
                reply = await first.get_message()
                assert isinstance(reply, str)
                replies.append(reply)
                received_bytes += len(reply.encode())
            kinds = [json.loads(r)["type"] for r in replies]
            assert kinds == ["pong"] * 5 + ["error"] * 4 + ["joined"]
            assert await server.publish("news", Pong(1)) == 1
            assert await server.publish("news", Pong(2)) == 1
            for _ in range(2):
                received_bytes += len(str(await first.get_message()).encode())

            with pytest.raises(HandshakeError):
                await ws(address, "/nowhere", stack)
            with pytest.raises(HandshakeError):
                await ws(address, "/secret", stack)

            bye = json.dumps({"type": "bye", "data": {"code": 4321}})
            await second.send_message(bye)
            await wait_until(lambda: server.route_stats[route].connections_open == 1)
            scraped = await scrape(address)
            # The open connection's counts are included while it is open.
            assert value(scraped, "trio_wsroutes_received_bytes_total", route=route) == (
                sent_bytes + len(bye.encode())
            )
            assert value(scraped, "trio_wsroutes_sent_bytes_total", route=route) == received_bytes

    m = scraped
    assert value(m, "trio_wsroutes_connections_open", route=route) == 1
    assert value(m, "trio_wsroutes_connections_closed_total", route=route, code="4321") == 1
    received = {
        kind: value(m, "trio_wsroutes_messages_received_total", route=route, type=kind)
        for kind in ("ping", "join", "fail", "sleep", "bye", "_other")
    }
    assert received == {"ping": 6, "join": 1, "fail": 1, "sleep": 1, "bye": 1, "_other": 1}
    sent = {
        kind: value(m, "trio_wsroutes_messages_sent_total", route=route, type=kind)
        for kind in ("pong", "joined", "_published", "_other")
    }
    assert sent == {"pong": 5, "joined": 1, "_published": 2, "_other": 4}
    errors = {
        code: value(m, "trio_wsroutes_error_replies_total", route=route, code=code)
        for code in ("VALIDATION_ERROR", "UNKNOWN_TYPE", "SOLD_OUT", "HANDLER_TIMEOUT")
    }
    assert errors == dict.fromkeys(errors, 1)
    assert value(m, "trio_wsroutes_handler_timeouts_total", route=route, type="sleep") == 1
    assert value(m, "trio_wsroutes_handler_timeouts_total", route=route, type="ping") == 0
    assert value(m, "trio_wsroutes_upgrades_denied_total", status="404", code="NOT_FOUND") == 1
    assert value(m, "trio_wsroutes_upgrades_denied_total", status="401", code="UNAUTHORIZED") == 1
    assert value(m, "trio_wsroutes_publishes_total") == 2
    assert value(m, "trio_wsroutes_deliveries_total") == 2
    assert value(m, "trio_wsroutes_subscriptions") == 1
    assert value(m, "trio_wsroutes_topics") == 1

    # Histograms: cumulative buckets ending in +Inf == _count, one per handled message.
    family = "trio_wsroutes_handler_duration_seconds"
    pings = buckets(m, family, route=route, type="ping")
    assert len(pings) == len(METRICS_BOUNDS) + 1
    assert pings == sorted(pings)
    assert pings[-1] == value(m, f"{family}_count", route=route, type="ping") == 5
    slept = buckets(m, family, route=route, type="sleep")
    # The timed-out handler ran 0.2 s: not in the buckets up to 0.1 s, in those from 0.25.
    assert slept[METRICS_BOUNDS.index(0.1)] == 0
    assert slept[METRICS_BOUNDS.index(0.25)] == 1
    assert value(m, f"{family}_sum", route=route, type="sleep") >= 0.2
    upgrades = buckets(m, "trio_wsroutes_upgrade_duration_seconds", route=route)
    assert upgrades[-1] == 2


METRICS_BOUNDS = [
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
]


async def test_every_declared_metric_is_exported_with_its_prefix_and_type(
    serve_live: ServeLive,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_live(app()) as address:
            response = await http_request(address, "GET", "/metrics")
    types = {
        family.name: family.type
        for family in text_string_to_metric_families(response.body.decode())
    }
    for spec in METRICS:
        name = "trio_wsroutes_" + spec.name.removesuffix("_total")
        assert types.get(name) == spec.kind, spec.name


async def test_the_metrics_are_not_served_unless_asked_for(serve_live: ServeLive) -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_live(app(metrics=None)) as address:
            response = await http_request(address, "GET", "/metrics")
    assert response.status == 404
    assert b"trio_wsroutes_" not in response.body


async def test_authorize_decides_who_reads_the_metrics(serve_live: ServeLive) -> None:
    seen: list[Request] = []

    async def authorize(request: Request) -> bool:
        seen.append(request)
        return request.headers.get("authorization") == "Bearer scrape"

    server = app(metrics=Metrics(path="/internal/metrics", authorize=authorize))
    with trio.fail_after(TIMEOUT):
        async with serve_live(server) as address:
            refused = await http_request(address, "GET", "/internal/metrics")
            wrong = await http_request(
                address, "GET", "/internal/metrics", [("Authorization", "Bearer no")]
            )
            allowed = await http_request(
                address, "GET", "/internal/metrics", [("Authorization", "Bearer scrape")]
            )
            elsewhere = await http_request(address, "GET", "/metrics")
    assert (refused.status, wrong.status, allowed.status) == (403, 403, 200)
    assert b"trio_wsroutes_" not in refused.body + wrong.body
    assert b"trio_wsroutes_connections_open" in allowed.body
    assert elsewhere.status == 404
    assert len(seen) == 3
    assert seen[0].client is not None and seen[0].client[0] == "127.0.0.1"


async def test_a_failing_authorize_refuses_and_is_logged(
    serve_live: ServeLive, caplog: pytest.LogCaptureFixture
) -> None:
    def authorize(request: Request) -> bool:
        raise RuntimeError("secret store down")

    with trio.fail_after(TIMEOUT):
        async with serve_live(app(metrics=Metrics(authorize=authorize))) as address:
            response = await http_request(address, "GET", "/metrics")
    assert response.status == 403
    assert b"secret store" not in response.body
    assert "Metrics.authorize failed" in caplog.text


async def test_process_metrics_come_from_prometheus_clients_registry(
    serve_live: ServeLive,
) -> None:
    from prometheus_client import Counter

    mine = Counter("orders_shipped", "An application's own counter.")
    mine.inc(3)
    try:
        with trio.fail_after(TIMEOUT):
            async with serve_live(app(metrics=True)) as address:
                scraped = await scrape(address)
    finally:
        from prometheus_client import REGISTRY

        REGISTRY.unregister(mine)
    assert value(scraped, "orders_shipped_total") == 3
    assert "trio_wsroutes_connections_open" in scraped


async def test_metrics_app_serves_them_where_the_application_mounts_it() -> None:
    server = app()

    async def http_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/ops/metrics":
            await server.metrics_app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server.http_app = http_app
    with trio.fail_after(TIMEOUT):
        async with live_server(server, "hypercorn") as address:
            got = await http_request(address, "GET", "/ops/metrics")
            head = await http_request(address, "HEAD", "/ops/metrics")
            post = await http_request(address, "POST", "/ops/metrics")
            other = await http_request(address, "GET", "/other")
    assert got.status == 200 and b"trio_wsroutes_connections_open" in got.body
    assert head.status == 200 and head.body == b""
    assert post.status == 405 and post.header("allow") == "GET, HEAD"
    assert other.status == 418


def test_metrics_app_needs_the_metrics_option() -> None:
    with pytest.raises(RuntimeError, match="metrics=True"):
        _ = app(metrics=None).metrics_app


def test_the_metrics_option_names_the_extra_when_prometheus_client_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"trio-wsroutes\[metrics\]"):
        app(metrics=True)
    app(metrics=None)  # no metrics, no import


def test_metrics_takes_true_false_or_a_metrics() -> None:
    assert app(metrics=True).metrics == Metrics()
    assert app(metrics=False).metrics is None
    with pytest.raises(TypeError, match="Metrics"):
        app(metrics="yes")


# -- several processes -------------------------------------------------------------------


def _snapshot(pid: int, opened: int, open_now: int, ended: bool = False) -> dict[str, Any]:
    snapshot: dict[str, Any] = {
        "pid": pid,
        "metrics": {
            "connections_opened_total": {
                "kind": "counter",
                "help": "",
                "labels": ["route"],
                "samples": [["/r", opened]],
            },
            "connections_open": {
                "kind": "gauge",
                "help": "",
                "labels": ["route"],
                "samples": [["/r", open_now]],
            },
            "handler_duration_seconds": {
                "kind": "histogram",
                "help": "",
                "labels": ["route", "type"],
                "samples": [["/r", "t", {"bounds": [0.1, 1.0], "counts": [1, 2, 3], "sum": 9}]],
            },
        },
    }
    if ended:
        snapshot["ended"] = True
    return snapshot


def test_processes_add_up_counters_of_all_and_gauges_of_the_living() -> None:
    merged = merge_snapshots(
        [_snapshot(10, 5, 2), _snapshot(11, 7, 3), _snapshot(12, 1, 9), _snapshot(13, 2, 4, True)],
        live=lambda pid: pid in (10, 11, 13),
    )["metrics"]
    assert merged["connections_opened_total"]["samples"] == [["/r", 15]]
    assert merged["connections_open"]["samples"] == [["/r", 5]]  # 12 is gone, 13 ended
    histogram = merged["handler_duration_seconds"]["samples"][0][2]
    assert histogram == {"bounds": [0.1, 1.0], "counts": [4, 8, 12], "sum": 36}


async def test_two_hypercorn_workers_add_up_in_every_scrape(
    redis: RedisServer, tmp_path: Path
) -> None:
    """``hypercorn --workers 2`` with a shared Redis and a shared metrics directory."""
    port, shared, log_path = free_port(), tmp_path / "metrics", tmp_path / "hypercorn.log"
    address = BoundAddress("127.0.0.1", port, False)
    command = [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "2"]
    command += ["--bind", f"127.0.0.1:{port}", "tests.metrics_app:server"]
    log = log_path.open("wb")
    process = await trio.lowlevel.open_process(
        command,
        cwd=ROOT,
        env={
            **os.environ,
            "WSROUTES_REDIS_URL": redis.url,
            "PROMETHEUS_MULTIPROC_DIR": str(shared),
        },
        stdout=log,
        stderr=log,
    )
    try:
        with trio.fail_after(60):
            await wait_until(lambda: log_path.read_bytes().count(b"Running on") >= 2, 30)
            async with AsyncExitStack() as stack:
                clients: list[WebSocketConnection] = []

                def workers_with_clients() -> int:
                    reply = redis.command("PUBSUB", "NUMSUB", "wsroutes:room")
                    return int(reply.split(b"\r\n")[-2].lstrip(b":"))

                # The kernel picks the worker of each connection: connect until both have one.
                while workers_with_clients() < 2:
                    assert len(clients) < 200, "every connection went to one worker"
                    await trio.sleep(0.02)
                    conn = await ws(address, "/play/x", stack)
                    assert (await ask(conn, "join", topic="room"))["type"] == "joined"
                    clients.append(conn)
                for conn in clients:
                    assert (await ask(conn, "ping", n=1))["type"] == "pong"
                await clients[0].send_message(json.dumps({"type": "shout", "data": {"n": 7}}))
                for conn in clients:  # the publish reaches both workers' subscribers
                    assert json.loads(await conn.get_message()) == {
                        "type": "pong",
                        "data": {"n": 7},
                    }
                count = len(clients)

                def files() -> list[Path]:
                    return sorted(shared.glob("trio_wsroutes-*.json"))

                await wait_until(lambda: len(files()) == 2, 10)
                # Both workers' numbers are in every scrape, whichever worker answers.
                for _ in range(6):
                    await trio.sleep(1.1)  # each worker shares its numbers every second
                    m = await scrape(address)
                    route = "/play/:room"
                    assert value(m, "trio_wsroutes_connections_open", route=route) == count
                    assert value(m, "trio_wsroutes_connections_opened_total", route=route) == count
                    assert (
                        value(m, "trio_wsroutes_messages_received_total", route=route, type="ping")
                        == count
                    )
                    assert (
                        value(m, "trio_wsroutes_messages_received_total", route=route, type="join")
                        == count
                    )
                    assert value(m, "trio_wsroutes_publishes_total") == 1
                    assert value(m, "trio_wsroutes_deliveries_total") == count
                    assert value(m, "trio_wsroutes_subscriptions") == count
                    family = "trio_wsroutes_handler_duration_seconds"
                    assert buckets(m, family, route=route, type="ping")[-1] == count
                pids = {json.loads(path.read_bytes())["pid"] for path in files()}
                assert len(pids) == 2
    finally:
        process.terminate()
        with trio.move_on_after(10) as scope:
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            await process.wait()
        log.close()
