"""``trio-wsroutes serve --native --workers N``: real supervisor and worker processes on
127.0.0.1, serving ``tests/workers_app.py``. Which worker accepts a connection is up to
the kernel, so the tests connect until they have met every worker they need."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio
import trustme
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.trio.client import ClientConnection, connect

import trio_wsroutes
from tests._redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.workers_app:server"
SERVE = [sys.executable, "-m", "trio_wsroutes._cli", "serve", APP, "--native"]
GRACE = 5.0  # the app's close_timeout (the default)
TIMEOUT = 30  # generous: the machine is shared, and each worker imports the app


class Supervisor:
    """A running ``serve --workers`` process, its log, and the port it announced."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.port = 0
        self.tls: ssl.SSLContext | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def announced(self) -> None:
        pattern = re.compile(r"serving \S+ on wss?://127\.0\.0\.1:(\d+)")
        while (match := pattern.search(self.output())) is None:
            assert self.process.poll() is None, self.output()
            await trio.sleep(0.05)
        self.port = int(match.group(1))

    def url(self, path: str) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"

    @asynccontextmanager
    async def client(self, path: str) -> AsyncIterator[tuple[ClientConnection, int]]:
        """A connection and the pid of the worker that greeted it."""
        async with connect(self.url(path), ssl=self.tls, ping_interval=None) as ws:
            greeting = json.loads(await ws.recv())
            assert greeting["type"] == "pid"
            yield ws, int(greeting["data"]["pid"])

    async def meet_workers(
        self, stack: AsyncExitStack, path: str, count: int, *, a_worker_died: bool = False
    ) -> dict[int, ClientConnection]:
        """Open connections until ``count`` different workers hold one; one per worker.
        After ``a_worker_died``, a connection may fail: the kernel had queued it on the
        dead worker's socket (a client reconnects)."""
        found: dict[int, ClientConnection] = {}
        for _ in range(1000):
            try:
                ws, pid = await stack.enter_async_context(self.client(path))
            except Exception as exc:
                if not (a_worker_died and _lost(exc)):
                    raise
                await trio.sleep(0.02)
                continue
            found.setdefault(pid, ws)
            if len(found) == count:
                return found
            # Which worker accepts is up to the kernel: give the other one time to wake.
            await trio.sleep(0.02)
        raise AssertionError(f"1000 connections went to {sorted(found)} only")


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception it groups) says the connection was lost."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_lost(inner) for inner in exc.exceptions)
    return isinstance(exc, OSError | InvalidMessage | EOFError)


@asynccontextmanager
async def supervisor(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    group: bool = False,
    target: str = APP,
) -> AsyncIterator[Supervisor]:
    """Start ``serve TARGET --native --port 0 ARGS`` and wait until it says it serves;
    kill it (and its workers, by pid) on the way out if it is still running."""
    log = tmp_path / "serve.log"
    serve = [sys.executable, "-m", "trio_wsroutes._cli", "serve", target, "--native"]
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [*serve, "--port", "0", *args],
            cwd=ROOT,
            stdout=out,
            stderr=out,
            env={**os.environ, **(env or {})},
            start_new_session=group,  # its own process group, as a terminal's job
        )
    running = Supervisor(process, log)
    try:
        with trio.fail_after(TIMEOUT):
            await running.announced()
        yield running
    finally:
        if process.returncode is None:
            workers = _children(process.pid)
            process.kill()
            await process.wait()
            for pid in workers:
                with _gone_already():
                    os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(") ")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rpartition(") ")[2].startswith("Z")


@contextmanager
def _gone_already() -> Iterator[None]:
    try:
        yield
    except ProcessLookupError:
        pass


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; its close code (``None`` without a close frame)."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_two_workers_serve_one_port(tmp_path: Path) -> None:
    async with supervisor(tmp_path, "--workers", "2", "--allow-memory-broker") as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                workers = await running.meet_workers(stack, "/pid", 2)
        assert running.process.pid not in workers  # the supervisor serves no one itself
        assert sorted(workers) == sorted(_children(running.process.pid))


