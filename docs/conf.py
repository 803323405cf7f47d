"""Sphinx configuration for the trio_wsroutes documentation."""

from __future__ import annotations

import sys
from pathlib import Path

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
