"""Definition-time checks: when a route is defined, can :data:`~trio_wsroutes.converter`
read each client message class from JSON, and write each server message class as JSON?"""

from __future__ import annotations

import datetime
import decimal
import enum
import typing
import uuid
from typing import Any, Final, Literal

import attrs
import orjson
from cattrs.fns import identity as _identity

from ._validation import converter
from ._walk import init_fields, is_string_key, qualified_name, shape, type_repr

__all__ = ["check_client_schema", "check_server_message"]

_Direction = Literal["client", "server"]

# Leaf types the converter writes as JSON strings (with its hooks, or orjson's own).
_WRITABLE_LEAVES: Final = frozenset(
    {datetime.datetime, datetime.date, datetime.time, uuid.UUID, decimal.Decimal, bytes}
)
_SUPPORTED: Final = (
    "str, int, float, bool, None, lists, tuples, sets, dict[str, X], Literal, enums, "
    "attrs classes, unions of these, datetime, date, UUID, Decimal, bytes"
)


def check_client_schema(cls: type[Any], where: str) -> None:
    """Check, when a route is defined, that :data:`converter` can read ``cls`` from JSON.

    Walks every field of ``cls`` and of the attrs classes it contains. A field type the
    converter has no structure hook for (``object``, ``complex``, a plain class, ...)
    raises :class:`TypeError` naming ``where`` (the route and message type, for the
    reader), the class, the field and its type, with a hint on registering a hook on
    ``trio_wsroutes.converter``. A field without an annotation, an annotation that
    cannot be resolved, and ``dict`` keys other than strings are refused the same way.
    """
    _SchemaCheck("client", where).check(cls)


def check_server_message(cls: type[Any], where: str | None = None) -> None:
    """Check, when a route is defined, that :data:`converter` can write ``cls`` as JSON.

    Like :func:`check_client_schema`, for the other direction: a field type that would
    reach orjson as an object it cannot serialise (``object``, ``complex``,
    ``timedelta``, a plain class without an unstructure hook) raises :class:`TypeError`
    naming the class, the field and its type, at definition time instead of on the first
    send. ``where`` defaults to ``server message`` and the class's name.
    """
    if where is None:
        where = f"server message {qualified_name(cls)}" if isinstance(cls, type) else ""
    _SchemaCheck("server", where).check(cls)


class _SchemaCheck:
    """One walk over a message class: its fields, and the classes they reach."""

    def __init__(self, direction: _Direction, where: str) -> None:
        self.direction: _Direction = direction
        self.where = where
        self.seen: set[type[Any]] = set()
        # (class, field name) from the message class down to the field being walked.
        self.chain: list[tuple[type[Any], str]] = []
        self.field_type: Any = None

    def check(self, cls: type[Any]) -> None:
        if not (isinstance(cls, type) and attrs.has(cls)):
            raise TypeError(self.prefix() + f"{type_repr(cls)} is not an attrs class")
        self.walk_class(cls)
        if self.direction == "client":
            try:
                converter.get_structure_hook(cls)
            except Exception as exc:
                raise TypeError(
                    self.prefix() + f"the converter cannot read {qualified_name(cls)} from JSON "
                    f"({exc}); register a structure hook on trio_wsroutes.converter"
                ) from None

    def prefix(self) -> str:
        return f"{self.where}: " if self.where else ""

    def walk_class(self, cls: type[Any]) -> None:
        if cls in self.seen:
            return
        self.seen.add(cls)
        try:
            fields = init_fields(cls)
        except Exception as exc:
            raise TypeError(
                self.prefix() + f"cannot resolve the field annotations of {qualified_name(cls)}"
                f"{self.reached()}: {type(exc).__name__}: {exc}"
            ) from None
        for field in fields:
            self.chain.append((cls, field.name))
            self.field_type = field.type
            if field.type is None or isinstance(field.type, str):
                raise TypeError(self.prefix() + f"{self.field()} has no type annotation")
            self.walk(field.type)
            self.chain.pop()

    def walk(self, tp: Any) -> None:
        found = shape(tp)
        kind, tp, args = found.kind, found.type, found.args
        if kind in ("any", "none", "scalar"):
            return
        if kind == "literal":
            for value in args:
                if not isinstance(value, enum.Enum | str | int | float | bool | None):
                    self.fail(tp, f"the Literal value {value!r} has no JSON form")
        elif kind == "union":
            for arg in args:
                self.walk(arg)
            if self.direction == "client":
                try:
                    converter.get_structure_hook(tp)
                except Exception as exc:
                    self.fail(tp, f"the converter cannot read {type_repr(tp)} from JSON ({exc})")
        elif kind == "enum":
            if self.direction == "server":
                for member in tp:
                    try:
                        orjson.dumps(converter.unstructure(member, tp))
                    except Exception:
                        self.fail(tp, f"the value of {tp.__name__}.{member.name} has no JSON form")
        elif kind == "attrs":
            outer = self.field_type
            self.walk_class(tp)
            self.field_type = outer
        elif kind == "mapping":
            if args:
                if not is_string_key(args[0]):
                    self.fail(tp, "JSON object keys are strings; use dict[str, ...]")
                self.walk(args[1])
        elif kind in ("tuple", "collection"):
            for arg in args:
                if arg is not Ellipsis and arg != ():
                    self.walk(arg)
        else:  # a generic attrs class, or another leaf
            self.leaf(tp)

    def leaf(self, tp: Any) -> None:
        if self.direction == "client":
            try:
                converter.get_structure_hook(tp)
            except Exception:
                self.fail(
                    tp,
                    f"the converter cannot read {type_repr(tp)} from JSON",
                    f"register a structure hook on trio_wsroutes.converter "
                    f"(converter.register_structure_hook({type_repr(tp)}, fn)) or use a "
                    f"supported type ({_SUPPORTED})",
                )
        elif tp not in _WRITABLE_LEAVES and converter.get_unstructure_hook(tp) is _identity:
            # No hook: the object itself would reach orjson, which cannot write it.
            self.fail(
                tp,
                f"the converter cannot write {type_repr(tp)} as JSON",
                f"register an unstructure hook on trio_wsroutes.converter "
                f"(converter.register_unstructure_hook({type_repr(tp)}, fn)) or use a "
                f"supported type ({_SUPPORTED})",
            )

    def field(self) -> str:
        cls, name = self.chain[-1]
        return f"field {name!r} of {qualified_name(cls)}{self.reached()}"

    def reached(self) -> str:
        outer = self.chain[:-1] if self.chain else []
        if not outer:
            return ""
        path = ", ".join(
            f"field {name!r} of {qualified_name(cls)}" for cls, name in reversed(outer)
        )
        return f" (reached through {path})"

    def fail(self, tp: Any, problem: str, hint: str | None = None) -> typing.NoReturn:
        del tp  # named in ``problem``
        text = f"{self.field()} has type {type_repr(self.field_type)}: {problem}"
        if hint is not None:
            text += f"; {hint}"
        raise TypeError(self.prefix() + text)
