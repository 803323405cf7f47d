"""The strict converter: JSON values to attrs classes, and errors to ``ErrorDetail``s.

Every class here is written with ``from __future__ import annotations`` (string
annotations), as most user modules are; the converter must resolve them itself.
"""

from __future__ import annotations

import builtins
import datetime
import enum
import json
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_wsroutes import ErrorDetail
from trio_wsroutes._validation import converter, validation_details

Details = list[tuple[str, str]]


def structure(cls: type[Any], value: Any) -> Any:
    return converter.structure(value, cls)


def structure_error(cls: type[Any], value: Any) -> Exception:
    """The exception structuring ``value`` raises; fails the test if it is accepted."""
    try:
        result = converter.structure(value, cls)
    except Exception as exc:
        return exc
    pytest.fail(f"{value!r} was accepted as {result!r}")


def details_of(cls: type[Any], value: Any) -> Details:
    """The (path, message) pairs reported for ``value``; fails if it is accepted."""
    details = validation_details(structure_error(cls, value))
    assert all(type(d) is ErrorDetail for d in details)
    return [(d.path, d.message) for d in details]


# -- scalars -----------------------------------------------------------------------------


@attrs.frozen
class Scalars:
    s: str = ""
    i: int = 0
    f: float = 0.0
    b: bool = False


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"s": "x"}, Scalars(s="x")),
        ({"s": ""}, Scalars(s="")),
        ({"i": 3}, Scalars(i=3)),
        ({"i": -(2**63)}, Scalars(i=-(2**63))),
        ({"f": 1.5}, Scalars(f=1.5)),
        ({"b": True}, Scalars(b=True)),
        ({"b": False}, Scalars(b=False)),
    ],
)
def test_scalar_of_the_right_json_type_is_accepted(
    data: dict[str, Any], expected: Scalars
) -> None:
    assert structure(Scalars, data) == expected


def test_float_field_accepts_a_json_integer_as_a_float() -> None:
    result = structure(Scalars, {"f": 1})
    assert result.f == 1.0
    assert type(result.f) is float


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("s", 5, "expected string, got integer"),
        ("s", 1.5, "expected string, got number"),
        ("s", True, "expected string, got boolean"),
        ("s", None, "expected string, got null"),
        ("s", ["a"], "expected string, got array"),
        ("s", {"a": 1}, "expected string, got object"),
        ("i", 1.7, "expected integer, got number"),
        ("i", 2.0, "expected integer, got number"),
        ("i", "1", "expected integer, got string"),
        ("i", True, "expected integer, got boolean"),
        ("i", False, "expected integer, got boolean"),
        ("f", True, "expected number, got boolean"),
        ("f", "1.5", "expected number, got string"),
        ("f", None, "expected number, got null"),
        ("b", 1, "expected boolean, got integer"),
        ("b", 0, "expected boolean, got integer"),
        ("b", "true", "expected boolean, got string"),
        ("b", None, "expected boolean, got null"),
    ],
)
def test_scalar_of_another_json_type_is_refused_not_coerced(
    field: str, value: Any, message: str
) -> None:
    assert details_of(Scalars, {field: value}) == [(f"$.data.{field}", message)]


# -- None, Optional, defaults, required fields -------------------------------------------


@attrs.frozen
class Optionals:
    count: int | None  # required, but may be null
    note: str | None = None
    tags: list[str] = attrs.Factory(list)


def test_optional_fields_take_null_or_their_type() -> None:
    assert structure(Optionals, {"count": None}) == Optionals(count=None)
    assert structure(Optionals, {"count": 2, "note": "hi"}) == Optionals(count=2, note="hi")
    assert structure(Optionals, {"count": 1, "note": None}).note is None


