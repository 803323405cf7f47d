"""The strict converter: JSON values to attrs classes, and errors to ``ErrorDetail``s.

Every class here is written with ``from __future__ import annotations`` (string
annotations), as most user modules are; the converter must resolve them itself.
"""

from __future__ import annotations

import builtins
import datetime
import decimal
import enum
import json
import uuid
from typing import Any, Literal

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_wsroutes import (
    ErrorDetail,
    _definition_checks,
    _validation_details,
    _validation_problems,
    create_websocket_route,
    generate_json_schema,
    generate_websocket_types,
    message,
)
from trio_wsroutes._definition_checks import check_client_schema, check_server_message
from trio_wsroutes._messages import encode_message
from trio_wsroutes._validation import _make_converter, converter, structure_hook_for
from trio_wsroutes._validation_details import validation_details

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


# -- UUID, date-time, date, decimal: strings in one strict form ---------------------------

UUID_TEXT = "123e4567-e89b-12d3-a456-426614174000"
UUID_HINT = f'expected a UUID string like "{UUID_TEXT}"'
DATETIME_HINT = 'expected an ISO 8601 date-time like "2024-01-02T03:04:05Z"'
DATETIME_TYPE = 'expected an ISO 8601 date-time string like "2024-01-02T03:04:05Z"'
NAIVE_HINT = (
    'expected an ISO 8601 date-time with a UTC offset ("Z" or "+01:00"), '
    'like "2024-01-02T03:04:05Z"'
)
DATE_HINT = 'expected an ISO 8601 date like "2024-01-02"'
DATE_TYPE = 'expected an ISO 8601 date string like "2024-01-02"'
DECIMAL_HINT = 'expected a decimal number like "12.50"'
DECIMAL_TYPE = 'expected a decimal number as a string like "12.50"'
UTC = datetime.UTC


def offset(hours: int, minutes: int = 0) -> datetime.timezone:
    return datetime.timezone(datetime.timedelta(hours=hours, minutes=minutes))


