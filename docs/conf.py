"""Sphinx configuration for the trio_wsroutes documentation."""

from __future__ import annotations

import enum
import inspect
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio_wsroutes  # noqa: E402

project = "trio_wsroutes"
author = "trio_wsroutes developers"
copyright = "2026, trio_wsroutes developers"
release = trio_wsroutes.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

html_theme = "furo"
html_title = "trio_wsroutes"
exclude_patterns = ["_build", "snippets/README.md"]
templates_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_preserve_defaults = True
# Type aliases and third-party types that autodoc cannot link (no network for intersphinx).
suppress_warnings = ["ref.python"]
default_role = "py:obj"
nitpicky = False


# -- attrs defaults ------------------------------------------------------------------------
# autodoc_preserve_defaults shows defaults as written in the source, and the source of an
# attrs-generated __init__ says ``burst=attr_dict['burst'].default``. Those signatures get
# the real defaults instead (a factory as its call: ``list()``).


class _Default:
    """A default value that renders as the given text in a signature."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _default_text(default: object) -> str:
    factory = getattr(default, "factory", None)
    if factory is not None and hasattr(default, "takes_self"):  # attrs.Factory
        name = getattr(factory, "__qualname__", "<lambda>")
        return "<factory>" if default.takes_self or "<" in name else f"{name}()"
    if isinstance(default, enum.Enum):
        return f"{type(default).__name__}.{default.name}"
    return repr(default)


def _attrs_defaults(app: Any, obj: Any, bound_method: bool) -> None:
    code = getattr(obj, "__code__", None)
    fields = getattr(obj, "__globals__", {}).get("attr_dict")
    if code is None or not code.co_filename.startswith("<attrs generated"):
        return
    if not isinstance(fields, dict):
        return
    by_alias = {getattr(a, "alias", None) or a.name.lstrip("_"): a for a in fields.values()}
    signature = inspect.signature(obj)
    parameters = [
        param.replace(default=_Default(_default_text(by_alias[param.name].default)))
        if param.default is not param.empty and param.name in by_alias
        else param
        for param in signature.parameters.values()
    ]
    obj.__signature__ = signature.replace(parameters=parameters)


def setup(app: Any) -> None:
    """Register the attrs-defaults hook (after autodoc's own preserve-defaults step)."""
    app.connect("autodoc-before-process-signature", _attrs_defaults)
