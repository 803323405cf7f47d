"""The generated client (``typegen --client``): tsc accepts it and refuses misuse, its
JavaScript is tsc's output for its TypeScript, and it works under Node.js against a real
server (requests, replies, acks, errors, timeouts, reconnection, recovery).

One tsc run per session compiles the generated types and client for ``tests.typegen.app``
and ``tests/ts/rpc_app.py`` together with the samples: ``tests/ts/client_scenarios.ts``
(the runtime test Node then runs) and the bad samples below, each of which must fail on
its marked line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from tests import _client_ts, _typescript
from tests.conftest import ServeLive
from tests.ts import rpc_app
from tests.typegen import app
from trio_wsroutes import create_websocket_route, generate_websocket_types
from trio_wsroutes._cli import main, types_module
from trio_wsroutes._typegen import (
    TypeGenerationError,
    client_language,
    generate_websocket_client,
)
from trio_wsroutes._typegen._build import build_model

ROUTES = [*app.server.routes, *rpc_app.server.routes]
SCENARIOS = _typescript.TOOLS / "client_scenarios.ts"

IMPORTS = """\
import type { ChatWebSocket, RpcWebSocket, WebSocketErrorCode } from "./websocket-types.js";
import {
  connectChatWebSocket,
  connectRpcWebSocket,
  connectShapesWebSocket,
  connectStatus,
  rpcWebSocketPath,
  type ServerMessageOf,
  type RpcWebSocketRoute,
  WebSocketServerError,
} from "./websocket-client.js";

const rpc = connectRpcWebSocket("ws://127.0.0.1:9/rpc/a", { token: "t" });
const shapes = connectShapesWebSocket("ws://127.0.0.1:9/api/shapes");
const chat = connectChatWebSocket("ws://127.0.0.1:9/rooms/a/chat/b");
const status = connectStatus("ws://127.0.0.1:9/internal/status");
export const used = [rpc, shapes, chat, status];
export type Used = [ChatWebSocket.Params, RpcWebSocket.Params, WebSocketErrorCode];
export type Said = ServerMessageOf<RpcWebSocketRoute, "said">;
export const errorClass = WebSocketServerError;
export const path = rpcWebSocketPath;
"""


def bad(line: str) -> str:
    """A sample whose ``line`` (in an async function) is the one tsc must refuse."""
    function = "export async function f(): Promise<unknown> {\n"
    return IMPORTS + function + line + " // expect-error\n}\n"


# name -> (source, error code, text the error mentions)
BAD_SAMPLES: dict[str, tuple[str, str, str]] = {
    "sending_another_routes_message": (
        bad('  return shapes.send("say", { text: "hi" });'),
        "TS2345",
        "Argument of type '\"say\"' is not assignable to parameter of type 'keyof ClientData'",
    ),
    "sending_a_message_to_a_route_that_takes_none": (
        bad('  return status.send("ping", { timestamp: 1 });'),
        "TS2345",
        "is not assignable to parameter of type 'never'",
    ),
    "sending_the_wrong_data": (
        bad('  return rpc.send("ping", { timestamp: "now" });'),
        "TS2322",
        "Type 'string' is not assignable to type 'number'",
    ),
    "sending_data_of_another_message": (
        bad('  return rpc.send("ping", { text: "hi" });'),
        "TS2353",
        "'text' does not exist in type",
    ),
    "awaiting_a_reply_as_the_wrong_type": (
        bad('  const reply: Said = await rpc.request("ping", { timestamp: 1 }); return reply;'),
        "TS2375",
        "Type '\"pong\"' is not assignable to type '\"said\"'",
    ),
    "reading_a_field_the_reply_does_not_have": (
        bad('  return (await rpc.request("ping", { timestamp: 1 })).data.text;'),
        "TS2339",
        "Property 'text' does not exist on type",
    ),
    "an_ack_has_no_data": (
        bad('  return (await rpc.request("note", { text: "x" })).data;'),
        "TS2532",
        "Object is possibly 'undefined'",
    ),
    "an_undeclared_answer_may_be_an_ack": (
        bad('  return (await rpc.request("echo", { text: "x" })).data;'),
        "TS2532",
        "Object is possibly 'undefined'",
    ),
    "an_undeclared_answer_must_be_narrowed": (
        bad('  const r = await rpc.request("echo", { text: "x" }); return r?.data.text;'),
        "TS2339",
        "Property 'text' does not exist on type",
    ),
    "handling_a_message_with_the_wrong_data_shape": (
        bad('  return rpc.on("pong", (data: { text: string }) => data.text);'),
        "TS2345",
        "Property 'text' is missing in type",
    ),
    "reading_a_field_the_message_does_not_have": (
        bad('  return rpc.on("said", (data) => data.timestamp);'),
        "TS2339",
        "Property 'timestamp' does not exist on type",
    ),
    "handling_another_routes_message": (
        bad('  return rpc.on("drawn", () => undefined);'),
        "TS2345",
        "Argument of type '\"drawn\"' is not assignable",
    ),
    "the_whole_message_is_narrowed_too": (
        bad('  return rpc.on("pong", (_data, message) => message.data.text);'),
        "TS2339",
        "Property 'text' does not exist on type",
    ),
    "error_codes_are_strings": (
        bad("  const error = new WebSocketServerError(1, 'x'); return error;"),
        "TS2345",
        "is not assignable to parameter of type 'WebSocketErrorCode'",
    ),
    "unknown_connect_options": (
        bad('  return connectRpcWebSocket("ws://x/rpc/a", { tokn: "t" });'),
        "TS2561",
        "'tokn' does not exist in type 'ConnectOptions'",
    ),
    "queue_or_refuse_only": (
        bad('  return connectRpcWebSocket("ws://x/rpc/a", { whileDisconnected: "drop" });'),
        "TS2322",
        '\'"drop"\' is not assignable to type \'"queue" | "refuse" | undefined\'',
    ),
    "path_parameters_are_checked": (
        bad('  return rpcWebSocketPath({ rom: "a" });'),
        "TS2561",
        "'rom' does not exist in type 'Params'",
    ),
}


# -- generation ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Generate the types and the client for ``ROUTES``, write the samples, run tsc once
    (emitting into ``out/``)."""
    _typescript.require(_typescript.TSC)
    directory: Path = tmp_path_factory.mktemp("client")
    (directory / "websocket-types.ts").write_text(generate_websocket_types(ROUTES))
    (directory / "websocket-client.ts").write_text(generate_websocket_client(ROUTES))
    javascript = generate_websocket_client(ROUTES, language="javascript")
    shutil.copy(SCENARIOS, directory / SCENARIOS.name)
    files = [SCENARIOS.name]
    for name, (source, _, _) in BAD_SAMPLES.items():
        (directory / f"{name}.ts").write_text(source)
        files.append(f"{name}.ts")
    status, diagnostics, output = _typescript.tsc(
        *_client_ts.STRICTEST,
        *_client_ts.EMIT,
        "--outDir",
        "out",
        "websocket-types.ts",
        "websocket-client.ts",
        *files,
        cwd=directory,
    )
    by_file: dict[str, list[_typescript.Diagnostic]] = {}
    for diagnostic in diagnostics:
        by_file.setdefault(diagnostic.file, []).append(diagnostic)
    out = directory / "out"
    emitted = (out / "websocket-client.js").read_text()
    (out / "websocket-client.js").write_text(javascript)  # the generated JS, for Node
    (out / "package.json").write_text('{"type": "module"}\n')
    return {
        "status": status,
        "by_file": by_file,
        "output": output,
        "out": out,
        "emitted": emitted,
        "javascript": javascript,
    }