@attrs.frozen
class Typed:
    id: uuid.UUID = uuid.UUID(int=0)  # noqa: RUF009 (immutable)
    at: datetime.datetime = datetime.datetime(2000, 1, 1, tzinfo=UTC)
    day: datetime.date = datetime.date(2000, 1, 1)
    amount: decimal.Decimal = decimal.Decimal(0)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("id", UUID_TEXT, uuid.UUID(UUID_TEXT)),
        ("id", UUID_TEXT.upper(), uuid.UUID(UUID_TEXT)),  # RFC 9562: any case on input
        ("at", "2024-01-02T03:04:05Z", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("at", "2024-01-02t03:04:05z", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("at", "2024-01-02T03:04:05+00:00", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("at", "2024-01-02T03:04:05-00:00", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            "at",
            "2024-01-02T03:04:05.123+05:30",
            datetime.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=offset(5, 30)),
        ),
        (  # nanoseconds (Go, Java) keep their microseconds
            "at",
            "2024-01-02T03:04:05.123456789-08:00",
            datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=offset(-8)),
        ),
        ("day", "2024-02-29", datetime.date(2024, 2, 29)),
        ("amount", "12.50", decimal.Decimal("12.50")),
        ("amount", "-0.000001", decimal.Decimal("-0.000001")),
        ("amount", "1E+3", decimal.Decimal("1E+3")),
        ("amount", "+7", decimal.Decimal(7)),
        ("amount", ".5", decimal.Decimal("0.5")),
        ("amount", "123456789012345678901234567890.123456789", decimal.Decimal(
            "123456789012345678901234567890.123456789")),
    ],
)  # fmt: skip
def test_uuid_datetime_date_and_decimal_strings_are_accepted(
    field: str, value: str, expected: Any
) -> None:
    result = getattr(structure(Typed, {field: value}), field)
    assert result == expected
    assert type(result) is type(expected)
    if field == "at":
        assert result.utcoffset() == expected.utcoffset()  # the offset sent is kept
    if field == "amount":
        assert result.as_tuple() == expected.as_tuple()  # every digit, "12.50" stays 2 places


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("id", 5, f"{UUID_HINT}, got integer"),
        ("id", None, f"{UUID_HINT}, got null"),
        ("id", {"hex": UUID_TEXT}, f"{UUID_HINT}, got object"),
        ("id", "not-a-uuid", UUID_HINT),
        ("id", UUID_TEXT.replace("-", ""), UUID_HINT),
        ("id", "{" + UUID_TEXT + "}", UUID_HINT),
        ("id", "urn:uuid:" + UUID_TEXT, UUID_HINT),
        ("id", UUID_TEXT + "\n", UUID_HINT),
        ("id", UUID_TEXT[:-1] + "g", UUID_HINT),
        ("at", 1704164645, f"{DATETIME_TYPE}, got integer"),
        ("at", 1.5, f"{DATETIME_TYPE}, got number"),
        ("at", True, f"{DATETIME_TYPE}, got boolean"),
        ("at", [2024, 1, 2], f"{DATETIME_TYPE}, got array"),
        ("at", "yesterday", DATETIME_HINT),
        ("at", "2024-01-02", DATETIME_HINT),
        ("at", "2024-01-02 03:04:05Z", DATETIME_HINT),
        ("at", "2024-01-02T03:04Z", DATETIME_HINT),  # RFC 3339 needs the seconds
        ("at", "2024-01-02T03:04:05+0100", DATETIME_HINT),
        ("at", "20240102T030405Z", DATETIME_HINT),
        ("at", "2024-13-01T00:00:00Z", DATETIME_HINT),
        ("at", "2024-02-30T00:00:00Z", DATETIME_HINT),
        ("at", "2024-01-02T24:00:00Z", DATETIME_HINT),
        ("at", "2024-01-02T03:04:05+24:00", DATETIME_HINT),
        ("at", "\uff12\uff10\uff12\uff14-01-02T03:04:05Z", DATETIME_HINT),  # fullwidth digits
        ("at", "2024-01-02T03:04:05", NAIVE_HINT),
        ("at", "2024-01-02T03:04:05.250", NAIVE_HINT),
        ("day", 20240102, f"{DATE_TYPE}, got integer"),
        ("day", None, f"{DATE_TYPE}, got null"),
        ("day", "2024-1-2", DATE_HINT),
        ("day", "20240102", DATE_HINT),
        ("day", "2024-W01-1", DATE_HINT),
        ("day", "2024-01-02T00:00:00Z", DATE_HINT),
        ("day", "2023-02-29", DATE_HINT),
        ("amount", 12.5, f"{DECIMAL_TYPE}, got number (JSON numbers lose precision)"),
        ("amount", 12, f"{DECIMAL_TYPE}, got number (JSON numbers lose precision)"),
        ("amount", True, f"{DECIMAL_TYPE}, got boolean"),
        ("amount", None, f"{DECIMAL_TYPE}, got null"),
        ("amount", ["1"], f"{DECIMAL_TYPE}, got array"),
        ("amount", "", DECIMAL_HINT),
        ("amount", "twelve", DECIMAL_HINT),
        ("amount", " 1.5", DECIMAL_HINT),
        ("amount", "1,5", DECIMAL_HINT),
        ("amount", "1_000", DECIMAL_HINT),
        ("amount", "0x10", DECIMAL_HINT),
        ("amount", "1e", DECIMAL_HINT),
        ("amount", "NaN", 'expected a finite decimal number like "12.50"'),
        ("amount", "-Infinity", 'expected a finite decimal number like "12.50"'),
        ("amount", "sNaN", 'expected a finite decimal number like "12.50"'),
        ("amount", "inf", 'expected a finite decimal number like "12.50"'),
        (
            "amount",
            "1e1000000",
            "expected a decimal number with an exponent between -999999 and 999999",
        ),
    ],
)
def test_uuid_datetime_date_and_decimal_refuse_other_json_and_other_forms(
    field: str, value: Any, message: str
) -> None:
    assert details_of(Typed, {field: value}) == [(f"$.data.{field}", message)]


