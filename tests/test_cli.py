"""The ``trio-wsroutes`` command: typegen, schema and asyncapi, --check and --watch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import yaml

from tests.typegen import app
from trio_wsroutes import generate_asyncapi, generate_json_schema, generate_websocket_types
from trio_wsroutes._cli import main

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


def test_check_reports_stale_and_fresh_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "types.ts"
    assert main(["typegen", TARGET, "-o", str(target), "--check"]) == 1
    assert not target.exists()  # --check writes nothing
    assert "out of date" in capsys.readouterr().err
    target.write_text(generate_websocket_types(app.server))
    assert main(["typegen", TARGET, "-o", str(target), "--check"]) == 0
    target.write_text(generate_websocket_types(app.server) + "// edited\n")
    assert main(["typegen", TARGET, "-o", str(target), "--check"]) == 1


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
        (["typegen", "tests.typegen.app:Point"], "expected a WebSocketServer"),
    ],
)
def test_errors_are_one_line_and_exit_1(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(arguments) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("trio-wsroutes: error: ")


def test_a_type_error_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pricing.py").write_text(
        textwrap.dedent(
            """
            import decimal
            import attrs
            from trio_wsroutes import WebSocketServer, create_websocket_route, message

            @message("price")
            @attrs.frozen
            class Price:
                amount: decimal.Decimal

            server = WebSocketServer([create_websocket_route("/p").server_messages(Price)])
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["typegen", "pricing:server", "--app-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "field 'amount' of pricing.Price" in err


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
    pytest.importorskip("watchfiles")
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