def test_runtime_js_is_tscs_output_for_the_runtime(tmp_path: Path) -> None:
    _typescript.require(_typescript.TSC)
    assert _client_ts.compile_runtime(tmp_path) == _client_ts.RUNTIME_JS.read_text(), (
        f"{_client_ts.RUNTIME_JS.name} is stale; run: {_client_ts.REBUILD}"
    )


def test_the_javascript_is_what_tsc_emits_for_the_typescript(compiled: dict[str, Any]) -> None:
    assert compiled["javascript"] == compiled["emitted"]


def test_the_client_and_the_scenarios_compile_under_every_strict_flag(
    compiled: dict[str, Any],
) -> None:
    by_file = compiled["by_file"]
    assert by_file.get("websocket-client.ts", []) == [], compiled["output"]
    assert by_file.get(SCENARIOS.name, []) == [], compiled["output"]
    assert set(by_file) == {f"{name}.ts" for name in BAD_SAMPLES}, compiled["output"]


@pytest.mark.parametrize("name", sorted(BAD_SAMPLES))
def test_tsc_rejects(compiled: dict[str, Any], name: str) -> None:
    source, code, text = BAD_SAMPLES[name]
    marked = next(
        number
        for number, line in enumerate(source.splitlines(), start=1)
        if line.endswith("// expect-error")
    )
    errors = compiled["by_file"].get(f"{name}.ts", [])
    assert errors, f"tsc accepted {name}.ts:\n{source}"
    assert {e.line for e in errors} == {marked}, compiled["output"]
    assert any(e.code == code and text in e.message for e in errors), errors


# -- run time, under Node.js ------------------------------------------------------------


async def run_scenarios(out: Path, ws_url: str, *names: str) -> dict[str, dict[str, Any]]:
    """Run ``client_scenarios.js`` (all, or ``names``); its result per scenario."""
    command = [str(_typescript.node_executable()), "client_scenarios.js", ws_url, *names]
    # A bound, not a timing: the scenarios take 10-20 s alone, several times that on a
    # machine busy with other tests (some wait on reconnection backoffs).
    with trio.fail_after(300):
        result = await trio.run_process(
            command, cwd=out, capture_stdout=True, capture_stderr=True, check=False
        )
    lines = result.stdout.decode().splitlines()
    results = {}
    for line in lines:
        entry = json.loads(line)
        results[entry["name"]] = entry
    assert results, result.stderr.decode()
    return results