def test_they_are_written_as_strings_in_the_form_they_are_read() -> None:
    value = Typed(
        id=uuid.UUID(UUID_TEXT),
        at=datetime.datetime(2024, 1, 2, 3, 4, 5, 250000, tzinfo=offset(1)),
        day=datetime.date(2024, 1, 2),
        amount=decimal.Decimal("12.50"),
    )
    data = converter.unstructure(value)
    assert data == {
        "id": UUID_TEXT,
        "at": "2024-01-02T03:04:05.250000+01:00",
        "day": "2024-01-02",
        "amount": "12.50",
    }
    assert structure(Typed, orjson.loads(orjson.dumps(data))) == value


@message("typed")
@attrs.frozen
class TypedOut:
    value: Typed
    ids: list[uuid.UUID]
    when: datetime.datetime | None = None


def test_the_server_sends_them_as_strings() -> None:
    msg = TypedOut(Typed(), [uuid.UUID(int=1)], datetime.datetime(2024, 1, 2, tzinfo=UTC))
    assert orjson.loads(encode_message(msg).payload) == {
        "type": "typed",
        "data": {
            "value": {
                "id": "00000000-0000-0000-0000-000000000000",
                "at": "2000-01-01T00:00:00+00:00",
                "day": "2000-01-01",
                "amount": "0",
            },
            "ids": ["00000000-0000-0000-0000-000000000001"],
            "when": "2024-01-02T00:00:00+00:00",
        },
    }


def test_a_naive_datetime_is_not_sent() -> None:
    # A client could not tell which time it means, and this converter would refuse it.
    with pytest.raises(ValueError, match=r"naive datetime '2024-01-02T03:04:05'.*tzinfo"):
        converter.unstructure(Typed(at=datetime.datetime(2024, 1, 2, 3, 4, 5)))


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "sNaN"])
def test_a_decimal_that_is_not_finite_is_not_sent(value: str) -> None:
    with pytest.raises(ValueError, match="only finite numbers"):
        converter.unstructure(Typed(amount=decimal.Decimal(value)))


def test_a_datetime_in_a_date_field_is_not_sent_as_a_date_time() -> None:
    with pytest.raises(TypeError, match=r"as a date: pass value\.date\(\)"):
        converter.unstructure(Typed(day=datetime.datetime(2024, 1, 2, tzinfo=UTC)))


# Offsets as RFC 3339 writes them: whole minutes, strictly within a day.
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)


@settings(deadline=None)  # behaviour, not speed (the first example builds hooks)
@given(
    st.builds(
        Typed,
        id=st.uuids(),
        at=st.datetimes(timezones=offsets | st.just(UTC)),
        day=st.dates(),
        amount=st.decimals(allow_nan=False, allow_infinity=False),
    )
)
def test_whatever_the_converter_writes_it_reads_back_unchanged(value: Typed) -> None:
    # What the Python client relies on: server messages decode to equal values.
    wire = orjson.loads(orjson.dumps(converter.unstructure(value)))
    assert all(type(v) is str for v in wire.values())
    back = structure(Typed, wire)
    assert back == value
    assert back.at.utcoffset() == value.at.utcoffset()
    assert back.amount.as_tuple() == value.amount.as_tuple()


def test_enums_are_written_as_their_values() -> None:
    data = converter.unstructure(Choices(color=Color.BLUE, level=Level.DEBUG, shade=Shade.DARK))
    assert data == {"one": 1, "mode": "r", "color": "blue", "priority": 1, "level": 10,
                    "shade": "dark", "size": "s"}  # fmt: skip
    # Any JSON library writes them (members of str and int enums are strs and ints).
    assert json.loads(json.dumps(data)) == data
    assert type(data["color"]) is str
    assert type(data["priority"]) is int
    assert structure(Choices, orjson.loads(orjson.dumps(data))) == Choices(
        color=Color.BLUE, level=Level.DEBUG, shade=Shade.DARK
    )