def test_optional_field_refuses_other_types_naming_the_inner_type() -> None:
    assert details_of(Optionals, {"count": "2", "note": 5}) == [
        ("$.data.count", "expected integer, got string"),
        ("$.data.note", "expected string, got integer"),
    ]
    assert details_of(Optionals, {"count": True}) == [
        ("$.data.count", "expected integer, got boolean"),
    ]


def test_a_required_optional_field_must_still_be_present() -> None:
    assert details_of(Optionals, {"note": "x"}) == [("$.data.count", "required field missing")]


def test_defaults_fill_missing_fields_and_factories_are_fresh() -> None:
    first = structure(Optionals, {"count": 1})
    second = structure(Optionals, {"count": 1})
    assert first == Optionals(count=1, note=None, tags=[])
    first.tags.append("x")
    assert second.tags == []


@attrs.frozen
class Person:
    name: str
    age: int
    nickname: str = ""


def test_missing_required_fields_are_each_reported() -> None:
    assert details_of(Person, {}) == [
        ("$.data.name", "required field missing"),
        ("$.data.age", "required field missing"),
    ]
    assert details_of(Person, {"age": 3}) == [("$.data.name", "required field missing")]


def test_unknown_keys_are_ignored() -> None:
    result = structure(Person, {"name": "ann", "age": 3, "admin": True, "nested": {"x": [1]}})
    assert result == Person(name="ann", age=3)


def test_several_errors_are_reported_together_in_field_order() -> None:
    assert details_of(Person, {"age": "3", "nickname": 7}) == [
        ("$.data.name", "required field missing"),
        ("$.data.age", "expected integer, got string"),
        ("$.data.nickname", "expected string, got integer"),
    ]


@pytest.mark.parametrize(
    ("data", "got"),
    [([], "array"), ([{"name": "a"}], "array"), ("x", "string"), (1, "integer"),
     (1.5, "number"), (True, "boolean"), (None, "null")],
)  # fmt: skip
def test_data_that_is_not_an_object_is_reported_at_data(data: Any, got: str) -> None:
    assert details_of(Person, data) == [("$.data", f"expected object, got {got}")]


def test_validation_details_uses_the_path_given() -> None:
    error = structure_error(Person, {"name": 1, "age": 2})
    assert validation_details(error, "$.payload") == [
        ErrorDetail("$.payload.name", "expected string, got integer")
    ]


def test_validation_details_never_copies_foreign_exception_text() -> None:
    secret = ValueError("password=hunter2 at /srv/app/secret.py line 3")
    assert validation_details(secret) == [ErrorDetail("$.data", "invalid value")]


# -- lists, tuples, sets, dicts ----------------------------------------------------------


@attrs.frozen
class Tagged:
    tags: list[str]


def test_list_of_str() -> None:
    assert structure(Tagged, {"tags": ["a", "b"]}) == Tagged(tags=["a", "b"])
    assert structure(Tagged, {"tags": []}) == Tagged(tags=[])


@pytest.mark.parametrize(
    ("value", "got"), [("abc", "string"), ({"0": "a"}, "object"), (None, "null")]
)
def test_list_refuses_a_non_array_instead_of_iterating_it(value: Any, got: str) -> None:
    assert details_of(Tagged, {"tags": value}) == [("$.data.tags", f"expected array, got {got}")]


def test_list_reports_each_bad_item_by_index() -> None:
    assert details_of(Tagged, {"tags": ["a", 1, "b", None]}) == [
        ("$.data.tags[1]", "expected string, got integer"),
        ("$.data.tags[3]", "expected string, got null"),
    ]


@attrs.frozen
class Tuples:
    many: tuple[int, ...] = ()
    pair: tuple[int, str] = (0, "")


def test_homogeneous_tuple() -> None:
    result = structure(Tuples, {"many": [1, 2, 3]})
    assert result.many == (1, 2, 3)
    assert type(result.many) is tuple
    assert structure(Tuples, {"many": []}).many == ()
    assert details_of(Tuples, {"many": [1, "2", 3.5]}) == [
        ("$.data.many[1]", "expected integer, got string"),
        ("$.data.many[2]", "expected integer, got number"),
    ]
    assert details_of(Tuples, {"many": "12"}) == [("$.data.many", "expected array, got string")]


