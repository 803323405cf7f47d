"""A small YAML writer for JSON-like data (no dependency on PyYAML).

Block style for mappings and sequences; strings plain when that is unambiguous in both
YAML 1.1 and 1.2, otherwise double-quoted (JSON escapes, which YAML shares). The output
loads back (``yaml.safe_load``) to exactly the data given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeGuard, cast

__all__ = ["dump_yaml"]

_PLAIN: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$.\-]*$")
# Plain scalars YAML 1.1 or 1.2 would read as something other than a string.
_SPECIAL: Final = frozenset(
    [
        "y",
        "n",
        "yes",
        "no",
        "on",
        "off",
        "true",
        "false",
        "null",
        "~",
        "nan",
        "inf",
        ".nan",
        ".inf",
    ]
)
# Characters YAML forbids in a stream, and line breaks it would fold inside a quoted
# string (NEL, LS, PS): JSON leaves them unescaped.
_NOT_PRINTABLE: Final = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _string(value: str) -> str:
    if _PLAIN.match(value) and value.lower() not in _SPECIAL:
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    return _NOT_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = json.dumps(value)
        # YAML 1.1 (PyYAML) reads a float only with a dot in it.
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _is_block(value: object) -> bool:
    return isinstance(value, Mapping | list | tuple) and len(cast("Sequence[Any]", value)) > 0


def _is_mapping(value: object) -> TypeGuard[Mapping[object, object]]:
    return isinstance(value, Mapping)


def _lines(value: object, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if _is_mapping(value):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("YAML mapping keys must be strings here")
            if _is_block(item):
                out.append(f"{pad}{_string(key)}:")
                out.extend(_lines(item, indent + 2))
            else:
                out.append(f"{pad}{_string(key)}: {_inline(item)}")
        return out
    for item in cast("Sequence[Any]", value):
        if _is_block(item):
            nested = _lines(item, indent + 2)
            out.append(f"{pad}- {nested[0].lstrip()}")
            out.extend(nested[1:])
        else:
            out.append(f"{pad}- {_inline(item)}")
    return out


def _inline(value: object) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    return _scalar(value)


def dump_yaml(value: Mapping[str, Any]) -> str:
    """``value`` (dicts, lists, strings, numbers, booleans, ``None``) as a YAML document."""
    return "\n".join(_lines(value, 0)) + "\n"
