"""Developer sessions: ``nox -s tests lint typecheck``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PACKAGE_AND_EXAMPLES = ["trio_wsroutes", "examples"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (the tests install tsc and the AsyncAPI schemas themselves,
    with the Node.js the test extra brings)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict and pyright (strict) on the package and the examples, the typing
    cases in tests/typing/ (which must fail exactly where marked), and pyright's check
    that the public API is fully typed."""
    session.install("-e", ".[test,typecheck]")
    session.run("mypy", "--strict", *PACKAGE_AND_EXAMPLES)
    session.run("pyright", *PACKAGE_AND_EXAMPLES)
    session.run("pyright", "--verifytypes", "trio_wsroutes", "--ignoreexternal")
    session.run("python", "-m", "pytest", "tests/test_typing.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs; any warning fails the build."""
    session.install("-e", ".[docs]")
    session.run(
        "python", "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against peers (bench/run.py), every system in one command: ``nox -s
    bench`` is the short check (about 3 minutes); ``nox -s bench -- full`` measures the
    docs' figures (about 45 minutes) and rewrites docs/benchmarks-results.inc and
    docs/_static/benchmarks.png. Arguments after the mode go to bench/run.py (``nox -s
    bench -- short --systems native,fastapi``)."""
    session.install("-e", ".[bench]")
    try:
        session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", "bench/bun", external=True)
    except nox.command.CommandFailed:
        session.warn("Bun could not be installed from npm: the run goes on without it")
    mode, *rest = session.posargs or ["short"]
    session.run("python", "bench/run.py", "--mode", mode, *rest)
    if mode == "full":
        session.run("python", "bench/report.py", "bench/results/full.json")
