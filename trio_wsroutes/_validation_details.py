"""Validation failures as :class:`~trio_wsroutes.ErrorDetail` entries, each with a JSON
path, bounded in number and size. Exception text from inside cattrs or the standard
library is never copied into a detail: only the strict hooks' own messages and the
messages of attrs validators, which are written for the client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, cast

import orjson
from cattrs.errors import AttributeValidationNote, IterableValidationNote

from ._errors import ErrorDetail
from ._validation_problems import (
    MAX_KEY,
    MAX_PROBLEMS,
    InvalidValue,
    MissingField,
    StoppedNote,
    StrictTypeError,
    UnknownField,
    ValidatorFailed,
    json_quote,
)

__all__ = [
    "MAX_DETAIL_TEXT",
    "MAX_ERROR_DETAILS",
    "MAX_ERROR_DETAILS_BYTES",
    "structure_errors",
    "validation_details",
]

MAX_ERROR_DETAILS: Final = 20
"""At most this many ``details`` in one error envelope (then one ``"and N more"`` entry)."""

MAX_ERROR_DETAILS_BYTES: Final = 4096
"""The ``details`` of one error envelope fit in this many bytes of JSON (the first detail
always goes out; every path and message is clipped to :data:`MAX_DETAIL_TEXT`)."""

MAX_DETAIL_TEXT: Final = 200
"""A detail's ``path`` or ``message`` longer than this many characters is clipped (keys and
validator messages may repeat what the client sent)."""


def structure_errors(exc: BaseException, path: str) -> Iterator[ErrorDetail]:
    """Walk a cattrs exception (group) and yield one detail per leaf problem."""
    if isinstance(exc, ValidatorFailed):
        yield ErrorDetail(path, exc.message)
    elif isinstance(exc, UnknownField):
        yield ErrorDetail(_key_path(path, exc.key), str(exc))
    elif isinstance(exc, MissingField):
        yield ErrorDetail(path, "required field missing")
    elif isinstance(exc, StrictTypeError | InvalidValue):
        yield ErrorDetail(path, str(exc))
    elif isinstance(exc, BaseExceptionGroup):
        # cattrs' ClassValidationError and IterableValidationError are groups whose
        # members carry notes naming the field or index.
        group = cast("BaseExceptionGroup[BaseException]", exc)
        for sub in group.exceptions:
            yield from structure_errors(sub, _extend(path, sub))
    else:
        # Text from arbitrary code (a stdlib parser, a user hook) is not for clients.
        yield ErrorDetail(path, "invalid value")


def _extend(path: str, exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, AttributeValidationNote):
            return f"{path}.{note.name}"
        if isinstance(note, IterableValidationNote):
            index = note.index
            if isinstance(index, str):
                return _key_path(path, index)
            return f"{path}[{index!r}]"
    return path


def _key_path(path: str, key: str) -> str:
    if len(key) > MAX_KEY:
        return f"{path}[{json_quote(key[:MAX_KEY])}...]"
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json_quote(key)}]"


def validation_details(
    exc: BaseException,
    path: str = "$.data",
    *,
    max_details: int = MAX_ERROR_DETAILS,
    max_bytes: int = MAX_ERROR_DETAILS_BYTES,
) -> list[ErrorDetail]:
    """The problems in ``exc``, a failure from :data:`converter`, with JSON paths.

    At most ``max_details`` of them, within ``max_bytes`` of JSON (the first always goes
    out), each path and message clipped to :data:`MAX_DETAIL_TEXT` characters; a last
    detail at ``path`` says how many more there are, and whether checking stopped at
    :data:`MAX_PROBLEMS` (``"and 80 more problems (checking stopped after 100)"``).
    """
    details: list[ErrorDetail] = []
    size = 0
    more = 0
    for found in structure_errors(exc, path):
        if more == 0 and len(details) < max_details:
            detail = ErrorDetail(_clip_path(found.path), _clip_text(found.message))
            cost = len(orjson.dumps(detail.to_json())) + 1
            if not details or size + cost <= max_bytes:
                details.append(detail)
                size += cost
                continue
        more += 1
    if not details:
        return [ErrorDetail(path, "invalid value")]
    stopped = any(type(note) is StoppedNote for note in getattr(exc, "__notes__", ()))
    if stopped:
        count = f"at least {more} more problems" if more else "possibly more problems"
        details.append(ErrorDetail(path, f"and {count} (checking stopped after {MAX_PROBLEMS})"))
    elif more:
        details.append(ErrorDetail(path, f"and {more} more problem{'s' if more > 1 else ''}"))
    return details


def _clip_text(text: str) -> str:
    if len(text) <= MAX_DETAIL_TEXT:
        return text
    return text[: MAX_DETAIL_TEXT - 3] + "..."


def _clip_path(path: str) -> str:
    # The start names the field, the end the place inside it: keep both.
    if len(path) <= MAX_DETAIL_TEXT:
        return path
    half = (MAX_DETAIL_TEXT - 3) // 2
    return path[:half] + "..." + path[-half:]
