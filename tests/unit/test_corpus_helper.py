"""The corpus loader: a missing corpus fails in CI and skips elsewhere; an empty or renamed one
always fails (never an empty parameter list that passes with no assertion). The same for a peer
tool that test.sh installs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import corpus
from tests.support.corpus import CorpusError
from tests.support.tools import ToolMissing, require_tool


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(corpus, "SHARED", tmp_path)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "cases.json").write_text(
        json.dumps({"cases": [{"n": 1}, {"n": 2}], "part": {"cases": [{"n": 3}]}, "none": {}})
    )
    (tmp_path / "set" / "list.json").write_text(json.dumps([{"n": 4}]))
    (tmp_path / "set" / "empty.json").write_text(json.dumps({"cases": []}))
    return tmp_path


def _raised(call: Callable[[], object]) -> BaseException | None:
    """What `call` raised, a skip included (pytest.raises would let a skip skip this test)."""
    try:
        call()
    except BaseException as e:  # a skip is a BaseException, and it is what is checked here
        return e
    return None


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_missing_corpus_fails_in_ci(shared: Path, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    missing = _raised(lambda: corpus.load_cases("set/renamed.json"))
    assert isinstance(missing, CorpusError), repr(missing)
    assert "set/renamed.json not found" in str(missing)
    gone = _raised(lambda: corpus.corpus("gone"))
    assert isinstance(gone, CorpusError) and "gone not found" in str(gone), repr(gone)


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_corpus_skips_outside_ci(
    shared: Path, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    skipped = _raised(lambda: corpus.load_cases("set/renamed.json"))
    assert isinstance(skipped, pytest.skip.Exception), repr(skipped)
    assert "set/renamed.json not found" in str(skipped)


def test_cases_load(shared: Path) -> None:
    assert corpus.load_cases("set/cases.json") == [{"n": 1}, {"n": 2}]
    assert corpus.load_cases("set/cases.json", "part") == [{"n": 3}]
    assert corpus.load_cases("set/list.json") == [{"n": 4}]
    assert corpus.load_cases("set/cases.json", where=lambda c: c["n"] > 1) == [{"n": 2}]
    assert corpus.corpus("set") == shared / "set"


@pytest.mark.parametrize("ci", ["true", None])
def test_empty_or_renamed_cases_fail_everywhere(
    shared: Path, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(CorpusError, match="has no cases"):
        corpus.load_cases("set/empty.json")
    with pytest.raises(CorpusError, match="has no section 'renamed'"):
        corpus.load_cases("set/cases.json", "renamed")
    with pytest.raises(CorpusError, match="has no section 'cases'"):
        corpus.load_cases("set/cases.json", "none")
    with pytest.raises(CorpusError, match="has no cases"):
        corpus.load_cases("set/cases.json", where=lambda c: False)


def test_a_missing_tool_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    failed = _raised(lambda: require_tool("umoci", "umoci"))
    assert isinstance(failed, ToolMissing) and "umoci is not installed" in str(failed)
    monkeypatch.delenv("CI")
    skipped = _raised(lambda: require_tool("umoci", "umoci"))
    assert isinstance(skipped, pytest.skip.Exception) and "Debian package umoci" in str(skipped)


def test_a_present_tool_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "peer"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert require_tool("peer", "peer") == str(tool)
