"""BuildKit's shell lexer tests (../shared/conformance/dockerfile-shell), every Linux case."""

from __future__ import annotations

import pytest

from imgtool.containerfile.shell import (
    ShellError,
    process_word,
    process_word_with_matches,
    process_words,
)
from tests.support.corpus import load_cases

ENV_CASES = load_cases(
    "dockerfile-shell/env_var_cases.json", where=lambda c: c["platform"] in ("all", "unix")
)
WORD_CASES = load_cases("dockerfile-shell/words_cases.json")


def _lex(key: str) -> list[dict]:
    return load_cases("dockerfile-shell/lex_cases.json", key)


def _env_list(envs: list[str]) -> dict[str, str]:
    out = {}
    for e in envs:
        k, _, v = e.partition("=")
        out[k] = v
    return out


@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: f"line{c['line']}:{c['input'][:30]}")
def test_env_var_expansion(case: dict) -> None:
    env = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}
    if case.get("expected_error"):
        with pytest.raises(ShellError):
            process_word(case["input"], env)
    else:
        assert process_word(case["input"], env) == case["expected"]


@pytest.mark.parametrize("case", WORD_CASES, ids=lambda c: f"line{c['line']}:{c['input'][:30]}")
def test_word_splitting(case: dict) -> None:
    env = _env_list(case["env"])
    if case.get("expected_error") or case.get("expected_words") == ["error"]:
        with pytest.raises(ShellError):
            process_words(case["input"], env)
    else:
        assert process_words(case["input"], env) == case["expected_words"]


@pytest.mark.parametrize("case", _lex("process_word_with_matches"), ids=lambda c: c["input"][:40])
def test_process_with_matches(case: dict) -> None:
    if case["expected_error"]:
        with pytest.raises(ShellError):
            process_word_with_matches(case["input"], case["envs"])
        return
    word, matched, unmatched = process_word_with_matches(case["input"], case["envs"])
    assert word == case["expected"]
    assert matched == set(case["matched"])
    assert unmatched == set(case["unmatched"])


@pytest.mark.parametrize(
    "case",
    _lex("mandatory_env_vars") + _lex("platform_release_name"),
    ids=lambda c: c["input"][:40],
)
def test_mandatory_and_nested(case: dict) -> None:
    envs = case["envs"] if isinstance(case["envs"], dict) else _env_list(case["envs"])
    if "expected_error_contains" in case:
        with pytest.raises(ShellError, match=case["expected_error_contains"]):
            process_word(case["input"], envs)
    else:
        assert process_word(case["input"], envs) == case["expected"]