def test_fixed_length_tuple() -> None:
    result = structure(Tuples, {"pair": [1, "a"]})
    assert result.pair == (1, "a")
    assert type(result.pair) is tuple
    assert details_of(Tuples, {"pair": [1, 2]}) == [
        ("$.data.pair[1]", "expected string, got integer")
    ]
    assert details_of(Tuples, {"pair": ["1", 2]}) == [
        ("$.data.pair[0]", "expected integer, got string"),
        ("$.data.pair[1]", "expected string, got integer"),
    ]


@pytest.mark.parametrize("value", [[], [1], [1, "a", "b"]])
def test_fixed_length_tuple_refuses_another_length(value: list[Any]) -> None:
    assert details_of(Tuples, {"pair": value}) == [("$.data.pair", "expected an array of 2 items")]


@attrs.frozen
class Sets:
    ids: set[int] = attrs.Factory(set)
    names: frozenset[str] = frozenset()


def test_sets_come_from_arrays() -> None:
    result = structure(Sets, {"ids": [1, 2, 2], "names": ["a", "b"]})
    assert result.ids == {1, 2}
    assert type(result.ids) is set
    assert result.names == frozenset({"a", "b"})
    assert type(result.names) is frozenset


def test_sets_refuse_bad_items_and_non_arrays() -> None:
    assert details_of(Sets, {"ids": [1, "2", True]}) == [
        ("$.data.ids[1]", "expected integer, got string"),
        ("$.data.ids[2]", "expected integer, got boolean"),
    ]
    assert details_of(Sets, {"names": "ab"}) == [("$.data.names", "expected array, got string")]
    assert details_of(Sets, {"ids": {"1": 1}}) == [("$.data.ids", "expected array, got object")]


@attrs.frozen
class Counts:
    m: dict[str, int]


def test_dict_of_str_to_int() -> None:
    assert structure(Counts, {"m": {"x": 1, "a b": 2}}) == Counts(m={"x": 1, "a b": 2})
    assert structure(Counts, {"m": {}}) == Counts(m={})


def test_dict_reports_bad_values_by_key() -> None:
    assert details_of(Counts, {"m": {"x": "1", "ok": 2, "y": True}}) == [
        ("$.data.m.x", "expected integer, got string"),
        ("$.data.m.y", "expected integer, got boolean"),
    ]


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("a b", '$.data.m["a b"]'),
        ("1", '$.data.m["1"]'),
        ("", '$.data.m[""]'),
        ('say "hi"', '$.data.m["say \\"hi\\""]'),
        ("a.b", '$.data.m["a.b"]'),
        ("snake_case", "$.data.m.snake_case"),
    ],
)
def test_dict_keys_that_are_not_identifiers_are_quoted_in_paths(key: str, path: str) -> None:
    assert details_of(Counts, {"m": {key: None}}) == [(path, "expected integer, got null")]


def test_dict_refuses_a_non_object() -> None:
    assert details_of(Counts, {"m": [["x", 1]]}) == [("$.data.m", "expected object, got array")]


def test_dict_with_non_string_keys_is_refused_as_a_schema() -> None:
    # JSON object keys are always strings: such a schema could never validate anything.
    with pytest.raises(TypeError, match="JSON object keys are strings"):
        converter.get_structure_hook(dict[int, str])


# -- Literal and Enum --------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Priority(enum.Enum):
    LOW = 1
    HIGH = 2


class Level(enum.IntEnum):
    DEBUG = 10
    INFO = 20


class Shade(enum.StrEnum):
    LIGHT = "light"
    DARK = "dark"


class Size(str, enum.Enum):  # noqa: UP042 (the pre-3.11 spelling, still common)
    S = "s"
    M = "m"