def test_generated_client_types_describe_these_strings() -> None:
    @attrs.frozen
    class Pay:
        to: uuid.UUID
        amount: decimal.Decimal
        on: datetime.date
        at: datetime.datetime

    route = create_websocket_route("/pay").server_messages(TypedOut)
    route.on("pay", Pay, _ignore)
    schema = orjson.loads(generate_json_schema(route))["$defs"]
    pay = schema["Pay"]["properties"]
    assert pay["to"]["type"] == pay["amount"]["type"] == "string"
    assert pay["to"]["format"] == "uuid"
    assert pay["at"]["format"] == "date-time"
    assert pay["on"]["format"] == "date"
    assert schema["Typed"]["properties"]["amount"]["type"] == "string"
    assert "at: string;" in generate_websocket_types(route)


async def _ignore(ws: Any, data: Any, ctx: Any) -> None:
    pass


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


@settings(deadline=None)  # behaviour, not speed (the first example builds hooks)
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
    day: datetime.date | None = None
    id: uuid.UUID | None = None
    amount: decimal.Decimal | None = None
    pair: tuple[int, str] = (0, "")
    ids: frozenset[int] = frozenset()
    inner: Inner | None = None
    shape: Circle | Square | None = None
    either: int | str = 0
    text: str = attrs.field(default="x", validator=attrs.validators.min_len(1))


@settings(deadline=None)  # behaviour, not speed (the first example builds hooks)
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
    assert result.when is None or result.when.utcoffset() is not None
    assert result.day is None or type(result.day) is datetime.date
    assert result.id is None or type(result.id) is uuid.UUID
    assert result.amount is None or result.amount.is_finite()
    assert type(result.pair[0]) is int
    assert type(result.pair[1]) is str
    assert all(type(i) is int for i in result.ids)
    assert result.inner is None or type(result.inner.n) is int
    assert result.shape is None or isinstance(result.shape, Circle | Square)
    assert type(result.either) in (int, str)
    assert type(result.text) is str
    assert result.text


# -- unknown keys ----------------------------------------------------------------------------


@attrs.frozen
class Line:
    sku: str
    qty: int = 1


@attrs.frozen
class Order:
    lines: list[Line]
    ship_to: Inner | None = None
    shape: Circle | Square | None = None
    by_name: dict[str, Line] = attrs.Factory(dict)
    note: str = ""
    total: int = attrs.field(init=False, default=0)


def strict_details(cls: type[Any], value: Any) -> Details:
    hook = structure_hook_for(cls, forbid_unknown=True)
    try:
        result = hook(value, cls)
    except Exception as exc:
        return [(d.path, d.message) for d in validation_details(exc)]
    pytest.fail(f"{value!r} was accepted as {result!r}")


def test_unknown_keys_are_ignored_by_default() -> None:
    data = {"lines": [{"sku": "a", "extra": 1}], "extra": True}
    assert structure_hook_for(Order)(data, Order) == Order([Line("a")])
    assert structure(Order, data) == Order([Line("a")])


def test_forbidding_unknown_keys_reports_each_on_its_path() -> None:
    assert strict_details(Order, {"lines": [], "extra": 1}) == [
        ("$.data.extra", 'unknown field "extra"')
    ]
    assert strict_details(Order, {"lines": [], "a b": 1, "x": None, "": 0}) == [
        ('$.data["a b"]', 'unknown field "a b"'),
        ("$.data.x", 'unknown field "x"'),
        ('$.data[""]', 'unknown field ""'),
    ]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"lines": [{"sku": "a"}, {"sku": "b", "extra": 1}]}, "$.data.lines[1].extra"),
        ({"lines": [], "ship_to": {"n": 1, "extra": 1}}, "$.data.ship_to.extra"),
        ({"lines": [], "shape": {"radius": 1, "extra": 1}}, "$.data.shape.extra"),
        ({"lines": [], "by_name": {"k": {"sku": "a", "extra": 1}}}, "$.data.by_name.k.extra"),
    ],
    ids=["list item", "optional class", "union member", "dict value"],
)
def test_nested_classes_are_strict_too(data: dict[str, Any], path: str) -> None:
    assert strict_details(Order, data) == [(path, 'unknown field "extra"')]


