"""Finding the application a command names: ``module:attribute`` (``examples.chat.app:server``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

__all__ = ["TargetError", "load_target"]


class TargetError(ValueError):
    """The target cannot be imported, said in one line."""


def load_target(target: str, app_dir: str = ".") -> object:
    """Import ``module:attribute`` (with ``app_dir`` first on ``sys.path``)."""
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise TargetError(f"TARGET must look like module:attribute, got {target!r}")
    directory = str(Path(app_dir).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise TargetError(
                f"cannot import {module_name!r}: no such module in {directory}"
            ) from None
        raise
    found: object = module
    for part in (attribute or "server").split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise TargetError(
                f"module {module_name!r} has no attribute {attribute or 'server'!r}"
            ) from None
    return found
