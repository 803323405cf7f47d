"""What the strict hooks of the converter (``_validation.py``) share: the exceptions they
raise, the notes that say where (field, index, key), and the budget that stops
structuring after :data:`MAX_PROBLEMS` problems. ``_validation_details.py`` turns them
into error details."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Final, TypeVar

import orjson
from cattrs.errors import AttributeValidationNote, IterableValidationNote

__all__ = [
    "MAX_KEY",
    "MAX_PROBLEMS",
    "Budget",
    "InvalidValue",
    "MissingField",
    "StoppedNote",
    "StrictTypeError",
    "StructureHook",
    "UnknownField",
    "ValidatorFailed",
    "as_root",
    "field_note",
    "index_note",
    "json_quote",
    "key_note",
    "problem_budget",
]

StructureHook = Callable[[Any, Any], Any]
_T = TypeVar("_T")

_JSON_NAMES: Final[dict[type[Any], str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class StrictTypeError(TypeError):
    """A JSON value of the wrong type for its field."""

    def __init__(self, expected: str, value: object) -> None:
        got = _JSON_NAMES.get(type(value), type(value).__name__)
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected


class MissingField(KeyError):
    """A required field is absent."""


class InvalidValue(ValueError):
    """A value of the right JSON type that the field does not accept."""


class UnknownField(ValueError):
    """A key that is not a field of its class, refused when unknown keys are forbidden."""

    def __init__(self, key: str) -> None:
        shown = json_quote(key[:MAX_KEY]) + ("..." if len(key) > MAX_KEY else "")
        super().__init__(f"unknown field {shown}")
        self.key = key


class ValidatorFailed(ValueError):
    """An attrs validator rejected a field; carries the validator's own message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- the problem budget: validation that stops ---------------------------------------------

MAX_PROBLEMS: Final = 100
"""Structuring one value stops after this many problems (a fail-fast cap).

Each problem costs an exception, a note and, later, a detail: without a cap, a 4 MiB
array of ``{}`` for a ``list[Item]`` raised millions of them (minutes of CPU on the event
loop, gigabytes, a 290 MB error reply). With it, the work done on a bad value is its
parsing plus at most this many problems, wherever they are (nested arrays, objects and
classes share one budget).
"""


class Budget:
    """The problems found so far in one top-level value, shared by the hooks under it."""

    __slots__ = ("count", "spent")

    def __init__(self) -> None:
        self.count = 0
        self.spent = False

    def spend(self, exc: BaseException) -> bool:
        """Count ``exc`` (a group's members were counted where they were found); ``True``
        once the budget is spent: stop looking, report what was found."""
        if not isinstance(exc, BaseExceptionGroup):
            self.count += 1
            if self.count >= MAX_PROBLEMS:
                self.spent = True
        return self.spent


problem_budget: Final[contextvars.ContextVar[Budget | None]] = contextvars.ContextVar(
    "trio_wsroutes_problem_budget", default=None
)


class StoppedNote(str):
    """The note on a failure whose structuring stopped at :data:`MAX_PROBLEMS`."""

    __slots__ = ()


def as_root(hook: Callable[[Any, Any], _T], value: Any, target: Any) -> _T:
    """Run ``hook`` as the outermost structuring hook: with a fresh budget."""
    budget = Budget()
    token = problem_budget.set(budget)
    try:
        return hook(value, target)
    except Exception as exc:
        if budget.spent:
            exc.add_note(StoppedNote(f"validation stopped after {budget.count} problems"))
        raise
    finally:
        problem_budget.reset(token)


def index_note(index: int, arg: Any) -> IterableValidationNote:
    return IterableValidationNote(f"Structuring item @ index {index}", index, arg)  # pyright: ignore[reportCallIssue]


def field_note(name: str, field_type: Any) -> AttributeValidationNote:
    return AttributeValidationNote(f"Structuring field {name}", name, field_type)  # pyright: ignore[reportCallIssue]


def key_note(key: str, value_type: Any) -> IterableValidationNote:
    return IterableValidationNote("Structuring mapping value", key, value_type)  # pyright: ignore[reportCallIssue]


MAX_KEY: Final = 64
"""Characters of a client's key repeated in a path or message."""


def json_quote(key: str) -> str:
    return orjson.dumps(key).decode()