SCENARIO_NAMES = [
    "requests_replies_acks_and_errors",
    "a_first_connection_that_fails_closes_the_client",
    "refuse_or_queue_while_disconnected",
    "reconnects_resumes_and_recovers_what_it_missed",
    "a_stale_position_is_not_recovered",
    "a_close_code_that_does_not_reconnect_ends_the_client",
    "answers_the_routes_heartbeat",
    "route_paths_are_encoded",
    "wire_types_named_like_object_members_are_answered",
    "positions_are_capped_and_the_newest_resumed",
    "an_attempt_with_positions_that_fails_is_retried_without_them",
    "refreshes_through_a_promise_returning_token_function",
    "a_fixed_token_that_expires_ends_the_client_with_3000",
    "does_not_reconnect_after_3003",
    "a_server_that_accepts_and_closes_at_once_sees_the_delays_grow",
]


async def test_the_generated_javascript_under_node(
    compiled: dict[str, Any], serve_live: ServeLive
) -> None:
    async with serve_live(rpc_app.server) as address:
        results = await run_scenarios(compiled["out"], address.ws_url)
    assert sorted(results) == sorted(SCENARIO_NAMES)
    failed = {name: r["error"] for name, r in results.items() if not r["ok"]}
    assert failed == {}


# -- the chat example's committed client --------------------------------------------------

EXAMPLE = _typescript.ROOT / "examples" / "chat"
REGENERATE = (
    "trio-wsroutes typegen examples.chat.app:server -o examples/chat/websocket-types.ts "
    "--client examples/chat/websocket-client.ts --client examples/chat/websocket-client.js"
)


@pytest.mark.parametrize("name", ["websocket-client.ts", "websocket-client.js"])
def test_the_chat_examples_committed_client_is_current(name: str) -> None:
    from examples.chat.app import server as chat_server

    committed = (EXAMPLE / name).read_text()
    generated = generate_websocket_client(chat_server, language=client_language(name))
    assert generated == committed, f"examples/chat/{name} is stale; run: {REGENERATE}"


# -- the model, names, the command ------------------------------------------------------


def test_answers_come_from_the_handlers_return_annotations() -> None:
    (route,) = build_model(rpc_app.rpc).routes
    answers = {m.type: (m.replies, m.acked) for m in route.client_messages}
    assert answers["ping"] == (("pong",), False)
    assert answers["note"] == ((), True)
    assert answers["echo"] == ((), None)  # no annotation: anything may answer


def test_the_client_names_its_declarations_after_the_namespace() -> None:
    text = generate_websocket_client(rpc_app.server)
    for declaration in (
        "export interface RpcWebSocketRoute {",
        "export type RpcWebSocketClient = WebSocketClient<RpcWebSocketRoute>;",
        "export function connectRpcWebSocket(",
        "export function rpcWebSocketPath(params: RpcWebSocket.Params): string {",
        '  tokenParam: "key",',
        '    echo: "ack" | keyof RpcWebSocket.ServerData;',
    ):
        assert declaration in text
    assert text.count('from "./websocket-types.js";') == 1


def test_a_namespace_clashing_with_the_runtime_is_refused() -> None:
    route = create_websocket_route("/x", name="WebSocketClient")
    with pytest.raises(TypeGenerationError, match="WebSocketClient twice"):
        generate_websocket_client(route)


def test_the_language_follows_the_file_name() -> None:
    assert client_language("a/client.js") == "javascript"
    assert client_language("client.MJS") == "javascript"
    assert client_language("client.ts") == "typescript"
    assert client_language(None) == "typescript"
    with pytest.raises(ValueError, match="language"):
        generate_websocket_client(rpc_app.server, language="python")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("types", "client", "expected"),
    [
        ("src/websocket-types.ts", "src/websocket-client.ts", "./websocket-types.js"),
        ("types/api.ts", "src/client.ts", "../types/api.js"),
        ("src/api.mts", "src/client.mts", "./api.mjs"),
        ("src/gen/api.ts", "src/client.ts", "./gen/api.js"),
    ],
)
def test_the_client_imports_the_types_by_a_relative_specifier(
    types: str, client: str, expected: str
) -> None:
    assert types_module(types, client) == expected


TARGET = "tests.ts.rpc_app:server"


def test_the_command_writes_the_types_and_both_clients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    types, ts, js = tmp_path / "gen" / "types.ts", tmp_path / "client.ts", tmp_path / "c.js"
    command = ["typegen", TARGET, "-o", str(types), "--client", str(ts), "--client", str(js)]
    assert main(command) == 0
    assert types.read_text() == generate_websocket_types(rpc_app.server)
    assert ts.read_text() == generate_websocket_client(
        rpc_app.server, types_module="./gen/types.js"
    )
    assert js.read_text() == generate_websocket_client(rpc_app.server, language="javascript")
    assert main([*command, "--check"]) == 0
    js.write_text("stale")
    capsys.readouterr()
    assert main([*command, "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{js} is out of date; run: trio-wsroutes typegen {TARGET} -o {types}" in err
    assert f"{ts} is up to date" in err


def test_the_command_needs_the_types_file_for_a_client(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["typegen", TARGET, "--client", "client.ts"])
    assert "--client needs -o" in capsys.readouterr().err