def test_a_field_the_converter_does_not_read_is_an_unknown_key() -> None:
    assert strict_details(Order, {"lines": [], "total": 5}) == [
        ("$.data.total", 'unknown field "total"')
    ]


def test_unknown_keys_are_reported_with_type_errors_and_validator_failures() -> None:
    assert strict_details(Chat, {"text": "", "color": 7, "extra": 1}) == [
        ("$.data.color", "expected string, got integer"),
        ("$.data.extra", 'unknown field "extra"'),
        ("$.data.text", "Length of 'text' must be >= 1: 0"),
    ]
    assert strict_details(Order, {"lines": [{"qty": "2", "extra": 1}], "more": 1}) == [
        ("$.data.lines[0].sku", "required field missing"),
        ("$.data.lines[0].qty", "expected integer, got string"),
        ("$.data.lines[0].extra", 'unknown field "extra"'),
        ("$.data.more", 'unknown field "more"'),
    ]


def test_the_strict_hook_accepts_what_has_no_unknown_keys() -> None:
    data = {"lines": [{"sku": "a", "qty": 2}], "ship_to": {"n": 1}, "shape": {"side": 2}}
    strict = structure_hook_for(Order, forbid_unknown=True)
    assert strict(data, Order) == structure(Order, data)
    assert strict is structure_hook_for(Order, forbid_unknown=True)  # cached


def test_strictness_ends_with_the_strict_hook() -> None:
    with pytest.raises(Exception):  # noqa: B017 - any failure; the details are above
        structure_hook_for(Order, forbid_unknown=True)({"lines": [], "extra": 1}, Order)
    assert structure(Order, {"lines": [], "extra": 1}) == Order([])
    assert structure_hook_for(Order)({"lines": [], "extra": 1}, Order) == Order([])


@settings(deadline=None)  # behaviour, not speed (the first example builds hooks)
@given(json_values | sample_like)
def test_strict_hook_reports_what_the_lenient_one_does_plus_unknown_keys(data: Any) -> None:
    expected = expected_sample_details(data)
    if type(data) is dict:
        known = set(attrs.fields_dict(Sample))
        expected += [
            (_key_path("$.data", key), f"unknown field {json.dumps(key, ensure_ascii=False)}")
            for key in data
            if key not in known
        ]
    strict = structure_hook_for(Sample, forbid_unknown=True)
    try:
        strict(data, Sample)
    except Exception as exc:
        details = validation_details(exc)
        assert_client_safe(details)
        assert sorted((d.path, d.message) for d in details) == sorted(expected)
        return
    assert expected == []


# -- definition-time checks ------------------------------------------------------------------

WHERE = "route '/orders' .on('order')"


class Plain:
    """A class the converter knows nothing about."""


def make(name: str, annotation: Any, **more: Any) -> type[Any]:
    fields = {"value": attrs.field(type=annotation)}
    fields |= {key: attrs.field(type=tp) for key, tp in more.items()}
    return attrs.make_class(name, fields, frozen=True)


def client_error(cls: type[Any]) -> str:
    with pytest.raises(TypeError) as caught:
        check_client_schema(cls, WHERE)
    return str(caught.value)


def server_error(cls: type[Any]) -> str:
    with pytest.raises(TypeError) as caught:
        check_server_message(cls)
    return str(caught.value)


@pytest.mark.parametrize(
    "cls", [Scalars, Optionals, Tuples, Sets, Counts, Choices, Outer, Drawing, IntOrStr, Chat,
            Thread, Sample, Everything, Typed, Order, Line],
    ids=lambda cls: cls.__name__,
)  # fmt: skip
def test_supported_classes_pass_both_checks(cls: type[Any]) -> None:
    check_client_schema(cls, WHERE)
    check_server_message(cls)


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [
        (object, "object"),
        (complex, "complex"),
        (Plain, "tests.test_validation.Plain"),
        (datetime.timedelta, "datetime.timedelta"),
    ],
)
def test_a_client_field_the_converter_cannot_read_names_class_field_and_type(
    annotation: Any, shown: str
) -> None:
    cls = make("Quote", annotation)
    error = client_error(cls)
    assert error.startswith(f"{WHERE}: field 'value' of ")
    assert ".Quote has type " + shown in error
    assert f"the converter cannot read {shown} from JSON" in error
    assert f"trio_wsroutes.converter (converter.register_structure_hook({shown}, fn))" in error


