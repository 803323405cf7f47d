"""Servers for the type-generation tests (imported by name, as the CLI imports apps)."""
