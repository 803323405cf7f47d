"""The package version (one place, read by the package, the CLI and the docs)."""

__version__ = "0.2.0"
