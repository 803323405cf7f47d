"""The ``trio-wsroutes`` command: typegen, schema and asyncapi, --check and --watch."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import trio
import yaml

import trio_wsroutes
from tests.typegen import app
from trio_wsroutes import generate_asyncapi, generate_json_schema, generate_websocket_types
from trio_wsroutes._cli import main
from trio_wsroutes._cli_watch import watch_install_hint

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests.typegen.app:server"


def script() -> str:
    found = shutil.which("trio-wsroutes", path=str(Path(sys.executable).parent))
    found = found or shutil.which("trio-wsroutes")
    assert found, "the trio-wsroutes console script is not installed (pip install -e .)"
    return found


def test_console_script_output_is_the_same_in_every_process() -> None:
    # Different hash seeds: nothing in the output may depend on set or dict order.
    outputs = [
        subprocess.run(
            [script(), "typegen", TARGET],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1] == generate_websocket_types(app.server)


def test_typegen_writes_the_file_and_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "client" / "websocket-types.ts"
    assert main(["typegen", TARGET, "-o", str(target)]) == 0
    assert target.read_text() == generate_websocket_types(app.server)
    assert f"wrote {target}" in capsys.readouterr().err
    assert main(["typegen", TARGET, "-o", str(target)]) == 0
    assert f"unchanged: {target}" in capsys.readouterr().err


def test_routes_option_selects_routes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["typegen", TARGET, "--routes", "/api/shapes", "/internal/status"]) == 0
    out = capsys.readouterr().out
    assert out == generate_websocket_types(app.server, routes=["/api/shapes", "/internal/status"])
    assert "export namespace ShapesWebSocket {" in out
    assert "export namespace Status {" in out
    assert "ChatWebSocket" not in out


def test_schema_command(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert main(["schema", TARGET, "-o", str(target)]) == 0
    assert target.read_text() == generate_json_schema(app.server)
    assert json.loads(target.read_text())["$schema"].endswith("2020-12/schema")


def test_asyncapi_command_writes_yaml_or_json_by_extension(tmp_path: Path) -> None:
    options = ["--title", "Shapes", "--api-version", "2.0.0", "--server", "prod=wss://x.io/ws"]
    assert main(["asyncapi", TARGET, "-o", str(tmp_path / "api.yaml"), *options]) == 0
    assert main(["asyncapi", TARGET, "-o", str(tmp_path / "api.json"), *options]) == 0
    as_yaml = yaml.safe_load((tmp_path / "api.yaml").read_text())
    as_json = json.loads((tmp_path / "api.json").read_text())
    assert as_yaml == as_json
    assert as_json["info"]["title"] == "Shapes"
    assert as_json["info"]["version"] == "2.0.0"
    assert as_json["servers"] == {"prod": {"host": "x.io", "protocol": "wss", "pathname": "/ws"}}
    expected = generate_asyncapi(
        app.server, title="Shapes", version="2.0.0", servers={"prod": "wss://x.io/ws"}
    )
    assert (tmp_path / "api.yaml").read_text() == expected


def test_check_reports_missing_stale_and_fresh_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "types.ts"
    assert main(["typegen", TARGET, "-o", str(target), "--check"]) == 1
    assert not target.exists()  # --check writes nothing
    assert capsys.readouterr().err == (
        f"trio-wsroutes: {target} is missing; run: trio-wsroutes typegen {TARGET} -o {target}\n"
    )
    target.write_text(generate_websocket_types(app.server))
    assert main(["typegen", TARGET, "-o", str(target), "--check"]) == 0
    assert "is up to date" in capsys.readouterr().err
    target.write_text(generate_websocket_types(app.server) + "// edited\n")
    assert main(["typegen", TARGET, "-o", str(target), "--check"]) == 1
    assert f"{target} is out of date; run: " in capsys.readouterr().err


def test_check_without_an_output_file_is_a_usage_error() -> None:
    # Nothing to compare with: not "up to date", not a generation to stdout.
    result = subprocess.run(
        [script(), "schema", TARGET, "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: trio-wsroutes schema ")
    assert "trio-wsroutes schema: error: --check needs -o" in result.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"trio-wsroutes {trio_wsroutes.__version__}\n"
    # The package's version is the installed distribution's (pyproject.toml's).
    assert trio_wsroutes.__version__ == importlib.metadata.version("trio-wsroutes")


def test_the_committed_example_types_pass_check() -> None:
    output = "examples/chat/websocket-types.ts"
    assert main(["typegen", "examples.chat.app:server", "-o", output, "--check"]) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["typegen", "no_such_module:server"], "cannot import 'no_such_module'"),
        (["typegen", "tests.typegen.app:nothing"], "has no attribute 'nothing'"),
        (["typegen", TARGET, "--routes", "/nope"], "no route '/nope'"),
        (["asyncapi", TARGET, "--server", "nope"], "--server takes NAME=URL"),
        (["asyncapi", TARGET, "--server", "a=http://x"], "expected a ws:// or wss:// URL"),
        (
            ["typegen", "tests.typegen.app:Point"],
            "tests.typegen.app:Point is a class (<class 'tests.typegen.app.Point'>); "
            "expected a WebSocketServer, a route or a list of routes",
        ),
        (
            ["typegen", "tests.typegen.app:SAMPLE_ROUTES"],
            "tests.typegen.app:SAMPLE_ROUTES is a str ('/api/shapes'); expected a "
            "WebSocketServer, a route or a list of routes",
        ),
    ],
)
def test_errors_are_one_line_and_exit_1(
    arguments: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app, "SAMPLE_ROUTES", "/api/shapes", raising=False)
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("trio-wsroutes: error: ")
    assert err.count("\n") == 1


SILENT = """
import attrs
from trio_wsroutes import create_websocket_route

