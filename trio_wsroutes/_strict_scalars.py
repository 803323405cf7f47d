"""The converter's strict hooks for JSON scalars (``str``, ``int``, ``float``, ``bool``,
``None``), for the strings in one strict form (UUID, date-time, date, decimal: both
ways), and for ``Literal`` values and enums."""

from __future__ import annotations

import datetime
import decimal
import enum
import re
import uuid
from typing import Any, Final, get_args

import cattrs

from ._validation_problems import InvalidValue, StrictTypeError, StructureHook, json_quote

__all__ = [
    "DATETIME_EXAMPLE",
    "DATE_EXAMPLE",
    "DECIMAL_EXAMPLE",
    "UUID_EXAMPLE",
    "enum_factory",
    "literal_factory",
    "structure_bool",
    "structure_date",
    "structure_datetime",
    "structure_decimal",
    "structure_float",
    "structure_int",
    "structure_none",
    "structure_str",
    "structure_uuid",
    "unstructure_date",
    "unstructure_datetime",
    "unstructure_decimal",
    "unstructure_uuid",
]


def structure_str(value: Any, _: Any) -> str:
    if type(value) is str:
        return value
    raise StrictTypeError("string", value)


def structure_int(value: Any, _: Any) -> int:
    if type(value) is int:
        return value
    raise StrictTypeError("integer", value)


def structure_float(value: Any, _: Any) -> float:
    kind: Any = value.__class__
    if kind is float or kind is int:
        return float(value)
    raise StrictTypeError("number", value)


def structure_bool(value: Any, _: Any) -> bool:
    if type(value) is bool:
        return value
    raise StrictTypeError("boolean", value)


def structure_none(value: Any, _: Any) -> None:
    if value is None:
        return
    raise StrictTypeError("null", value)


# -- strings in one strict form: UUID, date-time, date, decimal -------------------------------

UUID_EXAMPLE: Final = "123e4567-e89b-12d3-a456-426614174000"
DATETIME_EXAMPLE: Final = "2024-01-02T03:04:05Z"
DATE_EXAMPLE: Final = "2024-01-02"
DECIMAL_EXAMPLE: Final = "12.50"

_UUID_FORM: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# RFC 3339 (the ``date-time`` of JSON Schema): seconds required, any fraction, an offset.
_DATETIME_FORM: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_DATE_FORM: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DECIMAL_FORM: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Exponents a default decimal context can hold (no Overflow in the handler's arithmetic).
_DECIMAL_EXPONENT: Final = 999_999
_NOT_FINITE: Final = frozenset({"nan", "snan", "inf", "infinity"})


def structure_uuid(value: Any, _: Any) -> uuid.UUID:
    expected = f"a UUID string like {json_quote(UUID_EXAMPLE)}"
    if type(value) is not str:
        raise StrictTypeError(expected, value)
    if _UUID_FORM.fullmatch(value) is None:
        raise InvalidValue(f"expected {expected}")
    return uuid.UUID(value)


def structure_datetime(value: Any, _: Any) -> datetime.datetime:
    expected = f"an ISO 8601 date-time like {json_quote(DATETIME_EXAMPLE)}"
    if type(value) is not str:
        raise StrictTypeError(
            f"an ISO 8601 date-time string like {json_quote(DATETIME_EXAMPLE)}", value
        )
    form = _DATETIME_FORM.fullmatch(value)
    if form is None:
        raise InvalidValue(f"expected {expected}")
    if form["offset"] is None:
        raise InvalidValue(
            f'expected an ISO 8601 date-time with a UTC offset ("Z" or "+01:00"), like '
            f"{json_quote(DATETIME_EXAMPLE)}"
        )
    try:
        return datetime.datetime.fromisoformat(value.upper())
    except ValueError:  # a day, hour or offset out of range
        raise InvalidValue(f"expected {expected}") from None


def structure_date(value: Any, _: Any) -> datetime.date:
    expected = f"an ISO 8601 date like {json_quote(DATE_EXAMPLE)}"
    if type(value) is not str:
        raise StrictTypeError(f"an ISO 8601 date string like {json_quote(DATE_EXAMPLE)}", value)
    if _DATE_FORM.fullmatch(value) is None:
        raise InvalidValue(f"expected {expected}")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:  # a month or day out of range
        raise InvalidValue(f"expected {expected}") from None


def structure_decimal(value: Any, _: Any) -> decimal.Decimal:
    expected = f"a decimal number as a string like {json_quote(DECIMAL_EXAMPLE)}"
    kind: Any = value.__class__
    if kind is int or kind is float:
        # Said outright: a JSON number may already have lost digits in the client.
        raise InvalidValue(f"expected {expected}, got number (JSON numbers lose precision)")
    if kind is not str:
        raise StrictTypeError(expected, value)
    if _DECIMAL_FORM.fullmatch(value) is None:
        if value.lstrip("+-").lower() in _NOT_FINITE:
            raise InvalidValue(
                f"expected a finite decimal number like {json_quote(DECIMAL_EXAMPLE)}"
            )
        raise InvalidValue(f"expected a decimal number like {json_quote(DECIMAL_EXAMPLE)}")
    number = decimal.Decimal(value)
    if not -_DECIMAL_EXPONENT <= number.adjusted() <= _DECIMAL_EXPONENT:
        raise InvalidValue(
            f"expected a decimal number with an exponent between -{_DECIMAL_EXPONENT} and "
            f"{_DECIMAL_EXPONENT}"
        )
    return number


def unstructure_uuid(value: uuid.UUID) -> str:
    return str(value)


def unstructure_datetime(value: datetime.datetime) -> str:
    if value.utcoffset() is None:
        raise ValueError(
            f"cannot send the naive datetime {value.isoformat()!r}: a date-time on the wire "
            "carries a UTC offset; give it a tzinfo (datetime.datetime.now(datetime.UTC), "
            "value.replace(tzinfo=...))"
        )
    return value.isoformat()


def unstructure_date(value: datetime.date) -> str:
    if isinstance(value, datetime.datetime):
        raise TypeError(
            f"cannot send the datetime {value.isoformat()!r} as a date: pass value.date(), "
            "or declare the field as datetime.datetime"
        )
    return value.isoformat()


def unstructure_decimal(value: decimal.Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"cannot send the decimal {value}: only finite numbers are supported")
    return str(value)


# -- literals and enums ----------------------------------------------------------------


def literal_factory(target: Any, _conv: cattrs.Converter) -> StructureHook:
    # Compare type and value, so that Literal[1] refuses True and Literal["1"] refuses 1.
    members = [(m.value if isinstance(m, enum.Enum) else m, m) for m in get_args(target)]
    wire = ", ".join(repr(raw) for raw, _ in members)

    def structure(value: Any, _: Any) -> Any:
        for raw, member in members:
            if type(value) is type(raw) and value == raw:
                return member
        raise InvalidValue(f"expected one of {wire}")

    return structure


def enum_factory(target: Any, _conv: cattrs.Converter) -> StructureHook:
    members: list[enum.Enum] = list(target)
    by_value: dict[tuple[Any, Any], enum.Enum] = {(type(m.value), m.value): m for m in members}
    wire = ", ".join(repr(m.value) for m in members)

    def structure(value: Any, _: Any) -> Any:
        try:
            return by_value[(type(value), value)]
        except (KeyError, TypeError):
            raise InvalidValue(f"expected one of {wire}") from None

    return structure