def test_a_bad_type_deep_inside_names_the_field_that_holds_it() -> None:
    inner = make("Leg", list[dict[str, complex]])
    outer = make("Trip", int, legs=list[inner] | None)  # type: ignore[valid-type]
    error = client_error(outer)
    assert "field 'value' of " in error
    assert ".Leg (reached through field 'legs' of " in error
    assert "has type list[dict[str, complex]]: the converter cannot read complex" in error
    error = server_error(outer)
    assert "has type list[dict[str, complex]]: the converter cannot write complex" in error


def test_a_client_field_of_a_type_with_a_registered_hook_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh = _make_converter()
    monkeypatch.setattr(_definition_checks, "converter", fresh)
    cls = make("Holder", Plain)
    with pytest.raises(TypeError):
        check_client_schema(cls, WHERE)
    fresh.register_structure_hook(Plain, lambda value, _: Plain())
    check_client_schema(cls, WHERE)
    with pytest.raises(TypeError):
        check_server_message(cls)
    fresh.register_unstructure_hook(Plain, lambda value: "plain")
    check_server_message(cls)


@pytest.mark.parametrize(
    ("annotation", "problem"),
    [
        (dict[int, str], "JSON object keys are strings; use dict[str, ...]"),
        (dict[Level, str], "JSON object keys are strings; use dict[str, ...]"),
        (Literal[b"x"], "the Literal value b'x' has no JSON form"),
    ],
)
def test_types_without_a_json_form_fail_both_checks(annotation: Any, problem: str) -> None:
    cls = make("Keys", annotation)
    assert problem in client_error(cls)
    assert problem in server_error(cls)


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [
        (object, "object"),
        (complex, "complex"),
        (Plain, "tests.test_validation.Plain"),
        (datetime.timedelta, "datetime.timedelta"),
        (list[complex] | None, "complex"),
    ],
)
def test_a_server_field_the_converter_cannot_write_names_class_field_and_type(
    annotation: Any, shown: str
) -> None:
    cls = message("quote")(make("Quote", annotation))
    error = server_error(cls)
    assert error.startswith(f"server message {cls.__module__}.Quote: field 'value' of ")
    assert f"the converter cannot write {shown} as JSON" in error
    assert f"(converter.register_unstructure_hook({shown}, fn))" in error


def test_server_messages_may_carry_decimals_uuids_times_and_bytes() -> None:
    cls = make("Rich", decimal.Decimal, id=uuid.UUID, at=datetime.datetime,
               day=datetime.date, time=datetime.time, blob=bytes, any=Any)  # fmt: skip
    check_server_message(cls)
    check_server_message(cls, "route '/rich'")


def test_an_enum_whose_values_have_no_json_form_cannot_be_sent() -> None:
    class Odd(enum.Enum):
        THING = Plain()

    error = server_error(make("Holder", Odd))
    assert "the value of Odd.THING has no JSON form" in error


def test_checks_refuse_what_is_not_an_attrs_class() -> None:
    assert client_error(Plain) == f"{WHERE}: tests.test_validation.Plain is not an attrs class"
    with pytest.raises(TypeError, match="is not an attrs class"):
        check_server_message(Plain)


def test_an_unresolvable_annotation_names_the_class() -> None:
    @attrs.frozen
    class Broken:
        value: NoSuchType  # type: ignore[name-defined]  # noqa: F821

    error = client_error(Broken)
    assert "cannot resolve the field annotations of " in error
    assert "Broken" in error
    assert "NoSuchType" in error


def test_recursive_classes_are_checked_once() -> None:
    check_client_schema(Thread, WHERE)
    check_server_message(TreeNode)


@attrs.frozen
class TreeNode:
    label: str
    children: list[TreeNode] = attrs.Factory(list)


# -- bounded validation: a budget of problems, capped details --------------------------------