@attrs.frozen
class Choices:
    one: Literal[1] = 1
    mode: Literal["r", "w"] = "r"
    color: Color = Color.RED
    priority: Priority = Priority.LOW
    level: Level = Level.INFO
    shade: Shade = Shade.LIGHT
    size: Size = Size.S


def test_literal_and_enum_values_are_accepted() -> None:
    data = {"one": 1, "mode": "w", "color": "blue", "priority": 2, "level": 10, "shade": "dark",
            "size": "m"}  # fmt: skip
    result = structure(Choices, data)
    assert result == Choices(
        one=1,
        mode="w",
        color=Color.BLUE,
        priority=Priority.HIGH,
        level=Level.DEBUG,
        shade=Shade.DARK,
        size=Size.M,
    )
    assert type(result.one) is int
    # Enums that subclass int or str still come back as members, not bare values.
    assert result.level is Level.DEBUG
    assert result.shade is Shade.DARK
    assert result.size is Size.M


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("one", True, "expected one of 1"),
        ("one", 1.0, "expected one of 1"),
        ("one", "1", "expected one of 1"),
        ("one", 2, "expected one of 1"),
        ("mode", "x", "expected one of 'r', 'w'"),
        ("mode", None, "expected one of 'r', 'w'"),
        ("color", "RED", "expected one of 'red', 'blue'"),
        ("color", "Red", "expected one of 'red', 'blue'"),
        ("color", ["red"], "expected one of 'red', 'blue'"),
        ("priority", True, "expected one of 1, 2"),
        ("priority", 1.0, "expected one of 1, 2"),
        ("priority", "1", "expected one of 1, 2"),
        ("priority", "LOW", "expected one of 1, 2"),
        ("level", True, "expected one of 10, 20"),
        ("level", 10.0, "expected one of 10, 20"),
        ("level", 30, "expected one of 10, 20"),
        ("level", "10", "expected one of 10, 20"),
        ("shade", "pink", "expected one of 'light', 'dark'"),
        ("shade", "LIGHT", "expected one of 'light', 'dark'"),
        ("shade", 1, "expected one of 'light', 'dark'"),
        ("size", "xl", "expected one of 's', 'm'"),
    ],
)
def test_literal_and_enum_compare_json_type_and_value(
    field: str, value: Any, message: str
) -> None:
    assert details_of(Choices, {field: value}) == [(f"$.data.{field}", message)]


# -- nested classes and unions -----------------------------------------------------------


@attrs.frozen
class Inner:
    n: int
    label: str = ""


@attrs.frozen
class Outer:
    inner: Inner
    items: list[Inner] = attrs.Factory(list)
    maybe: Inner | None = None


def test_nested_classes() -> None:
    result = structure(Outer, {"inner": {"n": 1}, "items": [{"n": 2, "label": "b"}]})
    assert result == Outer(inner=Inner(1), items=[Inner(2, "b")])
    assert structure(Outer, {"inner": {"n": 1}, "maybe": {"n": 3}}).maybe == Inner(3)


def test_nested_errors_carry_the_full_path() -> None:
    assert details_of(Outer, {"inner": {"n": "x"}}) == [
        ("$.data.inner.n", "expected integer, got string")
    ]
    assert details_of(Outer, {"inner": {}}) == [("$.data.inner.n", "required field missing")]
    assert details_of(Outer, {"inner": 5}) == [("$.data.inner", "expected object, got integer")]
    assert details_of(Outer, {"inner": {"n": 1}, "items": [{"n": 1}, {"n": 2, "label": 3}]}) == [
        ("$.data.items[1].label", "expected string, got integer")
    ]
    assert details_of(Outer, {"inner": {"n": 1}, "maybe": {"n": None}}) == [
        ("$.data.maybe.n", "expected integer, got null")
    ]
    assert details_of(Outer, {"inner": {"n": 1}, "maybe": []}) == [
        ("$.data.maybe", "expected object, got array")
    ]


