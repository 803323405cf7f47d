"""The converter's strict hook for attrs classes: field by field, every problem reported
at once (types, missing fields, unknown keys when they are forbidden, and the failures of
attrs validators on their own fields), then the class constructed once."""

from __future__ import annotations

import contextvars
from typing import Any, Final, cast

import attrs
import cattrs
from cattrs.errors import ClassValidationError

from ._validation_problems import (
    InvalidValue,
    MissingField,
    StrictTypeError,
    StructureHook,
    UnknownField,
    ValidatorFailed,
    as_root,
    field_note,
    problem_budget,
)

__all__ = ["attrs_factory", "forbidding_unknown"]


def attrs_factory(cls: Any, conv: cattrs.Converter) -> StructureHook:
    """Structure an attrs class field by field, then construct it once.

    Written out (rather than cattrs' generated function) so that an attrs validator's
    failure can be reported on its own field with its own message.
    """
    attrs.resolve_types(cls)  # string annotations (``from __future__ import annotations``)
    fields = [
        (a.name, a.alias, a.type, conv.get_structure_hook(a.type), a.default is attrs.NOTHING)
        for a in attrs.fields(cls)
        if a.init
    ]
    name = cls.__name__
    known = frozenset(key for key, *_ in fields)

    def structure(value: Any, target: Any) -> Any:
        if type(value) is not dict:
            raise StrictTypeError("object", value)
        budget = problem_budget.get()
        if budget is None:
            return as_root(structure, value, target)
        obj = cast("dict[str, Any]", value)
        kwargs: dict[str, Any] = {}
        errors: list[Exception] = []
        found = 0
        for key, alias, field_type, hook, required in fields:
            try:
                raw = obj[key]
            except KeyError:
                if required:
                    missing = MissingField(key)
                    missing.add_note(field_note(key, field_type))
                    errors.append(missing)
                    if budget.spend(missing):
                        break
                continue
            found += 1
            try:
                kwargs[alias] = hook(raw, field_type)
            except Exception as exc:
                exc.add_note(field_note(key, field_type))
                errors.append(exc)
                if budget.spend(exc):
                    break
        # Only an object with keys beyond its fields pays for the look-up.
        if found != len(obj) and forbidding_unknown.get() and not budget.spent:
            for key in obj:
                if key not in known:
                    unknown = UnknownField(key)
                    errors.append(unknown)
                    if budget.spend(unknown):
                        break
        if not errors:
            try:
                return cls(**kwargs)
            except (ValueError, TypeError):
                pass  # an attrs validator (or __attrs_post_init__) refused: find which
        # Report every problem at once, as Zod does: type errors, and the validators of
        # the fields that did have the right type (unless the budget is spent already).
        if not budget.spent:
            for failure in _validator_failures(cls, kwargs):
                errors.append(failure)
                if budget.spend(failure):
                    break
        if not errors:
            raise InvalidValue(f"invalid {name}")
        raise ClassValidationError(f"While structuring {name}", errors, cls)  # pyright: ignore[reportCallIssue]

    return structure


def _validator_failures(cls: Any, kwargs: dict[str, Any]) -> list[Exception]:
    """Run the attrs validators of the fields in ``kwargs``, one by one, and return each
    refusal as a detail on its own field (only on the error path).

    Fields missing from ``kwargs`` (absent, or refused for their type) take their default
    or stay unset; a validator that needs such a field and fails otherwise is skipped.
    """
    instance = object.__new__(cls)
    for a in attrs.fields(cls):
        if a.alias in kwargs:
            value = kwargs[a.alias]
        elif isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
            factory: Any = a.default
            try:
                value = factory.factory(instance) if factory.takes_self else factory.factory()
            except Exception:  # a factory that needs an unset field
                continue
        elif a.default is not attrs.NOTHING:
            value = a.default
        else:
            continue
        object.__setattr__(instance, a.name, value)
    failures: list[Exception] = []
    for a in attrs.fields(cls):
        if a.validator is None or a.alias not in kwargs:
            continue
        try:
            a.validator(instance, a, kwargs[a.alias])
        except (ValueError, TypeError) as exc:
            failure = ValidatorFailed(a.name, str(exc.args[0]) if exc.args else "invalid value")
            failure.add_note(field_note(a.name, a.type))
            failures.append(failure)
        except Exception:  # e.g. AttributeError on an unset field
            continue
    return failures


forbidding_unknown: Final = contextvars.ContextVar("trio_wsroutes_forbid_unknown", default=False)
"""Set while a hook from ``structure_hook_for(..., forbid_unknown=True)`` runs: every
attrs class structured meanwhile, however deeply nested, refuses keys it does not have."""
