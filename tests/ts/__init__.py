"""Samples and apps for the tests of the generated TypeScript (npm tools live here too)."""