@attrs.frozen
class Circle:
    radius: float


@attrs.frozen
class Square:
    side: float


@attrs.frozen
class Drawing:
    shape: Circle | Square


def test_union_of_attrs_classes_is_told_apart_by_their_fields() -> None:
    assert structure(Drawing, {"shape": {"radius": 1}}) == Drawing(Circle(1.0))
    assert structure(Drawing, {"shape": {"side": 2.5}}) == Drawing(Square(2.5))


def test_union_of_attrs_classes_validates_the_chosen_class_strictly() -> None:
    assert details_of(Drawing, {"shape": {"radius": "1"}}) == [
        ("$.data.shape.radius", "expected number, got string")
    ]


@pytest.mark.parametrize("value", [5, "circle", [], None, {}, {"diameter": 1}])
def test_union_of_attrs_classes_refuses_what_matches_neither(value: Any) -> None:
    # cattrs' own messages ("Couldn't disambiguate", ...) are not for clients.
    assert details_of(Drawing, {"shape": value}) == [("$.data.shape", "invalid value")]


@attrs.frozen
class IntOrStr:
    v: int | str


@attrs.frozen
class BoolOrStr:
    v: bool | str


def test_union_of_scalars_is_strict() -> None:
    assert structure(IntOrStr, {"v": 1}) == IntOrStr(1)
    assert structure(IntOrStr, {"v": "1"}) == IntOrStr("1")
    assert structure(BoolOrStr, {"v": True}) == BoolOrStr(True)
    assert structure(BoolOrStr, {"v": "x"}) == BoolOrStr("x")
    for value in (True, 1.5, None, [1]):
        [(path, _message)] = details_of(IntOrStr, {"v": value})
        assert path == "$.data.v"
    for value in (1, 0, 1.0, None):
        [(path, _message)] = details_of(BoolOrStr, {"v": value})
        assert path == "$.data.v"


# -- datetime ----------------------------------------------------------------------------


@attrs.frozen
class Event:
    at: datetime.datetime


def test_datetime_from_an_iso_string() -> None:
    result = structure(Event, {"at": "2024-01-02T03:04:05+00:00"})
    assert result.at == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.mark.parametrize("value", [5, 1.5, None, True, [2024, 1, 2], "yesterday", "2024-13-01"])
def test_bad_datetime_is_invalid_value_without_python_error_text(value: Any) -> None:
    assert details_of(Event, {"at": value}) == [("$.data.at", "invalid value")]


# -- attrs validators --------------------------------------------------------------------


@attrs.frozen
class Chat:
    text: str = attrs.field(validator=[attrs.validators.min_len(1), attrs.validators.max_len(5)])
    color: str = attrs.field(default="red", validator=attrs.validators.in_(["red", "blue"]))
    n: int = attrs.field(default=0)

    @n.validator
    def _check_n(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value % 2:
            raise ValueError("n must be even")


@attrs.frozen
class Envelope:
    chat: Chat


def test_values_passing_validators_are_accepted() -> None:
    assert structure(Chat, {"text": "hi", "color": "blue", "n": 4}) == Chat("hi", "blue", 4)


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"text": ""}, "$.data.text", "Length of 'text' must be >= 1: 0"),
        ({"text": "abcdef"}, "$.data.text", "Length of 'text' must be <= 5: 6"),
        (
            {"text": "a", "color": "green"},
            "$.data.color",
            "'color' must be in ['red', 'blue'] (got 'green')",
        ),
        ({"text": "a", "n": 3}, "$.data.n", "n must be even"),
    ],
)
def test_validator_failure_is_reported_on_its_field_with_its_message(
    data: dict[str, Any], path: str, message: str
) -> None:
    assert details_of(Chat, data) == [(path, message)]