@attrs.frozen
class CartLine:
    sku: str
    qty: int


@attrs.frozen
class Cart:
    lines: list[CartLine] = attrs.Factory(list)
    grid: list[list[CartLine]] = attrs.Factory(list)
    named: dict[str, CartLine] = attrs.Factory(dict)
    pair: tuple[CartLine, CartLine] | None = None


def counting_hook(calls: list[int]) -> Any:
    """A converter whose ``CartLine`` hook counts its calls (the work done on an array)."""
    conv = _make_converter()
    base = conv.get_structure_hook(CartLine)

    def hook(value: Any, target: Any) -> Any:
        calls.append(1)
        return base(value, target)

    conv.register_structure_hook(CartLine, hook)
    return conv


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"lines": [{}] * 100_000}, id="array"),
        pytest.param({"grid": [[{}] * 1000] * 100}, id="nested-arrays"),
        pytest.param({"named": {f"k{i}": {} for i in range(100_000)}}, id="object"),
    ],
)
def test_structuring_stops_after_the_problem_budget(data: dict[str, Any]) -> None:
    calls: list[int] = []
    conv = counting_hook(calls)
    with pytest.raises(Exception) as failure:
        conv.structure(data, Cart)
    # Two problems per empty object: structuring stopped after MAX_PROBLEMS of them.
    assert len(calls) == _validation_problems.MAX_PROBLEMS // 2
    assert len(list(_validation_details.structure_errors(failure.value, "$.data"))) == (
        _validation_problems.MAX_PROBLEMS
    )


def test_the_budget_is_shared_by_every_level() -> None:
    # 60 bad lines, then 60 bad cells: one budget for the whole value, not one per array.
    data = {"lines": [{"sku": 1, "qty": 1}] * 60, "grid": [[{"sku": 1, "qty": 1}] * 60]}
    details = validation_details(
        structure_error(Cart, data), max_details=1000, max_bytes=1_000_000
    )
    assert len(details) == _validation_problems.MAX_PROBLEMS + 1
    assert details[59] == ErrorDetail("$.data.lines[59].sku", "expected string, got integer")
    assert details[60] == ErrorDetail("$.data.grid[0][0].sku", "expected string, got integer")
    assert details[-1] == ErrorDetail(
        "$.data", "and possibly more problems (checking stopped after 100)"
    )


def test_a_budget_ends_with_its_value() -> None:
    # A failure spends nothing of the next value's budget, nested or not.
    for _ in range(3):
        details_of(Cart, {"lines": [{}] * 1000})
    assert details_of(Cart, {"lines": [{"sku": "a"}]}) == [
        ("$.data.lines[0].qty", "required field missing")
    ]


def test_details_are_capped_with_a_count_of_the_rest() -> None:
    details = validation_details(structure_error(Cart, {"lines": [{}] * 100_000}))
    assert len(details) == _validation_details.MAX_ERROR_DETAILS + 1
    assert details[0] == ErrorDetail("$.data.lines[0].sku", "required field missing")
    assert details[-1] == ErrorDetail(
        "$.data", "and at least 80 more problems (checking stopped after 100)"
    )
    few = validation_details(structure_error(Cart, {"lines": [{}] * 11}))
    assert few[-1] == ErrorDetail("$.data", "and 2 more problems")
    assert len(few) == 21
    one_more = validation_details(structure_error(Cart, {"lines": [{}] * 11}), max_details=21)
    assert one_more[-1] == ErrorDetail("$.data", "and 1 more problem")


def test_details_fit_their_byte_budget_and_every_text_is_clipped() -> None:
    long_key = "k" * 10_000
    data = {"named": {f"{long_key}{i}": {"sku": "s", "qty": "x" * 10_000} for i in range(50)}}
    details = validation_details(structure_error(Cart, data))
    body = orjson.dumps([d.to_json() for d in details])
    # The bound, plus the "and N more" entry.
    assert len(body) <= _validation_details.MAX_ERROR_DETAILS_BYTES + 200
    assert details[0].path == f'$.data.named["{"k" * 64}"...].qty'
    assert len(details) == _validation_details.MAX_ERROR_DETAILS + 1
    assert details[-1].message == "and 30 more problems"
    for detail in details:
        assert len(detail.path) <= _validation_details.MAX_DETAIL_TEXT
        assert len(detail.message) <= _validation_details.MAX_DETAIL_TEXT
    tiny = validation_details(structure_error(Cart, data), max_bytes=1)
    assert [d.message for d in tiny] == ["expected integer, got string", "and 49 more problems"]