async def test_one_worker_is_the_process_itself(tmp_path: Path) -> None:
    # --workers 1 (the default) runs no supervisor: the process started serves.
    async with supervisor(tmp_path, "--workers", "1") as running:
        with trio.fail_after(TIMEOUT):
            async with running.client("/pid") as (_, pid):
                assert pid == running.process.pid


async def test_a_publish_reaches_subscribers_in_every_worker_through_redis(
    redis: RedisServer, tmp_path: Path
) -> None:
    env = {"WSROUTES_REDIS_URL": redis.url}
    async with supervisor(tmp_path, "--workers", "2", env=env) as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                workers = await running.meet_workers(stack, "/room", 2)
                clients = list(workers.values())
                await clients[0].send(json.dumps({"type": "say", "data": {"text": "to all"}}))
                for ws in clients:
                    said = json.loads(await ws.recv())
                    assert said["type"] == "said"
                    assert said["data"] == {"text": "to all", "pid": next(iter(workers))}


async def scrape_open_connections(port: int) -> int:
    """``GET /metrics`` on a new connection (so the kernel picks the worker again): the
    open connections of ``/pid`` it reports."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        response = b""
        while data := await stream.receive_some():
            response += data
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    match = re.search(rb'^trio_wsroutes_connections_open\{route="/pid"\} (\S+)$', body, re.M)
    return 0 if match is None else int(float(match.group(1)))


async def open_on_every_worker(
    running: Supervisor, stack: AsyncExitStack, count: int
) -> dict[int, int]:
    """Open ``/pid`` connections (kept open) until ``count`` workers hold some: how many
    each holds."""
    held: dict[int, int] = {}
    while len(held) < count:
        _, pid = await stack.enter_async_context(running.client("/pid"))
        held[pid] = held.get(pid, 0) + 1
        await trio.sleep(0.02)  # let the other worker wake up to accept
    return held


async def test_a_scrape_of_any_worker_adds_up_the_metrics_of_all(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"  # where the supervisor makes the shared directory
    temporary.mkdir()
    env = {"WSROUTES_TEST_METRICS": "1", "TMPDIR": str(temporary)}
    async with supervisor(tmp_path, "--workers", "2", "--allow-memory-broker", env=env) as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                held = await open_on_every_worker(running, stack, 2)
                total = sum(held.values())
                # Each worker alone holds fewer than ``total``: only the sum, whichever
                # worker answers, makes 20 scrapes in a row say ``total`` (the workers
                # write their numbers every second, so the first may lag).
                in_a_row = 0
                while in_a_row < 20:
                    if await scrape_open_connections(running.port) == total:
                        in_a_row += 1
                    else:
                        in_a_row = 0
                        await trio.sleep(0.1)
                (shared,) = temporary.glob("trio-wsroutes-metrics-*")
                assert len(list(shared.glob("trio_wsroutes-*.json"))) == 2
            os.kill(running.process.pid, signal.SIGTERM)
            assert await running.process.wait() == 0
    assert not shared.exists()  # removed when the supervisor stops


async def test_workers_share_the_metrics_directory_the_environment_names(
    tmp_path: Path,
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    named = tmp_path / "metrics"
    named.mkdir()
    env = {
        "WSROUTES_TEST_METRICS": "1",
        "TMPDIR": str(temporary),
        "PROMETHEUS_MULTIPROC_DIR": str(named),
    }
    async with supervisor(tmp_path, "--workers", "2", "--allow-memory-broker", env=env) as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                held = await open_on_every_worker(running, stack, 2)
                while True:  # the workers' numbers reach the directory within a second
                    if await scrape_open_connections(running.port) == sum(held.values()):
                        break
                    await trio.sleep(0.1)
            os.kill(running.process.pid, signal.SIGTERM)
            assert await running.process.wait() == 0
    assert len(list(named.glob("trio_wsroutes-*.json"))) == 2  # the deployment's to keep
    assert not list(temporary.glob("trio-wsroutes-metrics-*"))  # none made


VERSIONED_APP = """
import os

import attrs

from trio_wsroutes import Connection, Context, WebSocketServer, create_websocket_route, message

