"""moby/patternmatcher's tests (../shared/conformance/dockerignore-patterns), every Linux case."""

from __future__ import annotations

import pytest

from imgtool.containerfile.dockerignore import (
    PatternError,
    PatternMatcher,
    matches,
    read_ignore_file,
)
from tests.support.corpus import load_cases


def _cases(key: str) -> list[dict]:
    return load_cases("dockerignore-patterns/cases.json", key)


@pytest.mark.parametrize(
    "case",
    _cases("single_pattern") + _cases("multi_pattern"),
    ids=lambda c: f"{c['patterns']}~{c['path']}",
)
def test_matches_or_parent_matches(case: dict) -> None:
    pm = PatternMatcher(case["patterns"])
    assert pm.matches_or_parent_matches(case["path"]) == case["expected"]


@pytest.mark.parametrize(
    "case", _cases("filepath_match_style"), ids=lambda c: f"{c['pattern']}~{c['path']}"
)
def test_filepath_match_style(case: dict) -> None:
    if case.get("expected_error"):
        with pytest.raises(PatternError, match="syntax error in pattern"):
            matches(case["path"], [case["pattern"]])
    else:
        assert matches(case["path"], [case["pattern"]]) == case["expected"]


@pytest.mark.parametrize("case", _cases("standalone"), ids=lambda c: c["test"])
def test_standalone(case: dict) -> None:
    if case.get("expected_error"):
        with pytest.raises(PatternError):
            matches(case["path"], case["patterns"])
    elif "expected" in case:
        assert matches(case["path"], case["patterns"]) == case["expected"]


@pytest.mark.parametrize("case", _cases("clean_patterns"), ids=lambda c: c["test"])
def test_clean_patterns(case: dict) -> None:
    if case.get("expected_error"):
        with pytest.raises(PatternError):
            PatternMatcher(case["patterns"])
        return
    pm = PatternMatcher(case["patterns"])
    if "expected_pattern_count" in case:
        assert len(pm.patterns) == case["expected_pattern_count"]
    if "expected_has_exclusions" in case:
        assert pm.exclusions == case["expected_has_exclusions"]


@pytest.mark.parametrize("case", _cases("compile"), ids=lambda c: c["pattern"])
def test_compile_strategy(case: dict) -> None:
    pm = PatternMatcher([case["pattern"]])
    pat = pm.patterns[0]
    pat.compile()
    assert pat.kind + "Match" == case["match_type"]


@pytest.mark.parametrize("case", _cases("ignorefile_readall"), ids=lambda c: str(c["content"])[:20])
def test_read_ignore_file(case: dict) -> None:
    assert read_ignore_file(case["content"]) == case["expected"]