def test_every_failing_validator_is_reported() -> None:
    assert details_of(Chat, {"text": "abcdefg", "color": "green", "n": 3}) == [
        ("$.data.text", "Length of 'text' must be <= 5: 7"),
        ("$.data.color", "'color' must be in ['red', 'blue'] (got 'green')"),
        ("$.data.n", "n must be even"),
    ]


def test_validator_failure_in_a_nested_class_has_the_nested_path() -> None:
    assert details_of(Envelope, {"chat": {"text": ""}}) == [
        ("$.data.chat.text", "Length of 'text' must be >= 1: 0")
    ]


def test_type_error_is_reported_rather_than_a_validator_running_on_a_wrong_type() -> None:
    assert details_of(Chat, {"text": 12345678}) == [
        ("$.data.text", "expected string, got integer")
    ]


def test_type_errors_and_validator_failures_of_other_fields_are_reported_together() -> None:
    assert details_of(Chat, {"text": "", "color": 7, "n": 3}) == [
        ("$.data.color", "expected string, got integer"),
        ("$.data.text", "Length of 'text' must be >= 1: 0"),
        ("$.data.n", "n must be even"),
    ]


# -- string annotations ------------------------------------------------------------------


@attrs.frozen
class Thread:
    title: str
    replies: list[Reply]  # a forward reference: Reply is defined below
    pinned: Reply | None = None


@attrs.frozen
class Reply:
    author: str
    likes: int = 0


def test_string_annotations_and_forward_references_are_resolved() -> None:
    assert Thread.__annotations__["replies"] == "list[Reply]"
    result = structure(Thread, {"title": "t", "replies": [{"author": "a", "likes": 2}]})
    assert result == Thread(title="t", replies=[Reply("a", 2)])
    assert details_of(Thread, {"title": 1, "replies": [{"author": "a", "likes": "2"}]}) == [
        ("$.data.title", "expected string, got integer"),
        ("$.data.replies[0].likes", "expected integer, got string"),
    ]


# -- properties --------------------------------------------------------------------------

# JSON as orjson produces it: integers within 64 bits (larger ones arrive as floats).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@attrs.frozen
class Sample:
    name: str
    count: int = 0
    ratio: float = 1.0
    flag: bool = False
    tags: list[str] = attrs.Factory(list)
    scores: dict[str, int] = attrs.Factory(dict)
    note: str | None = None


def _json_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
             bool: "boolean", type(None): "null"}  # fmt: skip
    return names[type(value)]


def _key_path(path: str, key: str) -> str:
    # JSONPath: .name for identifiers, ["..."] (a JSON string) for any other key.
    return (
        f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    )


def expected_sample_details(data: Any) -> Details:
    """What Zod would report for ``data`` against ``Sample``, written independently."""
    if type(data) is not dict:
        return [("$.data", f"expected object, got {_json_name(data)}")]
    out: Details = []
    is_int = {int}
    scalar_kinds: dict[str, tuple[set[type], str]] = {
        "count": (is_int, "integer"),
        "ratio": ({int, float}, "number"),
        "flag": ({bool}, "boolean"),
        "note": ({str, type(None)}, "string"),
    }
    if "name" not in data:
        out.append(("$.data.name", "required field missing"))
    elif type(data["name"]) is not str:
        out.append(("$.data.name", f"expected string, got {_json_name(data['name'])}"))
    for field in ("count", "ratio", "flag"):
        kinds, expected = scalar_kinds[field]
        if field in data and type(data[field]) not in kinds:
            out.append((f"$.data.{field}", f"expected {expected}, got {_json_name(data[field])}"))
    if "tags" in data:
        tags = data["tags"]
        if type(tags) is not list:
            out.append(("$.data.tags", f"expected array, got {_json_name(tags)}"))
        else:
            for index, item in enumerate(tags):
                if type(item) is not str:
                    out.append(
                        (f"$.data.tags[{index}]", f"expected string, got {_json_name(item)}")
                    )
    if "scores" in data:
        scores = data["scores"]
        if type(scores) is not dict:
            out.append(("$.data.scores", f"expected object, got {_json_name(scores)}"))
        else:
            for key, item in scores.items():
                if type(item) is not int:
                    path = _key_path("$.data.scores", key)
                    out.append((path, f"expected integer, got {_json_name(item)}"))
    if "note" in data and type(data["note"]) not in scalar_kinds["note"][0]:
        out.append(("$.data.note", f"expected string, got {_json_name(data['note'])}"))
    return out