@message("hello")
@attrs.frozen
class Hello:
    version: int
    pid: int

hello = create_websocket_route("/hello").server_messages(Hello)

@hello.on_connect
async def greet(ws: Connection[Hello], ctx: Context[None]) -> None:
    await ws.send(Hello(VERSION, os.getpid()))

VERSION = {version}
server = WebSocketServer([hello])
"""


def write_app(directory: Path, version: int, *, broken: bool = False) -> None:
    """``versioned.py``: greets each connection with ``version`` (``broken``: its import
    fails, as a deployment with a bug would)."""
    source = VERSIONED_APP.format(version=version)
    if broken:
        source += "\nraise RuntimeError('a bug in the new code')\n"
    (directory / "versioned.py").write_text(source)


# No bytecode cache: a new version written within the second of the old, at the same
# size, would otherwise be taken for it.
FRESH_IMPORTS = {"PYTHONDONTWRITEBYTECODE": "1"}


async def greeting(running: Supervisor) -> tuple[int, int]:
    """Connect to ``/hello``: the version and pid of the worker that answered."""
    async with connect(running.url("/hello"), ping_interval=None) as ws:
        data = json.loads(await ws.recv())["data"]
        return int(data["version"]), int(data["pid"])


@asynccontextmanager
async def versioned_workers(tmp_path: Path) -> AsyncIterator[Supervisor]:
    """Two workers serving version 1 of ``versioned.py``, written in ``tmp_path``."""
    write_app(tmp_path, 1)
    args = ("--workers", "2", "--allow-memory-broker", "--app-dir", str(tmp_path))
    async with supervisor(
        tmp_path, *args, target="versioned:server", env=FRESH_IMPORTS
    ) as running:
        yield running


async def test_sighup_replaces_the_workers_one_at_a_time_with_the_new_code(
    tmp_path: Path,
) -> None:
    async with versioned_workers(tmp_path) as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                old: dict[int, ClientConnection] = {}
                while len(old) < 2:
                    ws = await stack.enter_async_context(
                        connect(running.url("/hello"), ping_interval=None)
                    )
                    data = json.loads(await ws.recv())["data"]
                    assert data["version"] == 1
                    old.setdefault(int(data["pid"]), ws)
                    await trio.sleep(0.02)
                write_app(tmp_path, 2)  # deployed
                os.kill(running.process.pid, signal.SIGHUP)
                fewest_serving = 2
                while "reload done" not in running.output():
                    # One worker at a time: the port is never left without one.
                    alive = [pid for pid in _children(running.process.pid) if _alive(pid)]
                    fewest_serving = min(fewest_serving, len(alive))
                    await trio.sleep(0.01)
                codes = [await close_code(ws) for ws in old.values()]
            new = set(_children(running.process.pid))
            assert codes == [1001, 1001]  # their clients were closed as on a shutdown
            assert fewest_serving >= 1
            assert len(new) == 2 and not new & set(old)
            versions = {await greeting(running) for _ in range(10)}
            assert {version for version, _ in versions} == {2}
            assert running.process.poll() is None  # the supervisor itself goes on
            assert "Traceback" not in running.output()


async def test_a_reload_whose_new_code_fails_keeps_the_other_workers_serving(
    tmp_path: Path,
) -> None:
    async with versioned_workers(tmp_path) as running:
        with trio.fail_after(TIMEOUT):
            write_app(tmp_path, 2, broken=True)
            os.kill(running.process.pid, signal.SIGHUP)
            while "reload stopped" not in running.output():
                assert running.process.poll() is None, running.output()
                await trio.sleep(0.05)
            # The second worker was not replaced: it alone serves, the old code.
            for _ in range(10):
                assert (await greeting(running))[0] == 1
            # The failed worker keeps retrying, and each retry imports the code again:
            # fixed, it serves (beside the old one, until the next SIGHUP).
            write_app(tmp_path, 3)
            while (version := (await greeting(running))[0]) != 3:
                assert version == 1  # the old worker, or the fixed one: never a failure
                await trio.sleep(0.1)
            assert running.process.poll() is None


@pytest.mark.parametrize("how", ["SIGTERM-to-supervisor", "SIGINT-to-group"])
async def test_a_signal_closes_every_client_in_every_worker_with_1001(
    tmp_path: Path, how: str
) -> None:
    group = how.endswith("group")
    args = ("--workers", "2", "--allow-memory-broker")
    async with supervisor(tmp_path, *args, group=group) as running:
        codes: list[int | None] = []
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                workers = await running.meet_workers(stack, "/pid", 2)
                if group:  # Ctrl+C in a terminal: every process of the job gets it
                    os.killpg(running.process.pid, signal.SIGINT)
                else:  # a process manager that signals the main process only
                    os.kill(running.process.pid, signal.SIGTERM)
                with trio.fail_after(GRACE + 10):
                    for ws in workers.values():
                        codes.append(await close_code(ws))
                    returncode = await running.process.wait()
        assert codes == [1001, 1001]
        assert returncode == 0
        assert not any(_alive(pid) for pid in workers)  # no worker left behind
        assert "Traceback" not in running.output()
        assert running.output().rstrip().endswith("trio-wsroutes: stopped")


async def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(tmp_path: Path) -> None:
    async with supervisor(tmp_path, "--workers", "2", "--allow-memory-broker") as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                first = await running.meet_workers(stack, "/pid", 2)
            victim, survivor = sorted(first)
            os.kill(victim, signal.SIGKILL)
            # The port keeps serving (by the survivor) while the victim is replaced, and
            # the replacement serves too.
            async with AsyncExitStack() as stack:
                after = await running.meet_workers(stack, "/pid", 2, a_worker_died=True)
        assert survivor in after
        assert victim not in after
        assert sorted(after) == sorted(_children(running.process.pid))
        assert f"(pid {victim}) was killed by SIGKILL" in running.output()
        assert "restarting it in 0.5 s" in running.output()


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    async with supervisor(tmp_path, "--workers", "2", "--allow-memory-broker") as running:
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                workers = await running.meet_workers(stack, "/pid", 2)
                running.process.kill()
                await running.process.wait()
                for ws in workers.values():  # each worker shuts down, gracefully
                    assert await close_code(ws) == 1001
            while any(_alive(pid) for pid in workers):  # noqa: ASYNC110 (other processes)
                await trio.sleep(0.05)


def run_serve(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_two_workers_with_a_memory_broker_refuse_to_start() -> None:
    result = run_serve("--port", "0", "--workers", "2")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trio-wsroutes: error: 2 workers with a MemoryBroker")
    assert "RedisBroker" in lines[0]
    assert "--allow-memory-broker" in lines[0]


def test_an_address_in_use_is_one_line_and_exit_status_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ("--port", str(port), "--workers", "2", "--allow-memory-broker")
        result = run_serve(*args)
    assert result.returncode == 2
    assert result.stderr == (
        f"trio-wsroutes: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_workers_need_the_native_transport() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsroutes._cli", "serve", APP, "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers needs --native" in result.stderr


def test_serve_native_workers_refuses_a_memory_broker_by_name() -> None:
    with pytest.raises(ValueError, match=r"MemoryBroker.*RedisBroker.*allow_memory_broker=True"):
        trio_wsroutes.serve_native_workers(APP, workers=2, app_dir=str(ROOT))


@pytest.fixture(scope="module")
def certificates() -> tuple[trustme.CA, trustme.LeafCert]:
    ca = trustme.CA()
    return ca, ca.issue_cert("127.0.0.1")


async def test_two_workers_serve_tls(
    tmp_path: Path, certificates: tuple[trustme.CA, trustme.LeafCert]
) -> None:
    ca, leaf = certificates
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    tls = ("--certfile", str(cert), "--keyfile", str(key))
    async with supervisor(tmp_path, "--workers", "2", "--allow-memory-broker", *tls) as running:
        assert "wss://127.0.0.1:" in running.output()
        context = ssl.create_default_context()
        ca.configure_trust(context)
        running.tls = context
        with trio.fail_after(TIMEOUT):
            async with AsyncExitStack() as stack:
                workers = await running.meet_workers(stack, "/pid", 2)
        assert len(workers) == 2