def test_a_validator_message_that_repeats_the_input_is_clipped() -> None:
    @attrs.frozen
    class Pick:
        color: str = attrs.field(validator=attrs.validators.in_(["red", "blue"]))

    (detail,) = validation_details(structure_error(Pick, {"color": "x" * 100_000}))
    assert detail.path == "$.data.color"
    assert len(detail.message) == _validation_details.MAX_DETAIL_TEXT
    assert detail.message.endswith("...")


def test_unknown_keys_count_against_the_budget() -> None:
    hook = structure_hook_for(CartLine, forbid_unknown=True)
    data: dict[str, Any] = {"sku": "a", "qty": 1, **{f"x{i}": 0 for i in range(100_000)}}
    with pytest.raises(Exception) as failure:
        hook(data, CartLine)
    details = validation_details(failure.value)
    assert details[0] == ErrorDetail("$.data.x0", 'unknown field "x0"')
    assert details[-1].message == "and at least 80 more problems (checking stopped after 100)"
    long = validation_details(structure_error_of(hook, {"sku": "a", "qty": 1, "y" * 500: 0}))
    assert long == [ErrorDetail(f'$.data["{"y" * 64}"...]', f'unknown field "{"y" * 64}"...')]


def structure_error_of(hook: Any, data: Any) -> Exception:
    try:
        hook(data, CartLine)
    except Exception as exc:
        return exc
    pytest.fail("accepted")


def test_tuples_and_recursive_classes_use_the_budget() -> None:
    details = details_of(Cart, {"pair": [{}, {"sku": "a", "qty": "1"}]})
    assert details == [
        ("$.data.pair[0].sku", "required field missing"),
        ("$.data.pair[0].qty", "required field missing"),
        ("$.data.pair[1].qty", "expected integer, got string"),
    ]
    tree = structure(TreeNode, {"label": "a", "children": [{"label": "b"}]})
    assert tree == TreeNode("a", [TreeNode("b")])
    bad = {"label": "a", "children": [{"label": 1}] * 1000}
    details = details_of(TreeNode, bad)
    assert details[0] == ("$.data.children[0].label", "expected string, got integer")
    assert details[-1][1].startswith("and at least")


class Tint(enum.StrEnum):
    DARK = "dark"


class Grade(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize(
    ("cls", "good", "bad", "message"),
    [
        (list[int], [1, 2], [1, True], "expected integer, got boolean"),
        (list[str], ["a"], ["a", None], "expected string, got null"),
        (list[float], [1, 2.5], [1.5, "1"], "expected number, got string"),
        (list[bool], [True], [False, 0], "expected boolean, got integer"),
        (list[Tint], ["dark"], ["dark", "light"], "expected one of 'dark'"),
        (list[Grade], [1], [1, 2], "expected one of 1"),
        (frozenset[int], [3], [3, 1.0], "expected integer, got number"),
    ],
)
def test_arrays_of_scalars_are_as_strict_on_the_fast_path(
    cls: Any, good: list[Any], bad: list[Any], message: str
) -> None:
    result = converter.structure(good, cls)
    assert list(result) == [cls.__args__[0](v) for v in good]
    if cls.__args__[0] is float:
        assert all(type(v) is float for v in result)
    details = validation_details(structure_error(cls, bad))
    assert details == [ErrorDetail("$.data[1]", message)]


def test_a_hook_of_your_own_for_a_scalar_is_used_for_its_arrays() -> None:
    conv = _make_converter()

    def lenient(value: Any, _: Any) -> int:
        return int(value)

    conv.register_structure_hook(int, lenient)
    assert conv.structure(["1", 2], list[int]) == [1, 2]
