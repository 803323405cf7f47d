"""Client types: what each Python type becomes, names, errors, JSON Schema and AsyncAPI.

The TypeScript is compiled by the real ``tsc`` in ``test_typegen_tsc.py``; here the
generators' choices are checked against what the project's converter really writes and
accepts.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import json
import re
import typing
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, NewType

import attrs
import jsonschema
import orjson
import pytest
import yaml
from cattrs.preconf.orjson import OrjsonConverter

import trio_wsroutes._typegen._type_mapping as type_mapping
from tests import _typescript
from tests.typegen import app
from trio_wsroutes import (
    Connection,
    Context,
    TypeGenerationError,
    WebSocketRoute,
    WebSocketServer,
    converter,
    create_token_auth,
    create_websocket_route,
    extract_request_info,
    generate_asyncapi,
    generate_json_schema,
    generate_websocket_types,
    message,
    no_auth,
)
from trio_wsroutes._envelope import encode_error, with_position
from trio_wsroutes._errors import ErrorDetail
from trio_wsroutes._history import Position
from trio_wsroutes._messages import encode_message
from trio_wsroutes._validation import _make_converter  # pyright: ignore[reportPrivateUsage]


class Mode(enum.StrEnum):
    FAST = "fast"
    SLOW = "slow"


UserId = NewType("UserId", str)


async def _handler(ws: Connection[Any], data: Any, ctx: Context[Any]) -> None:
    return None


def sample_route(
    annotation: Any, default: Any = attrs.NOTHING, *, client: bool = True
) -> WebSocketRoute[Any, Any]:
    """A route whose client message ``SampleIn`` (unless ``client=False``) and server
    message ``SampleOut`` each have one field, ``value: annotation``."""
    field = {"value": attrs.field(type=annotation, default=default)}
    sample_out = message("sample")(attrs.make_class("SampleOut", dict(field), frozen=True))
    route = create_websocket_route("/sample").server_messages(sample_out)
    if client:
        route.on("sample", attrs.make_class("SampleIn", field, frozen=True), _handler)
    return route


def interface(text: str, name: str) -> str:
    """The ``export interface name {...}`` or ``export type name = ...;`` block."""
    lines = text.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if re.match(rf"export (interface|type) {name}\b", line)
        ),
        None,
    )
    assert start is not None, f"no definition of {name} in:\n{text}"
    end = start
    closing = "}" if lines[start].endswith("{") else None
    while not (lines[end] == closing if closing else lines[end].endswith(";")):
        end += 1
    return "\n".join(lines[start : end + 1])


def properties(text: str, name: str) -> list[str]:
    body = interface(text, name)
    return [line.strip() for line in body.splitlines()[1:-1] if not line.strip().startswith("/")]


NOTHING = attrs.NOTHING

# (id, annotation, default, client property, server property)
MAPPINGS: list[tuple[str, Any, Any, str, str]] = [
    ("str", str, NOTHING, "value: string;", "value: string;"),
    ("int", int, NOTHING, "value: number;", "value: number;"),
    ("float", float, NOTHING, "value: number;", "value: number;"),
    ("bool", bool, NOTHING, "value: boolean;", "value: boolean;"),
    ("None", type(None), NOTHING, "value: null;", "value: null;"),
    # A nullable field without a default must be sent (maybe as null).
    ("optional", str | None, NOTHING, "value: string | null;", "value: string | null;"),
    # A default makes it optional for clients; the server always writes the field.
    ("optional default", str | None, None, "value?: string | null;", "value: string | null;"),
    ("default", int, 0, "value?: number;", "value: number;"),
    ("list", list[str], NOTHING, "value: string[];", "value: string[];"),
    (
        "list of optional",
        list[str | None],
        NOTHING,
        "value: (string | null)[];",
        "value: (string | null)[];",
    ),
    ("tuple", tuple[int, str], NOTHING, "value: [number, string];", "value: [number, string];"),
    ("variadic tuple", tuple[float, ...], NOTHING, "value: number[];", "value: number[];"),
    ("empty tuple", tuple[()], NOTHING, "value: [];", "value: [];"),
    ("set", set[int], NOTHING, "value: number[];", "value: number[];"),
    ("frozenset", frozenset[str], NOTHING, "value: string[];", "value: string[];"),
    (
        "dict",
        dict[str, int],
        NOTHING,
        "value: Record<string, number>;",
        "value: Record<string, number>;",
    ),
    (
        "nested dict",
        dict[str, list[float]],
        NOTHING,
        "value: Record<string, number[]>;",
        "value: Record<string, number[]>;",
    ),
    (
        "dict with enum keys",
        dict[Mode, int],
        NOTHING,
        "value: Partial<Record<Mode, number>>;",
        "value: Partial<Record<Mode, number>>;",
    ),
    ("literal", Literal["a", "b"], NOTHING, 'value: "a" | "b";', 'value: "a" | "b";'),
    ("int literal", Literal[1, 2], NOTHING, "value: 1 | 2;", "value: 1 | 2;"),
    ("bool literal", Literal[True], NOTHING, "value: true;", "value: true;"),
    (
        "optional literal",
        Literal["a"] | None,
        NOTHING,
        'value: "a" | null;',
        'value: "a" | null;',
    ),
    ("str enum", Mode, NOTHING, "value: Mode;", "value: Mode;"),
    ("int enum", app.Priority, NOTHING, "value: Priority;", "value: Priority;"),
    ("datetime", datetime.datetime, NOTHING, "value: string;", "value: string;"),
    ("date", datetime.date, NOTHING, "value: string;", "value: string;"),
    ("bytes", bytes, NOTHING, "value: string;", "value: string;"),
    ("any", Any, NOTHING, "value: JsonValue;", "value: JsonValue;"),
    ("annotated", Annotated[int, "meta"], NOTHING, "value: number;", "value: number;"),
    ("newtype", UserId, NOTHING, "value: string;", "value: string;"),
    (
        "scalar union",
        int | str,
        NOTHING,
        "value: number | string;",
        "value: number | string;",
    ),
    (
        "attrs union",
        app.Circle | app.Square,
        NOTHING,
        "value: Circle | Square;",
        "value: Circle | Square;",
    ),
    ("attrs class", app.Circle, NOTHING, "value: Circle;", "value: Circle;"),
]


@pytest.mark.parametrize(
    ("annotation", "default", "client", "server"),
    [pytest.param(*row[1:], id=row[0]) for row in MAPPINGS],
)
def test_type_mapping(annotation: Any, default: Any, client: str, server: str) -> None:
    text = generate_websocket_types(sample_route(annotation, default))
    assert properties(text, "SampleIn") == [client]
    assert properties(text, "SampleOut") == [server]


def test_literal_keys_are_for_server_messages_only() -> None:
    # The converter writes such maps, but reads only dict[str, ...] (or str enums).
    text = generate_websocket_types(sample_route(dict[Literal["a", "b"], int], client=False))
    assert properties(text, "SampleOut") == ['value: Partial<Record<"a" | "b", number>>;']


def test_enums_become_literal_unions_of_their_wire_values() -> None:
    text = generate_websocket_types(app.server)
    assert 'export type Color = "red" | "green";' in text
    assert "export type Priority = 1 | 2;" in text
    assert [orjson.dumps(converter.unstructure(m)) for m in app.Color] == [b'"red"', b'"green"']
    assert [orjson.dumps(converter.unstructure(m)) for m in app.Priority] == [b"1", b"2"]


def test_nested_classes_are_emitted_once_and_reused() -> None:
    text = generate_websocket_types(app.server)
    # Circle, Square, Everything and Draw all use app.Point: one interface.
    assert text.count("export interface AppPoint {") == 1
    assert "center: AppPoint;" in text
    assert "here: AppPoint;" in text


def test_recursive_classes_refer_to_themselves() -> None:
    text = generate_websocket_types(app.server)
    assert properties(text, "TreeNode") == ["label: string;", "children: TreeNode[];"]


def test_class_names_clashing_across_modules_get_module_prefixes() -> None:
    text = generate_websocket_types(app.server)
    # tests.typegen.app.Point and tests.typegen.other.Point
    assert "export interface AppPoint {" in text
    assert "Python: `tests.typegen.other.Point`.\n */\nexport interface OtherPoint {" in text
    assert "export interface Point " not in text


@attrs.frozen
class Record:
    value: int


@attrs.frozen
class Params:
    name: str


@attrs.frozen
class ClientMessage:
    thing: str


@message("out")
@attrs.frozen
class Out:
    record: Record
    params: Params
    client: ClientMessage


def test_class_names_that_clash_with_generated_names_are_prefixed() -> None:
    route = create_websocket_route("/things").server_messages(Out)
    text = generate_websocket_types(route)
    assert "record: TestTypegenRecord;" in text
    assert "params: TestTypegenParams;" in text
    assert "client: TestTypegenClientMessage;" in text
    assert "export interface Record " not in text


def test_a_class_used_both_ways_with_defaults_gets_input_and_output_shapes() -> None:
    text = generate_websocket_types(app.server)
    assert properties(text, "SettingsInput") == ["theme?: string;", "volume?: number;"]
    assert properties(text, "SettingsOutput") == ["theme: string;", "volume: number;"]
    assert '{ type: "update_settings"; data: SettingsInput; id?: MessageId }' in text
    assert '{ type: "settings"; data: SettingsOutput; id?: MessageId }' in text
    # A class used both ways without defaults has one shape, one name.
    assert "AppPointInput" not in text
    assert "export interface AppPoint {" in text


def test_init_false_fields_are_left_out_as_the_converter_leaves_them_out() -> None:
    text = generate_websocket_types(app.server)
    assert "hidden" not in interface(text, "Everything")
    wire = converter.unstructure(everything())
    assert "hidden" not in wire


def test_field_metadata_description_becomes_a_comment() -> None:
    text = generate_websocket_types(app.server)
    assert "/** From 0 to 10. */\n  volume?: number;" in interface(text, "SettingsInput")


# -- what the converter really writes ----------------------------------------------------------


def everything() -> app.Everything:
    return app.Everything(
        text="t",
        count=3,
        ratio=0.5,
        flag=True,
        nothing=None,
        maybe=None,
        items=[1, 2],
        pair=(1, "a"),
        many=(1.5, 2.0),
        unique={"x", "y"},
        frozen=frozenset({1}),
        scores={"a": 1.0},
        nested={"k": [app.Point(1, 2), None]},
        mode="fast",
        color=app.Color.GREEN,
        priority=app.Priority.HIGH,
        at=datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        day=datetime.date(2024, 5, 6),
        time_of_day=datetime.time(7, 8, 9),
        ident=uuid.UUID(int=42),
        blob=b"\x00\x01binary\xff",
        extra={"any": ["json", 1, None]},
        shape=app.Circle(app.Point(0, 0), 2),
        tree=app.TreeNode("root", [app.TreeNode("leaf")]),
        place=app.other.Point(1, 2, 3),
        here=app.Point(5, 6),
    )


def wire_of(msg: object) -> dict[str, Any]:
    value = orjson.loads(encode_message(msg, id="r1").payload)
    assert isinstance(value, dict)
    return value


def test_bytes_are_the_base85_strings_the_converter_writes() -> None:
    blob = b"\x00\x01binary\xff"
    assert wire_of(everything())["data"]["blob"] == base64.b85encode(blob).decode()
    text = generate_websocket_types(app.server)
    assert "/** bytes, base85-encoded. */\n  blob: string;" in interface(text, "Everything")
    schema = json.loads(generate_json_schema(app.server))["$defs"]["Everything"]
    assert schema["properties"]["blob"]["contentEncoding"] == "base85"


def test_dates_and_uuids_are_the_iso_strings_the_converter_writes() -> None:
    data = wire_of(everything())["data"]
    assert data["at"] == "2024-05-06T07:08:09+00:00"
    assert data["day"] == "2024-05-06"
    assert data["ident"] == str(uuid.UUID(int=42))
    props = json.loads(generate_json_schema(app.server))["$defs"]["Everything"]["properties"]
    assert props["at"]["format"] == "date-time"
    assert props["day"]["format"] == "date"
    assert "format" not in props["time_of_day"]  # RFC 3339 times need an offset
    assert props["ident"]["format"] == "uuid"


@pytest.fixture
def own_converter(monkeypatch: pytest.MonkeyPatch) -> OrjsonConverter:
    """A fresh project converter, used by the generators instead of the shared one."""
    fresh = _make_converter()
    monkeypatch.setattr(type_mapping, "converter", fresh)
    return fresh


def test_the_mapping_follows_hooks_registered_on_the_converter(
    own_converter: OrjsonConverter,
) -> None:
    own_converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode())
    own_converter.register_unstructure_hook(decimal.Decimal, str)
    own_converter.register_unstructure_hook(datetime.datetime, lambda d: d.timestamp())
    route = sample_route(tuple[bytes, decimal.Decimal, datetime.datetime], client=False)
    text = generate_websocket_types(route)
    assert properties(text, "SampleOut") == ["value: [string, string, number];"]
    schema = json.loads(generate_json_schema(route))
    blob, amount, when = schema["$defs"]["SampleOut"]["properties"]["value"]["prefixItems"]
    assert blob["contentEncoding"] == "base64"
    assert amount["type"] == "string"
    assert when["type"] == "number"
    assert "format" not in when


# -- what cannot be generated ------------------------------------------------------------------


def generation_error(route: WebSocketRoute[Any, Any]) -> str:
    with pytest.raises(TypeGenerationError) as caught:
        generate_websocket_types(route)
    return str(caught.value)


def test_a_type_the_converter_cannot_serialise_names_the_class_and_field(
    own_converter: OrjsonConverter,
) -> None:
    # A hook that hands orjson the Decimal itself, which orjson cannot write.
    own_converter.register_unstructure_hook(decimal.Decimal, lambda d: d)

    @message("price")
    @attrs.frozen
    class Price:
        amount: decimal.Decimal

    error = generation_error(create_websocket_route("/prices").server_messages(Price))
    assert "field 'amount'" in error
    assert "Price" in error
    assert "decimal.Decimal" in error
    assert "cannot serialise" in error
    assert "register_unstructure_hook" in error


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (datetime.timedelta, "cannot write datetime.timedelta as JSON"),
        (object, "cannot write object as JSON"),
        (dict[int, str], "JSON object keys are strings"),
        (complex, "cannot write complex as JSON"),
    ],
    ids=["timedelta", "object", "int keys", "complex"],
)
def test_types_without_a_json_form_fail_when_the_route_is_defined(
    annotation: Any, expected: str
) -> None:
    # Before any type generation: the route refuses the class at once.
    cls = message("bad")(attrs.make_class("Bad", {"value": attrs.field(type=annotation)}))
    with pytest.raises(TypeError) as caught:
        create_websocket_route("/bad").server_messages(cls)
    error = str(caught.value)
    assert "route '/bad' server message Bad" in error
    assert "field 'value' of" in error
    assert ".Bad" in error
    assert expected in error


def test_a_client_message_type_the_converter_cannot_read_fails_when_declared() -> None:
    # The converter writes times, but has no hook to read them back.
    @attrs.frozen
    class Lookup:
        ident: datetime.time

    with pytest.raises(TypeError, match=r"field 'ident'.*cannot read datetime\.time"):
        create_websocket_route("/lookup").client_messages(message("lookup")(Lookup))
    # The same class is fine as a server message.
    text = generate_websocket_types(create_websocket_route("/ok").server_messages(Lookup))
    assert "ident: string;" in text


def test_an_unresolvable_annotation_names_the_class() -> None:
    @message("broken")
    @attrs.frozen
    class Broken:
        value: NoSuchType  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(TypeError, match=r"Broken.*NoSuchType"):
        create_websocket_route("/broken").server_messages(Broken)


def test_client_messages_without_a_wire_type_fail() -> None:
    @attrs.frozen
    class Untyped:
        x: int

    error = generation_error(create_websocket_route("/u").client_messages(Untyped))
    assert "has no wire type" in error
    assert "Untyped" in error


def test_client_messages_declared_with_client_messages_use_the_registered_type() -> None:
    @attrs.frozen
    class Join:
        room: str

    @attrs.frozen
    class Leave:
        room: str

    route = create_websocket_route("/rooms").client_messages(Join)
    route.on("join", Join, _handler)
    route.on("leave", Leave, _handler)  # not listed: left out
    text = generate_websocket_types(route)
    assert '{ type: "join"; data: Join; id?: MessageId }' in text
    assert "leave" not in text


# -- namespaces --------------------------------------------------------------------------------


def namespaces(*paths: str, **named: str) -> list[str]:
    routes: list[WebSocketRoute[Any, Any]] = [create_websocket_route(p) for p in paths]
    routes += [create_websocket_route(p, name=n) for n, p in named.items()]
    text = generate_websocket_types(routes)
    return re.findall(r"^export namespace (\w+) \{$", text, re.M)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/chat", "ChatWebSocket"),
        ("/chat", "ChatWebSocket"),
        ("/chat/:room", "ChatWebSocket"),
        ("/chat/{room}", "ChatWebSocket"),
        ("/rooms/:room_id/chat/{thread}", "ChatWebSocket"),
        ("/api/notifications", "NotificationsWebSocket"),
        ("/live-data/{feed}", "LiveDataWebSocket"),
        ("/user_events", "UserEventsWebSocket"),
        ("/", "RootWebSocket"),
        ("/:tenant", "ByTenantWebSocket"),
        ("/2fa", "Route2faWebSocket"),
    ],
)
def test_namespace_from_the_path(path: str, name: str) -> None:
    assert namespaces(path) == [name]


def test_clashing_short_names_use_the_whole_path() -> None:
    assert namespaces("/chat", "/chat/:room") == ["ChatWebSocket", "ChatByRoomWebSocket"]
    assert namespaces("/api/v1/chat", "/api/v2/chat") == [
        "ApiV1ChatWebSocket",
        "ApiV2ChatWebSocket",
    ]


def test_name_overrides_the_derived_namespace() -> None:
    assert namespaces(Chat="/api/chat") == ["Chat"]
    assert "export namespace Status {" in generate_websocket_types(app.server)


def test_routes_that_still_clash_are_an_error_asking_for_a_name() -> None:
    routes = [create_websocket_route("/chat-x"), create_websocket_route("/chat_x")]
    with pytest.raises(TypeGenerationError, match="pass name=") as caught:
        generate_websocket_types(routes)
    assert "ChatXWebSocket" in str(caught.value)


@pytest.mark.parametrize("name", ["chat room", "1Chat", "string", ""])
def test_unusable_names_are_refused(name: str) -> None:
    with pytest.raises(TypeGenerationError, match="namespace name"):
        generate_websocket_types(create_websocket_route("/x", name=name))


def test_selecting_routes_never_renames_them() -> None:
    routes = [create_websocket_route("/chat"), create_websocket_route("/chat/:room")]
    text = generate_websocket_types(routes, routes=["/chat/{room}"])
    assert re.findall(r"^export namespace (\w+)", text, re.M) == ["ChatByRoomWebSocket"]


def test_selecting_an_unknown_route_fails_listing_the_routes() -> None:
    with pytest.raises(TypeGenerationError, match=r"no route '/nope' \(routes: /api/shapes"):
        generate_websocket_types(app.server, routes=["/nope"])


def test_server_method_selects_routes_and_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "client" / "websocket-types.ts"
    text = app.server.generate_websocket_types(output_path=target, routes=["/api/shapes"])
    assert target.read_text() == text
    assert re.findall(r"^export namespace (\w+)", text, re.M) == ["ShapesWebSocket"]


# -- the file as a whole ---------------------------------------------------------------------


def test_output_is_deterministic_and_independent_of_registration_order() -> None:
    first = generate_websocket_types(app.server)
    assert generate_websocket_types(app.server) == first
    reordered = WebSocketServer([app.status, app.chat, app.shapes])
    assert generate_websocket_types(reordered) == first


def test_header_says_generated_and_carries_no_timestamp() -> None:
    text = generate_websocket_types(app.server)
    assert text.startswith("// Generated by trio_wsroutes")
    assert "Do not edit" in text.splitlines()[0]
    assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}", text)


def test_namespaces_name_the_route_path_module_and_auth() -> None:
    text = generate_websocket_types(app.server)
    doc = text[: text.index("export namespace ChatWebSocket")].rsplit("/**", 1)[1]
    assert "WebSocket route `/rooms/:room_id/chat/{thread}`." in doc
    assert "Defined in: `tests.typegen.app`." in doc
    assert "Path parameters: `room_id`, `thread`." in doc
    assert "tests.typegen.app.session_user" in doc
    shapes = text[: text.index("export namespace ShapesWebSocket")].rsplit("/**", 1)[1]
    assert "bearer token" in shapes
    assert "`token` query parameter" in shapes
    assert "`session` cookie" in shapes


def test_envelopes_and_the_error_envelope() -> None:
    text = generate_websocket_types(app.server)
    assert "export type MessageId = string | number;" in text
    error = interface(text, "WebSocketErrorMessage")
    assert 'type: "error";' in error
    assert "details?: WebSocketErrorDetail[];" in error
    assert properties(text, "WebSocketErrorDetail") == ["path: string;", "message: string;"]
    chat = text[text.index("export namespace ChatWebSocket") :]
    assert (
        "export type ServerMessage =\n"
        '    | ({ type: "said"; data: Said; id?: MessageId } & WebSocketTopicPosition)\n'
        "    | WebSocketErrorMessage\n"
        "    | WebSocketAckMessage;"
    ) in chat
    assert (
        "export type ClientMessage =\n"
        '    | { type: "say"; data: Say; id?: MessageId }\n'
        '    | { type: "thread:join"; data: Join; id?: MessageId };'
    ) in chat
    # A wire type that is no identifier is quoted; a class without fields is an empty object.
    assert '    "thread:join": Join;' in chat
    assert "export type Join = Record<string, never>;" in text


def test_server_messages_may_carry_a_history_position_all_three_fields_or_none() -> None:
    text = generate_websocket_types(app.server)
    position = text[text.index("export type WebSocketTopicPosition =") :]
    position = position[: position.index(";\n\n") + 2]
    assert "topic: string;" in position
    assert "offset: number;" in position
    assert "epoch: string;" in position
    assert "| { topic?: never; offset?: never; epoch?: never };" in position
    doc = text[: text.index("export type WebSocketTopicPosition")].rsplit("/**", 1)[1]
    assert "A publication on a topic with\n * history" in doc
    assert "since=TOPIC@EPOCH:OFFSET" in doc
    # Server messages only: the position is never part of what a client sends.
    for namespace in ("ChatWebSocket", "ShapesWebSocket"):
        body = text[text.index(f"export namespace {namespace}") :]
        client = body[
            body.index("export type ClientMessage") : body.index("export type ServerMessage")
        ]
        server = body[
            body.index("export type ServerMessage") : body.index("export interface ClientData")
        ]
        assert "WebSocketTopicPosition" not in client
        assert server.count("& WebSocketTopicPosition)") == server.count("data: ")


@attrs.frozen
class WebSocketTopicPosition:
    place: str


@attrs.frozen
class WebSocketOffset:
    seconds: float


@message("where")
@attrs.frozen
class Where:
    position: WebSocketTopicPosition
    offset: WebSocketOffset


def test_classes_named_like_the_position_types_are_prefixed() -> None:
    route = create_websocket_route("/where").server_messages(Where)
    text = generate_websocket_types(route)
    assert "position: TestTypegenWebSocketTopicPosition;" in text
    assert "offset: TestTypegenWebSocketOffset;" in text
    assert "export interface WebSocketTopicPosition " not in text
    assert text.count("export type WebSocketTopicPosition =") == 1
    defs = json.loads(generate_json_schema(route))["$defs"]
    assert defs["WebSocketOffset"]["type"] == "integer"
    assert defs["TestTypegenWebSocketOffset"]["properties"] == {"seconds": {"type": "number"}}


def test_the_ack_envelope_is_sent_where_a_handler_may_return_nothing() -> None:
    text = generate_websocket_types(app.server)
    assert properties(text, "WebSocketAckMessage") == ['type: "ack";', "id: MessageId;"]
    # /api/shapes: every handler returns a message; the chat route's return None.
    shapes = text[text.index("export namespace ShapesWebSocket") :]
    shapes = shapes[: shapes.index("\n}\n")]
    assert "WebSocketAckMessage" not in shapes
    chat = text[text.index("export namespace ChatWebSocket") :]
    assert "this route's messages, error envelopes and acks" in chat
    validator = schema_validator("ChatWebSocketServerMessage")
    assert validator.is_valid({"type": "ack", "id": 3})
    assert not validator.is_valid({"type": "ack"})
    assert not schema_validator("ShapesWebSocketServerMessage").is_valid({"type": "ack", "id": 3})


def test_replies_are_documented_from_handler_annotations() -> None:
    text = generate_websocket_types(app.server)
    assert "/** Answered with `pong` (carrying the same `id`). */\n    ping: Ping;" in text


# -- JSON Schema -----------------------------------------------------------------------------


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    document = json.loads(generate_json_schema(app.server))
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": document["$defs"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def test_json_schema_accepts_what_the_server_sends() -> None:
    validator = schema_validator("ShapesWebSocketServerMessage")
    sent = [
        wire_of(everything()),
        wire_of(app.Pong(timestamp=1.0, server_time=2.0)),
        wire_of(app.Settings()),
        orjson.loads(
            encode_error(
                "VALIDATION_ERROR", "Invalid", 7, [ErrorDetail("$.data.x", "expected number")]
            ).payload
        ),
    ]
    for frame in sent:
        assert list(validator.iter_errors(frame)) == [], frame
    # Publications on topics with history carry their position, exactly as the broker
    # splices it in; all three fields or none.
    positioned = with_position(
        encode_message(app.Pong(timestamp=1.0, server_time=2.0)).payload,
        "room:a",
        Position("Xk3-_9", 7),
    )
    assert positioned is not None
    assert list(validator.iter_errors(orjson.loads(positioned))) == []
    base = wire_of(app.Pong(timestamp=1.0, server_time=2.0))
    full = {"topic": "room:a", "offset": 7, "epoch": "Xk3-_9"}
    for partial in ({"offset": 7}, {"topic": "t", "epoch": "e"}, {"epoch": "e"}):
        assert not validator.is_valid({**base, **partial}), partial
    for bad in ({"offset": 0}, {"offset": "7"}, {"offset": 2**53}, {"epoch": "no spaces"}):
        assert not validator.is_valid({**base, **full, **bad}), bad
    client = schema_validator("ShapesWebSocketClientMessage")
    ping = {"type": "ping", "data": {"timestamp": 1}}
    assert client.is_valid(ping)
    # Not described on client messages (unknown keys are allowed, as the server ignores them).
    assert "offset" not in json.dumps(
        json.loads(generate_json_schema(app.server))["$defs"]["ShapesWebSocketClientMessage"]
    )
    # And refuses what it does not send.
    broken = wire_of(app.Pong(timestamp=1.0, server_time=2.0))
    del broken["data"]["server_time"]
    assert not validator.is_valid(broken)
    assert not validator.is_valid({"type": "nope", "data": {}})


DRAW = {"shape": {"radius": 1.5, "center": {"x": 0, "y": 1}}, "color": "red", "note": None}

# (client data for "draw", does the converter accept it?)
DRAW_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("minimal", DRAW, True),
    ("defaults given", {**DRAW, "priority": 2, "tags": ["a"], "layer": "bottom"}, True),
    ("square", {**DRAW, "shape": {"corner": {"x": 0, "y": 0}, "side": 2}}, True),
    ("date and bytes", {**DRAW, "at": "2024-01-02T03:04:05+00:00", "blob": "VPRom"}, True),
    ("other point", {**DRAW, "place": {"x": 1, "y": 2, "z": 3}}, True),
    ("unknown keys are ignored", {**DRAW, "extra": 1}, True),
    ("required nullable missing", {k: v for k, v in DRAW.items() if k != "note"}, False),
    ("wrong enum value", {**DRAW, "color": "blue"}, False),
    ("int enum as string", {**DRAW, "priority": "2"}, False),
    ("wrong literal", {**DRAW, "layer": "middle"}, False),
    ("string for number", {**DRAW, "shape": {"radius": "1", "center": {"x": 0, "y": 0}}}, False),
    ("bool for number", {**DRAW, "shape": {"radius": True, "center": {"x": 0, "y": 0}}}, False),
    ("null for non-nullable", {**DRAW, "color": None}, False),
    ("tags not an array", {**DRAW, "tags": "a"}, False),
]


@pytest.mark.parametrize(
    ("data", "accepted"), [pytest.param(d, a, id=i) for i, d, a in DRAW_CASES]
)
def test_json_schema_agrees_with_the_converter_on_client_messages(
    data: dict[str, Any], accepted: bool
) -> None:
    try:
        converter.structure(data, app.Draw)
        converted = True
    except Exception:
        converted = False
    assert converted is accepted
    validator = schema_validator("ShapesWebSocketClientMessage")
    assert validator.is_valid({"type": "draw", "data": data, "id": 1}) is accepted


def test_json_schema_is_deterministic_and_names_like_typescript() -> None:
    text = generate_json_schema(app.server)
    assert generate_json_schema(app.server) == text
    defs = json.loads(text)["$defs"]
    assert {"SettingsInput", "SettingsOutput", "AppPoint", "OtherPoint", "Color"} <= set(defs)
    assert defs["SettingsInput"].get("required") is None
    assert defs["SettingsOutput"]["required"] == ["theme", "volume"]
    assert defs["Color"]["enum"] == ["red", "green"]


# -- AsyncAPI --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    _typescript.require(_typescript.ASYNCAPI_SCHEMA)
    schema = json.loads(_typescript.ASYNCAPI_SCHEMA.read_text())
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(schema)


def test_asyncapi_validates_against_the_official_3_0_schema(
    asyncapi_validator: jsonschema.Draft7Validator,
) -> None:
    document = json.loads(
        generate_asyncapi(app.server, format="json", servers={"local": "ws://localhost:8000"})
    )
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in asyncapi_validator.iter_errors(document)
    ]
    assert errors == []
    # The validator does look deep: a wrong operation action is caught.
    operation = document["operations"]["ShapesWebSocket.receive.draw"]
    operation["action"] = "publish"
    assert not asyncapi_validator.is_valid(document)


def test_asyncapi_server_payloads_describe_the_history_position() -> None:
    document = json.loads(generate_asyncapi(app.server, format="json"))
    messages = document["channels"]["ShapesWebSocket"]["messages"]
    pong = messages["server.pong"]["payload"]
    assert {k: pong["properties"][k] for k in ("topic", "offset", "epoch")} == {
        "topic": {"$ref": "#/components/schemas/WebSocketTopic"},
        "offset": {"$ref": "#/components/schemas/WebSocketOffset"},
        "epoch": {"$ref": "#/components/schemas/WebSocketEpoch"},
    }
    assert pong["required"] == ["type", "data"]
    assert pong["dependencies"]["offset"] == ["topic", "epoch"]  # draft-07's spelling
    assert "offset" not in messages["client.ping"]["payload"]["properties"]
    schemas = document["components"]["schemas"]
    assert schemas["WebSocketOffset"]["maximum"] == 2**53 - 1
    assert "since=TOPIC@EPOCH:OFFSET" in document["info"]["description"]
    # The payload schema, resolved, accepts a positioned publication and refuses half a
    # position.
    validator = jsonschema.Draft7Validator(
        {**pong, "components": {"schemas": schemas}},
    )
    wire = wire_of(app.Pong(timestamp=1.0, server_time=2.0))
    assert validator.is_valid({**wire, "topic": "room:a", "offset": 3, "epoch": "e1"})
    assert validator.is_valid(wire)
    assert not validator.is_valid({**wire, "offset": 3})


def test_asyncapi_channels_operations_messages_and_security() -> None:
    document = json.loads(generate_asyncapi(app.server, format="json"))
    assert document["asyncapi"] == "3.0.0"
    chat = document["channels"]["ChatWebSocket"]
    assert chat["address"] == "/rooms/{room_id}/chat/{thread}"
    assert set(chat["parameters"]) == {"room_id", "thread"}
    operations = document["operations"]
    shapes_ops = sorted(k for k in operations if k.startswith("ShapesWebSocket."))
    assert shapes_ops == [
        "ShapesWebSocket.receive.draw",
        "ShapesWebSocket.receive.ping",
        "ShapesWebSocket.receive.update_settings",
        "ShapesWebSocket.send.drawn",
        "ShapesWebSocket.send.error",
        "ShapesWebSocket.send.everything",
        "ShapesWebSocket.send.pong",
        "ShapesWebSocket.send.settings",
    ]
    ping = operations["ShapesWebSocket.receive.ping"]
    assert ping["action"] == "receive"
    assert ping["messages"] == [{"$ref": "#/channels/ShapesWebSocket/messages/client.ping"}]
    assert ping["reply"]["messages"] == [
        {"$ref": "#/channels/ShapesWebSocket/messages/server.pong"}
    ]
    payload = document["channels"]["ShapesWebSocket"]["messages"]["client.ping"]["payload"]
    assert payload["properties"]["data"] == {"$ref": "#/components/schemas/Ping"}
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert schemes["query_token"]["in"] == "query"
    assert schemes["cookie_session"] == {
        "type": "httpApiKey",
        "name": "session",
        "in": "cookie",
        "description": "A token in the `session` cookie.",
    }
    assert {"$ref": "#/components/securitySchemes/bearer"} in ping["security"]
    custom = operations["ChatWebSocket.receive.say"]["security"]
    assert custom == [
        {"$ref": "#/components/securitySchemes/custom_tests.typegen.app.session_user"}
    ]
    assert "security" not in operations["Status.send.pong"]
    join = operations["ChatWebSocket.receive.thread_join"]
    assert join["messages"] == [{"$ref": "#/channels/ChatWebSocket/messages/client.thread_join"}]
    assert document["channels"]["ChatWebSocket"]["messages"]["client.thread_join"]["name"] == (
        "thread:join"
    )
    # The chat route's handlers return None: the server answers them with an ack.
    assert join["reply"]["messages"] == [{"$ref": "#/channels/ChatWebSocket/messages/server.ack"}]
    assert operations["ChatWebSocket.send.ack"]["action"] == "send"
    assert document["channels"]["ChatWebSocket"]["messages"]["server.ack"] == {
        "$ref": "#/components/messages/WebSocketAck"
    }


@pytest.mark.parametrize(
    ("authenticate", "expected"),
    [
        (create_token_auth(lambda t: t, check_query=False), ["bearer"]),
        (
            create_token_auth(lambda t: t, check_header=False, query_param_name="key"),
            ["query_key"],
        ),
        (no_auth, []),
        (extract_request_info(), []),
    ],
    ids=["bearer only", "query only", "no_auth", "extract_request_info"],
)
def test_asyncapi_security_from_the_authenticate_function(
    authenticate: Any, expected: list[str]
) -> None:
    route = create_websocket_route("/a").authenticate(authenticate)
    document = json.loads(generate_asyncapi(route, format="json"))
    assert sorted(document["components"].get("securitySchemes", {})) == expected


def test_asyncapi_yaml_is_the_same_document_as_json(tmp_path: Path) -> None:
    as_json = generate_asyncapi(app.server, tmp_path / "asyncapi.json")
    as_yaml = generate_asyncapi(app.server, tmp_path / "asyncapi.yaml")
    assert (tmp_path / "asyncapi.yaml").read_text() == as_yaml
    assert as_yaml.startswith("# Generated by trio_wsroutes")
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def test_yaml_writer_round_trips_awkward_strings() -> None:
    from trio_wsroutes._typegen._yaml import dump_yaml

    data: dict[str, Any] = {
        "on": "yes",
        "null": None,
        "numbers": [1, -2.5, 1e100, "3.0.0", "1"],
        "quotes": 'it\'s "quoted": # not a comment',
        "unicode": "naïve \u2013 \u2603 \u2028 \x85 \x7f \ufeff",
        "empty": {},
        "nothing": [],
        "nested": [{"a": [[1, 2], {"b": "c"}]}, []],
        "$ref": "#/components/schemas/X",
        "multi\nline key": "multi\nline value",
        "true": True,
    }
    assert yaml.safe_load(dump_yaml(data)) == data


def test_the_generators_import_nothing_that_does_io() -> None:
    sources = Path(type_mapping.__file__).parent.glob("*.py")
    imports = set()
    for source in sources:
        imports |= set(re.findall(r"^\s*(?:from|import) (\S+)", source.read_text(), re.M))
    assert imports
    assert not imports & {"trio", "hypercorn", "anyio", "socket", "subprocess", "asyncio"}


def test_typing_optional_and_union_spell_the_same_types() -> None:
    # typing.Optional and typing.Union spell the same types as X | None.
    text = generate_websocket_types(sample_route(typing.Optional[typing.Union[int, str]]))  # noqa: UP007, UP045
    assert properties(text, "SampleIn") == ["value: number | string | null;"]
