"""Loading the shared conformance corpora (../shared/conformance beside the checkout).

A corpus that is missing, renamed or empty must never turn into an empty parameter list (a test
that passes with no assertion). In CI (CI set, as .ci/run has it) that is an error, so the suite
fails; on a developer's machine without ../shared the module is skipped, saying which corpus.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "conformance"


class CorpusError(Exception):
    """A conformance corpus the suite needs is missing, renamed or has no cases."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing(relative: str) -> NoReturn:
    message = f"conformance corpus {relative} not found in {SHARED}"
    if in_ci():
        raise CorpusError(message)
    # at import time this skips the whole module; inside a test, just that test
    pytest.skip(message, allow_module_level=True)


def corpus(relative: str) -> Path:
    """The path of a corpus file or directory: CI fails without it, elsewhere the test skips."""
    path = SHARED / relative
    if not path.exists():
        _missing(relative)
    return path


def load_json(relative: str) -> Any:
    return json.loads(corpus(relative).read_text())


def nonempty(cases: list, what: str) -> list:
    """The cases themselves; a corpus that yields none is broken, in CI or not."""
    if not isinstance(cases, list) or not cases:
        raise CorpusError(f"conformance corpus {what} has no cases")
    return cases


def section(data: dict, key: str, what: str) -> Any:
    if key not in data:
        raise CorpusError(f"conformance corpus {what} has no section {key!r}")
    return data[key]


def load_cases(
    relative: str,
    key: str | None = None,
    where: Callable[[dict], bool] | None = None,
) -> list[dict]:
    """The non-empty case list of a corpus file: its "cases" (under `key` when given), or the
    file itself when it is a list; `where` keeps the cases that apply to us."""
    what = relative if key is None else f"{relative}:{key}"
    data = load_json(relative)
    if key is not None:
        data = section(data, key, what)
    found = section(data, "cases", what) if isinstance(data, dict) else data
    if where is not None:
        found = [c for c in found if where(c)]
    return nonempty(found, what)
