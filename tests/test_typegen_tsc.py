"""The generated TypeScript under the real compiler: ``tsc --strict --noEmit``.

One tsc run (per session) checks the generated file for ``tests.typegen.app`` together
with client samples: the good ones must compile, each bad one must fail on its marked
line with the expected error. The good samples include the exact JSON the converter
writes for server messages and JSON the server accepts as client messages, so the types
are checked against the wire, not against another copy of the mapping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import _typescript
from tests.test_typegen import DRAW_CASES, everything
from tests.typegen import app
from trio_wsroutes import generate_websocket_types
from trio_wsroutes._envelope import encode_error, with_position
from trio_wsroutes._errors import ErrorDetail
from trio_wsroutes._history import Position
from trio_wsroutes._messages import encode_message

STRICT = [
    "--strict",
    "--noEmit",
    "--exactOptionalPropertyTypes",
    "--noUncheckedIndexedAccess",
    "--isolatedModules",
    "--verbatimModuleSyntax",
    "--erasableSyntaxOnly",  # type-only namespaces: fine for Node's type stripping too
    "--target",
    "es2022",
    "--module",
    "esnext",
    "--moduleResolution",
    "bundler",
    "--lib",
    "es2022,dom",
]

IMPORTS = (
    "import type { ShapesWebSocket, ChatWebSocket, Status, Draw, Everything, JsonValue } "
    'from "./websocket-types.js";\n'
)


def server_wire() -> list[Any]:
    """Frames exactly as the server sends them."""
    frames = [
        encode_message(everything(), id="r1"),
        encode_message(app.Pong(timestamp=1.0, server_time=2.5)),
        encode_message(app.Drawn(shape=app.Square(app.Point(1, 2), 3), by="ann"), id=7),
        encode_message(app.Settings()),
        encode_error("UNKNOWN_TYPE", "Unknown message type", "x"),
        encode_error(
            "VALIDATION_ERROR",
            "Invalid message data",
            3,
            [ErrorDetail("$.data.shape", "required field missing")],
        ),
    ]
    wire = [orjson.loads(frame.payload) for frame in frames]
    # Publications on topics with history, with the position the broker splices in.
    for frame, topic, offset in (
        (encode_message(app.Pong(timestamp=1.0, server_time=2.5)), "room:a", 7),
        (encode_message(everything()), "room:a@b:c", 2**53 - 1),
    ):
        positioned = with_position(frame.payload, topic, Position("Xk3-_9", offset))
        assert positioned is not None
        wire.append(orjson.loads(positioned))
    return wire


def client_wire() -> list[Any]:
    """Client messages the server accepts (each is checked with the route's converter)."""
    messages: list[dict[str, Any]] = [
        {"type": "draw", "data": data, "id": n}
        for n, (name, data, accepted) in enumerate(DRAW_CASES)
        if accepted and name != "unknown keys are ignored"  # TS refuses unknown keys
    ]
    messages += [
        {"type": "ping", "data": {"timestamp": 5}, "id": "p"},
        {"type": "update_settings", "data": {}},
        {"type": "update_settings", "data": {"volume": 7}},
    ]
    for msg in messages:
        spec = app.shapes.handlers[msg["type"]]
        spec.structure(msg["data"], spec.schema)  # raises if the server would refuse it
    return messages


def good_sample() -> str:
    return (
        IMPORTS
        + f"""
// What the server sent, byte for byte.
export const received: ShapesWebSocket.ServerMessage[] = {json.dumps(server_wire())};

// What the server accepts.
export const sent: ShapesWebSocket.ClientMessage[] = {json.dumps(client_wire())};

// Narrowing ServerMessage by type.
export function describe(msg: ShapesWebSocket.ServerMessage): string {{
  switch (msg.type) {{
    case "everything": {{
      const e: Everything = msg.data;
      const when: string = e.at;
      const pair: [number, string] = e.pair;
      const maybe: string | null = e.maybe;
      const color: "red" | "green" = e.color;
      const priority: 1 | 2 = e.priority;
      const extra: JsonValue = e.extra;
      const size = "radius" in e.shape ? e.shape.radius : e.shape.side;
      const kids: string[] = e.tree.children.map((c) => c.label);
      const z: number = e.place.z;
      const json = JSON.stringify(extra);
      return [when, pair[1], maybe ?? "", color, priority, json, size, kids, z].join();
    }}
    case "pong":
      return String(msg.data.server_time - msg.data.timestamp);
    case "drawn":
      return msg.data.by + (msg.id ?? "");
    case "settings":
      return msg.data.theme + msg.data.volume;
    case "error":
      return `${{msg.code}}: ${{msg.error}} ${{(msg.details ?? []).map((d) => d.path).join()}}`;
    default: {{
      const unreachable: never = msg;
      return unreachable;
    }}
  }}
}}

// A publication on a topic with history carries topic, offset and epoch, all three.
export function since(msg: ShapesWebSocket.ServerMessage): string | undefined {{
  if (msg.type === "error" || msg.offset === undefined) {{
    return undefined;
  }}
  const topic: string = msg.topic;
  const epoch: string = msg.epoch;
  const offset: number = msg.offset;
  return `since=${{encodeURIComponent(`${{topic}}@${{epoch}}:${{offset}}`)}}`;
}}
export const live: ShapesWebSocket.ServerMessage = {{
  type: "settings",
  data: {{ theme: "dark", volume: 3 }},
  topic: "room:a",
  offset: 1,
  epoch: "e1",
}};

// Fields with defaults may be left out; nullable ones without a default may not.
const draw: Draw = {{ shape: {{ center: {{ x: 0, y: 0 }}, radius: 1 }}, color: "red", note: "" }};
export const drawMessage: ShapesWebSocket.ClientMessage = {{ type: "draw", data: draw, id: 1 }};
export const params: ChatWebSocket.Params = {{ room_id: "r1", thread: "t1" }};
export const none: Status.ClientMessage[] = [];

export function send<K extends keyof ShapesWebSocket.ClientData>(
  type: K,
  data: ShapesWebSocket.ClientData[K],
): string {{
  return JSON.stringify({{ type, data }});
}}
send("ping", {{ timestamp: Date.now() }});
"""
    )


def bad(line: str, setup: str = "") -> str:
    """A sample whose ``line`` is the one tsc must refuse."""
    return IMPORTS + setup + line + " // expect-error\n"


SHAPES = "ShapesWebSocket.ClientMessage"
DRAW = '{ shape: { center: { x: 0, y: 0 }, radius: 1 }, color: "red", note: null }'

# name -> (source, error code, text the error mentions)
BAD_SAMPLES: dict[str, tuple[str, str, str]] = {
    "unknown_type": (
        bad(f'export const m: {SHAPES} = {{ type: "drawww", data: {DRAW} }};'),
        "TS2820",
        'Type \'"drawww"\' is not assignable to type \'"draw" | "ping" | "update_settings"\'',
    ),
    "wrong_data_type": (
        bad(f'export const m: {SHAPES} = {{ type: "ping", data: {{ timestamp: "now" }} }};'),
        "TS2322",
        "Type 'string' is not assignable to type 'number'",
    ),
    "unknown_data_field": (
        bad(f'export const m: {SHAPES} = {{ type: "ping", data: {{ text: "hi" }} }};'),
        "TS2353",
        "'text' does not exist in type",
    ),
    "message_of_another_route": (
        bad(f'export const m: {SHAPES} = {{ type: "say", data: {{ text: "hi" }} }};'),
        "TS2322",
        '"say"',
    ),
    "missing_required_field": (
        bad(
            f'export const m: {SHAPES} = {{ type: "draw", data: {{ color: "red", note: null }} }};'
        ),
        "TS2322",
        "Property 'shape' is missing",
    ),
    "missing_required_nullable_field": (
        bad(
            f"export const m: {SHAPES} = "
            '{ type: "draw", data: { shape: { corner: { x: 0, y: 0 }, side: 1 }, color: "red" } };'
        ),
        "TS2322",
        "Property 'note' is missing",
    ),
    "wrong_enum_value": (
        bad(
            f"export const m: {SHAPES} = "
            '{ type: "draw", data: { shape: { corner: { x: 0, y: 0 }, side: 1 }, note: null, '
            'color: "blue" } };'
        ),
        "TS2322",
        "'\"blue\"' is not assignable to type 'Color'",
    ),
    "reading_a_missing_field": (
        bad(
            '  if (m.type === "pong") return m.data.latency;',
            "export function f(m: ShapesWebSocket.ServerMessage): number | undefined {\n",
        )
        + "  return undefined;\n}\n",
        "TS2339",
        "Property 'latency' does not exist on type 'Pong'",
    ),
    "reading_data_before_narrowing": (
        bad(
            "  return m.data;",
            "export function f(m: ShapesWebSocket.ServerMessage): unknown {\n",
        )
        + "}\n",
        "TS2339",
        "Property 'data' does not exist on type",
    ),
    "server_nullable_is_not_a_string": (
        bad("export const s: string = e.maybe;", "declare const e: Everything;\n"),
        "TS2322",
        "Type 'string | null' is not assignable to type 'string'",
    ),
    "server_fields_are_never_undefined_but_client_defaults_are": (
        bad("export const n: number = d.priority;", "declare const d: Draw;\n"),
        "TS2322",
        "'undefined' is not assignable to type 'number'",
    ),
}

PONG = "{ timestamp: 1, server_time: 2 }"
BAD_SAMPLES |= {
    "position_fields_come_together": (
        bad(
            "export const m: ShapesWebSocket.ServerMessage = "
            f'{{ type: "pong", data: {PONG}, offset: 3 }};'
        ),
        "TS2322",
        "missing the following properties",
    ),
    "offset_is_a_number": (
        bad(
            "export const m: ShapesWebSocket.ServerMessage = "
            f'{{ type: "pong", data: {PONG}, topic: "t", offset: "3", epoch: "e" }};'
        ),
        "TS2322",
        "not assignable to type 'number'",
    ),
    "client_messages_carry_no_position": (
        bad(
            f"export const m: {SHAPES} = "
            '{ type: "ping", data: { timestamp: 1 }, topic: "t", offset: 1, epoch: "e" };'
        ),
        "TS2353",
        "'topic' does not exist in type",
    ),
    "topic_is_undefined_until_narrowed": (
        bad(
            "export const t: string = m.topic;",
            'declare const m: Extract<ShapesWebSocket.ServerMessage, { type: "pong" }>;\n',
        ),
        "TS2322",
        "'string | undefined' is not assignable to type 'string'",
    ),
}

# Client data the converter refuses must not type-check either.
for _name, _data, _accepted in DRAW_CASES:
    if not _accepted:
        BAD_SAMPLES["refused_" + _name.replace(" ", "_")] = (
            bad(f'export const m: {SHAPES} = {{ type: "draw", data: {json.dumps(_data)} }};'),
            "",
            "",
        )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Write the generated file and every sample, run tsc once."""
    _typescript.require(_typescript.TSC)
    directory: Path = tmp_path_factory.mktemp("tsc")
    (directory / "websocket-types.ts").write_text(generate_websocket_types(app.server))
    files = {"good_client.ts": good_sample()}
    files |= {f"{name}.ts": source for name, (source, _, _) in BAD_SAMPLES.items()}
    for name, source in files.items():
        (directory / name).write_text(source)
    status, diagnostics, output = _typescript.tsc(
        *STRICT, "websocket-types.ts", *files, cwd=directory
    )
    by_file: dict[str, list[_typescript.Diagnostic]] = {}
    for diagnostic in diagnostics:
        by_file.setdefault(diagnostic.file, []).append(diagnostic)
    return {"status": status, "by_file": by_file, "output": output, "files": files}


def test_generated_file_and_good_client_compile(compiled: dict[str, Any]) -> None:
    by_file = compiled["by_file"]
    assert by_file.get("websocket-types.ts", []) == [], compiled["output"]
    assert by_file.get("good_client.ts", []) == [], compiled["output"]
    # Every other file has errors; nothing outside the samples does.
    assert set(by_file) == {f"{name}.ts" for name in BAD_SAMPLES}, compiled["output"]


def test_tsc_fails_on_the_bad_samples(compiled: dict[str, Any]) -> None:
    assert compiled["status"] != 0


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
    if code:
        assert any(e.code == code and text in e.message for e in errors), errors
