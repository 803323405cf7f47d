"""A server that cannot start says why on one line and exits with status 2; embedded, it
raises :class:`StartupError`."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.lifecycle_app import server
from trio_wsroutes import StartupError

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30
PROGRAM = """
import functools, sys, trio
from tests.lifecycle_app import server
serve = server.serve_native if sys.argv[2] == "native" else server.serve
trio.run(functools.partial(serve, "127.0.0.1", int(sys.argv[1])))
"""


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        yield occupant.getsockname()[1]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _one_line(result: subprocess.CompletedProcess[str], prog: str, says: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{prog}: error: {says}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


COMMANDS = {
    "cli": (["-m", "trio_wsroutes", "serve", "tests.lifecycle_app:server"], "--port"),
    "cli-native": (
        ["-m", "trio_wsroutes", "serve", "tests.lifecycle_app:server", "--native"],
        "--port",
    ),
    "example": (["-m", "examples.chat"], "--port"),
}
PROGS = {"cli": "python -m trio_wsroutes", "cli-native": "python -m trio_wsroutes"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_port_in_use_is_one_line_and_exit_2(command: str, taken_port: int) -> None:
    argv, option = COMMANDS[command]
    result = _run([sys.executable, *argv, option, str(taken_port)])
    prog = PROGS.get(command, "python -m examples.chat")
    _one_line(result, prog, f"cannot listen on 127.0.0.1:{taken_port}: Address already in use")


@pytest.mark.parametrize("kind", ["hypercorn", "native"])
def test_serve_as_the_program_is_one_line_and_exit_2(
    kind: str, taken_port: int, tmp_path: Path
) -> None:
    program = tmp_path / "app.py"
    program.write_text(PROGRAM)
    result = _run([sys.executable, str(program), str(taken_port), kind])
    _one_line(result, "app.py", f"cannot listen on 127.0.0.1:{taken_port}: ")


def test_an_address_not_on_this_machine_is_one_line_and_exit_2() -> None:
    # 192.0.2.0/24 is reserved for documentation: no machine has it.
    argv, _ = COMMANDS["cli"]
    result = _run([sys.executable, *argv, "--host", "192.0.2.1", "--port", "8000"])
    _one_line(result, "python -m trio_wsroutes", "cannot listen on 192.0.2.1:8000: ")


def test_a_missing_certificate_is_one_line_and_exit_2(tmp_path: Path) -> None:
    argv, _ = COMMANDS["cli"]
    missing = tmp_path / "missing.pem"
    result = _run([sys.executable, *argv, "--certfile", str(missing), "--port", "0"])
    _one_line(result, "python -m trio_wsroutes", f"cannot load the certificate ({missing}): ")


def test_a_certificate_that_is_not_one_is_one_line_and_exit_2(tmp_path: Path) -> None:
    argv, _ = COMMANDS["cli"]
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate\n")
    result = _run([sys.executable, *argv, "--certfile", str(garbage), "--port", "0"])
    _one_line(result, "python -m trio_wsroutes", f"cannot load the certificate ({garbage}): ")


def test_a_module_that_does_not_import_is_one_line_and_exit_2() -> None:
    result = _run([sys.executable, "-m", "trio_wsroutes", "serve", "no_such_module:server"])
    _one_line(result, "python -m trio_wsroutes", "cannot import 'no_such_module'")


@pytest.mark.parametrize("kind", ["hypercorn", "native"])
async def test_embedded_serve_raises_startup_error(kind: str, taken_port: int) -> None:
    serve = server.serve_native if kind == "native" else server.serve
    caught: list[StartupError] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, "127.0.0.1", taken_port)
            nursery.cancel_scope.cancel()  # pragma: no cover - it must not start
    except* StartupError as group:
        caught += [error for error in group.exceptions if isinstance(error, StartupError)]
    [error] = caught
    assert error.errno == errno.EADDRINUSE
    assert error.strerror == f"cannot listen on 127.0.0.1:{taken_port}: Address already in use"
    assert isinstance(error, OSError)  # code that catches OSError still does