@attrs.frozen
class Ping:
    n: int

quiet = create_websocket_route("/quiet")

@quiet.on("ping", Ping)
async def ping(ws, data, ctx):
    pass
"""


def test_typegen_warns_about_a_route_that_declares_no_server_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "silentapp.py").write_text(SILENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["typegen", "silentapp:quiet", "--app-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: route '/quiet' declares no server messages" in err
    assert main(["typegen", TARGET]) == 0  # routes that declare theirs: no warning
    assert "warning" not in capsys.readouterr().err


BIG_TARGETS = """
from trio_wsroutes import create_websocket_route

settings = {f"key{i}": "x" * 1000 for i in range(100)}
mixed = [create_websocket_route("/a"), {"path": "/b", "handlers": list(range(1000))}]
"""


@pytest.mark.parametrize(
    ("attribute", "begins", "ends"),
    [
        (
            "settings",
            "bigapp:settings is a dict ({'key0': 'xxxx",
            "...); expected a WebSocketServer, a route or a list of routes",
        ),
        (
            "mixed",
            "item 1 of bigapp:mixed is a dict ({'handlers': [0, 1, 2, ...], 'path': '/b'})",
            "; expected a route from create_websocket_route",
        ),
    ],
)
def test_a_target_that_is_not_routes_is_named_by_type_on_one_short_line(
    attribute: str,
    begins: str,
    ends: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "bigapp.py").write_text(BIG_TARGETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["typegen", f"bigapp:{attribute}", "--app-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"trio-wsroutes: error: {begins}")
    assert err.endswith(f"{ends}\n")
    assert err.count("\n") == 1
    assert len(err) < 250  # not the object's 100 KB repr


@pytest.mark.parametrize(
    ("direct_url", "cwd", "hint"),
    [
        # pip install -e . (the README's install), from inside the checkout and elsewhere
        (
            '{"url": "file:///work/proj", "dir_info": {"editable": true}}',
            "/work/proj",
            "python -m pip install -e '.[watch]'",
        ),
        (
            '{"url": "file:///work/proj", "dir_info": {"editable": true}}',
            "/tmp",
            "python -m pip install -e '/work/proj[watch]'",
        ),
        # pip install . (not editable)
        ('{"url": "file:///work/proj", "dir_info": {}}', "/tmp", "python -m pip install "
         "'/work/proj[watch]'"),
        # from the index, or a wheel file
        (None, "/tmp", "python -m pip install 'trio-wsroutes[watch]'"),
        (
            '{"url": "file:///dl/trio_wsroutes-0.1.0-py3-none-any.whl", "archive_info": {}}',
            "/dl",
            "python -m pip install 'trio-wsroutes[watch]'",
        ),
    ],
)  # fmt: skip
def test_the_watch_install_hint_fits_how_the_package_was_installed(
    direct_url: str | None, cwd: str, hint: str
) -> None:
    assert watch_install_hint(direct_url, ["test", "watch"], cwd) == hint


def test_the_watch_hint_names_an_extra_that_exists() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(dep.startswith("watchfiles") for dep in extras["watch"])
    hint = watch_install_hint(None, [], "/tmp")  # a build without the extra
    assert hint == "python -m pip install 'watchfiles>=0.21'"


def test_watch_without_watchfiles_says_how_to_install_it_here(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # as if not installed
    monkeypatch.chdir(ROOT)
    assert main(["typegen", TARGET, "-o", "unused.ts", "--watch"]) == 1
    err = capsys.readouterr().err
    distribution = importlib.metadata.distribution("trio-wsroutes")
    installed = json.loads(distribution.read_text("direct_url.json") or "{}")
    if installed.get("dir_info", {}).get("editable"):  # pip install -e '.[test]'
        expected = "python -m pip install -e '.[watch]'"
    else:
        expected = "python -m pip install 'trio-wsroutes[watch]'"
    assert err == f"trio-wsroutes: error: --watch needs watchfiles: {expected}\n"
    assert not (ROOT / "unused.ts").exists()


APP_BEFORE = """
import attrs
from trio_wsroutes import WebSocketServer, create_websocket_route, message

