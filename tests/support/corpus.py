"""Loading the shared conformance corpora (../shared/conformance beside the checkout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "conformance"


def corpus_path(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"conformance corpus {relative} not found beside the checkout ({SHARED})")
    return path


def load_cases(relative: str) -> list[dict]:
    path = SHARED / relative
    if not path.exists():
        # collected at import time: an empty list shows up as a skipped parametrization
        return []
    data = json.loads(path.read_text())
    return data["cases"] if isinstance(data, dict) else data