def _field_values(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Half the time a value of the right type, so that valid samples are common too.
    return strategy | json_values


sample_like = st.fixed_dictionaries(
    {},
    optional={
        "name": _field_values(st.text(max_size=5)),
        "count": _field_values(st.integers(-5, 5)),
        "ratio": _field_values(st.floats(allow_nan=False, allow_infinity=False)),
        "flag": _field_values(st.booleans()),
        "tags": _field_values(st.lists(_field_values(st.text(max_size=3)), max_size=3)),
        "scores": _field_values(
            st.dictionaries(st.text(max_size=4), _field_values(st.integers()), max_size=3)
        ),
        "note": _field_values(st.none() | st.text(max_size=3)),
        "extra": json_values,
    },
)

EXCEPTION_NAMES = [
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
]


def assert_client_safe(details: list[ErrorDetail]) -> None:
    assert details
    for detail in details:
        assert type(detail) is ErrorDetail
        assert detail.path.startswith("$.data")
        assert detail.message
        assert "Traceback" not in detail.message
        assert "Error(" not in detail.message
        assert "<class " not in detail.message
        assert not any(name in detail.message for name in EXCEPTION_NAMES), detail.message


@given(json_values | sample_like)
def test_sample_is_accepted_exactly_when_valid_with_every_problem_reported(data: Any) -> None:
    expected = expected_sample_details(data)
    try:
        result = converter.structure(data, Sample)
    except Exception as exc:
        details = validation_details(exc)
        assert_client_safe(details)
        assert [(d.path, d.message) for d in details] == expected
        return
    assert expected == [], f"accepted {data!r} as {result!r}"
    assert type(result.name) is str
    assert type(result.count) is int
    assert type(result.ratio) is float
    assert type(result.flag) is bool
    assert all(type(tag) is str for tag in result.tags)
    assert all(type(k) is str and type(v) is int for k, v in result.scores.items())
    assert result.note is None or type(result.note) is str
    assert result.name == data["name"]


@attrs.frozen
class Everything:
    choice: Literal["a", "b"] = "a"
    color: Color = Color.RED
    when: datetime.datetime | None = None
    pair: tuple[int, str] = (0, "")
    ids: frozenset[int] = frozenset()
    inner: Inner | None = None
    shape: Circle | Square | None = None
    either: int | str = 0
    text: str = attrs.field(default="x", validator=attrs.validators.min_len(1))


@given(json_values | st.dictionaries(st.sampled_from(list(attrs.fields_dict(Everything))),
                                     json_values, max_size=5))  # fmt: skip
def test_any_json_either_structures_with_typed_fields_or_gives_safe_details(data: Any) -> None:
    try:
        result = converter.structure(data, Everything)
    except Exception as exc:
        assert_client_safe(validation_details(exc))
        return
    assert result.choice in ("a", "b")
    assert isinstance(result.color, Color)
    assert result.when is None or isinstance(result.when, datetime.datetime)
    assert type(result.pair[0]) is int
    assert type(result.pair[1]) is str
    assert all(type(i) is int for i in result.ids)
    assert result.inner is None or type(result.inner.n) is int
    assert result.shape is None or isinstance(result.shape, Circle | Square)
    assert type(result.either) in (int, str)
    assert type(result.text) is str
    assert result.text