@message("tick")
@attrs.frozen
class Tick:
    n: int

server = WebSocketServer([create_websocket_route("/ticks").server_messages(Tick)])
"""
APP_AFTER = APP_BEFORE.replace("    n: int\n", "    n: int\n    label: str\n")


async def test_watch_regenerates_when_a_source_file_changes(tmp_path: Path) -> None:
    # watchfiles is in the test extra: its absence is a broken install, not a skip.
    assert importlib.util.find_spec("watchfiles"), "pip install -e '.[test]' installs watchfiles"
    source = tmp_path / "tickapp.py"
    source.write_text(APP_BEFORE)
    output = tmp_path / "out" / "types.ts"
    command = ["typegen", "tickapp:server", "-o", str(output), "--watch"]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_wsroutes", *command],
        cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
    )
    log = bytearray()
    assert process.stderr is not None
    stderr = process.stderr

    async def wait_for(text: bytes, start: int = 0) -> int:
        """Read stderr until ``text`` appears after ``start``; return where it ends."""
        while (found := log.find(text, start)) < 0:
            chunk = await stderr.receive_some()
            assert chunk, f"the watcher exited early:\n{log.decode()}"
            log.extend(chunk)
        return found + len(text)

    try:
        with trio.fail_after(30):
            seen = await wait_for(f"wrote {output}".encode())
            seen = await wait_for(b"watching 1 directory", seen)
            assert "n: number;" in output.read_text()
            assert "label" not in output.read_text()
            # Rewrite until the watcher reports it (it may start a moment after saying so).
            async with trio.open_nursery() as nursery:

                async def keep_editing() -> None:
                    while True:
                        source.write_text(APP_AFTER)
                        await trio.sleep(0.5)

                nursery.start_soon(keep_editing)
                seen = await wait_for(b"changed: tickapp.py (modified)", seen)
                seen = await wait_for(f"wrote {output}".encode(), seen)
                nursery.cancel_scope.cancel()
            assert "label: string;" in output.read_text()
            process.send_signal(signal.SIGINT)
            await wait_for(b"stopped watching", seen)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
