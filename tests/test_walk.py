"""What a field type is (``trio_wsroutes/_walk.py``), said once for the definition-time
checks and for type generation."""

from __future__ import annotations

import collections.abc
import datetime
import enum
import typing
import uuid
from typing import Annotated, Any, Generic, Literal, NewType, TypeVar

import attrs
import pytest
from typing_extensions import TypeAliasType

from trio_wsroutes._walk import Shape, init_fields, is_string_key, shape, unwrap

T = TypeVar("T")
UserId = NewType("UserId", int)
Name = NewType("Name", Annotated[str, "a name"])  # type: ignore[misc]


class Colour(enum.Enum):
    RED = "red"


class Key(enum.StrEnum):
    A = "a"


@attrs.frozen
class Point:
    x: int
    y: int


@attrs.frozen
class Box(Generic[T]):
    item: T


def test_unwrap_sees_through_annotated_newtype_and_aliases() -> None:
    assert unwrap(Annotated[int, "meta"]) is int
    assert unwrap(UserId) is int
    assert unwrap(Name) is str  # a NewType of an Annotated type
    assert unwrap(list[int]) == list[int]  # only the wrapper, not the arguments


def test_unwrap_sees_through_a_type_alias() -> None:
    # What ``type Ids = list[int]`` makes on Python 3.12+.
    ids = TypeAliasType("Ids", list[int])
    assert unwrap(ids) == list[int]
    assert shape(Annotated[ids, "m"]) == Shape("collection", list[int], (int,))


@pytest.mark.parametrize(
    ("tp", "kind", "args"),
    [
        (Any, "any", ()),
        (None, "none", ()),
        (type(None), "none", ()),
        (str, "scalar", ()),
        (bool, "scalar", ()),
        (Annotated[float, "m"], "scalar", ()),
        (Literal["a", 1], "literal", ("a", 1)),
        (int | None, "union", (int, type(None))),
        (typing.Union[int, str], "union", (int, str)),  # noqa: UP007
        (Colour, "enum", ()),
        (Key, "enum", ()),  # a str enum is an enum first
        (Point, "attrs", ()),
        (Box[int], "generic_attrs", (int,)),
        (dict[str, int], "mapping", (str, int)),
        (collections.abc.Mapping[str, Point], "mapping", (str, Point)),
        (dict, "mapping", ()),
        (tuple, "tuple", ()),
        (tuple[int, ...], "tuple", (int, ...)),
        (tuple[int, str], "tuple", (int, str)),
        (list[Point], "collection", (Point,)),
        (collections.abc.Sequence[int], "collection", (int,)),
        (frozenset[str], "collection", (str,)),
        (set, "collection", ()),
        (bytes, "other", ()),  # not a sequence of ints: a leaf
        (datetime.datetime, "other", ()),
        (uuid.UUID, "other", ()),
        (object, "other", ()),
    ],
)
def test_the_kind_of_a_field_type(tp: Any, kind: str, args: tuple[Any, ...]) -> None:
    found = shape(tp)
    assert (found.kind, found.args) == (kind, args)
    assert found.type == unwrap(tp)


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        (str, True),
        (Any, True),
        (Key, True),
        (Literal["a", "b"], True),
        (Annotated[str, "m"], True),
        (NewType("Slug", str), True),
        (int, False),
        (Literal["a", 1], False),
        (Colour, False),  # an enum whose values are not keys
        (tuple[str, str], False),
    ],
)
def test_json_object_keys_are_strings(key: Any, allowed: bool) -> None:
    assert is_string_key(key) is allowed


def test_init_fields_resolves_annotations_and_skips_fields_outside_init() -> None:
    @attrs.define
    class Message:
        text: str
        at: datetime.datetime
        derived: int = attrs.field(init=False, default=0)

    fields = init_fields(Message)
    assert [(f.name, f.type) for f in fields] == [("text", str), ("at", datetime.datetime)]


def test_init_fields_raises_for_an_annotation_that_does_not_resolve() -> None:
    @attrs.define
    class Broken:
        value: Missing  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(NameError):
        init_fields(Broken)
