"""A real three-master Redis Cluster for tests, on free 127.0.0.1 ports, no persistence.

Each node is ``redis-server --cluster-enabled yes`` in a directory of its own; ``redis-cli
--cluster create`` assigns the slots (no replicas). Nodes are started and stopped by PID.
``--cluster-require-full-coverage no`` keeps the other masters serving while one is down,
and a short ``--cluster-node-timeout`` lets the cluster notice a killed node quickly.
Missing ``redis-server``/``redis-cli`` skips (fails under ``CI=true``), as in
``tests/_redis.py``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._redis import STARTUP_TIMEOUT, RedisServer, require_redis
from tests._tools import missing_tool

CLUSTER_TIMEOUT = 30.0


def cluster_port() -> int:
    """A free port whose cluster bus port (10 000 higher) is free too, both below the
    ephemeral range (Redis refuses a port over 55 535)."""
    for _ in range(200):
        port = random.randrange(20000, 45000)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNode(RedisServer):
    """One cluster node: its own directory and ``nodes-<port>.conf``, kept across restarts."""

    def __init__(self, executable: str, log_dir: Path) -> None:
        super().__init__(executable, log_dir)
        self.port = cluster_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.dir = log_dir / f"node-{self.port}"
        self.dir.mkdir()

    def start(self) -> None:
        """Start it (again: same port, same nodes conf) and wait until it answers."""
        assert self.process is None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.dir),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{self.port}.conf",
                    "--cluster-node-timeout",
                    "1500",
                    "--cluster-require-full-coverage",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start: see {self.log_path}")
            time.sleep(0.02)

    def knows_replica(self, port: int) -> bool:
        """Whether this node sees the replica on ``port`` connected."""
        return _knows(self, port)

    def cluster_ok(self, masters: int) -> bool:
        """Whether this node says the cluster is ok and knows ``masters`` masters with
        slots, every one connected."""
        try:
            info = self.command("CLUSTER", "INFO")
            nodes = self.command("CLUSTER", "NODES")
        except OSError:
            return False
        if b"cluster_state:ok" not in info:
            return False
        lines = [line for line in nodes.decode(errors="replace").splitlines() if "master" in line]
        healthy = [
            line
            for line in lines
            if "fail" not in line.split()[2] and " connected" in line and len(line.split()) > 8
        ]
        return len(healthy) == masters


def _knows(node: ClusterNode, port: int) -> bool:
    try:
        nodes = node.command("CLUSTER", "NODES").decode(errors="replace")
    except OSError:
        return False
    return any(
        f"127.0.0.1:{port}@" in line and "slave" in line and " connected" in line
        for line in nodes.splitlines()
    )


class RedisCluster:
    """Three masters, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, executable: str, cli: str, tmp: Path, size: int = 3) -> None:
        self.cli = cli
        self.nodes = [ClusterNode(executable, tmp) for _ in range(size)]

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=CLUSTER_TIMEOUT,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        """Wait (bounded) until every running node sees every master up."""
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while not all(node.cluster_ok(len(self.nodes)) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ok")
            time.sleep(0.05)

    def node_of(self, name: bytes) -> ClusterNode:
        """The node whose slots hold ``name`` (a key or sharded channel)."""
        running = [node for node in self.nodes if node.process is not None]
        reply = running[0].command("CLUSTER", "KEYSLOT", name.decode())
        slot = int(reply.strip().lstrip(b":"))
        for node in running:
            for line in node.command("CLUSTER", "NODES").decode().splitlines():
                fields = line.split()
                if len(fields) < 3 or "myself" not in fields[2]:
                    continue
                for item in fields[8:]:
                    first, _, last = item.partition("-")
                    if first.isdigit() and int(first) <= slot <= int(last or first):
                        return node
        raise LookupError(f"no node owns slot {slot}")

    def add_replica(self, master: ClusterNode) -> ClusterNode:
        """Start one more node and make it ``master``'s replica; return once it has
        synchronised and every node knows it."""
        replica = ClusterNode(self.nodes[0].executable, self.nodes[0].log_path.parent)
        replica.start()
        master_id = bulk(master.command("CLUSTER", "MYID"))
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "add-node",
                f"127.0.0.1:{replica.port}",
                f"127.0.0.1:{master.port}",
                "--cluster-slave",
                "--cluster-master-id",
                master_id,
            ],
            check=True,
            capture_output=True,
            timeout=CLUSTER_TIMEOUT,
        )
        self.nodes.append(replica)
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while b"master_link_status:up" not in replica.command("INFO", "replication") or not all(
            node.knows_replica(replica.port) for node in self.nodes if node is not replica
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not synchronise")
            time.sleep(0.05)
        return replica

    def replicated(self, master: ClusterNode, replica: ClusterNode) -> bool:
        """Whether ``replica`` has applied everything ``master`` wrote."""
        offset = field(master.command("INFO", "replication"), b"master_repl_offset")
        return field(replica.command("INFO", "replication"), b"slave_repl_offset") == offset

    def move_slot(self, name: bytes, target: ClusterNode) -> None:
        """Move the slot of ``name`` to ``target`` with its keys, as ``redis-cli --cluster
        reshard`` does (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE on every node)."""
        source = self.node_of(name)
        slot = self.nodes[0].command("CLUSTER", "KEYSLOT", name.decode()).strip().lstrip(b":")
        ids = {node.port: bulk(node.command("CLUSTER", "MYID")) for node in self.nodes}
        target.command("CLUSTER", "SETSLOT", slot.decode(), "IMPORTING", ids[source.port])
        source.command("CLUSTER", "SETSLOT", slot.decode(), "MIGRATING", ids[target.port])
        while True:
            reply = source.command("CLUSTER", "GETKEYSINSLOT", slot.decode(), "100")
            keys = [key.decode() for key in reply.split(b"\r\n")[2::2] if key]
            if not keys:
                break
            moved = source.command(
                "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys
            )
            assert moved.startswith(b"+OK"), moved
        for node in (target, source, *self.nodes):
            node.command("CLUSTER", "SETSLOT", slot.decode(), "NODE", ids[target.port])

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def field(info: bytes, name: bytes) -> bytes:
    """A field of an ``INFO`` reply."""
    for line in info.split(b"\r\n"):
        if line.startswith(name + b":"):
            return line.partition(b":")[2]
    return b""


def bulk(reply: bytes) -> str:
    """The string in a RESP bulk or simple string reply."""
    lines = reply.split(b"\r\n")
    return (lines[1] if reply.startswith(b"$") else lines[0][1:]).decode()


def require_cluster_tools() -> tuple[str, str]:
    """``redis-server`` and ``redis-cli``, or skip (fail under CI)."""
    executable = require_redis()
    cli = shutil.which("redis-cli")
    if cli is None:
        missing_tool("redis-cli is not installed (apt-get install redis-tools)")
    return executable, cli


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A running three-master cluster for the module's tests, killed after them."""
    executable, cli = require_cluster_tools()
    cluster = RedisCluster(executable, cli, tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
