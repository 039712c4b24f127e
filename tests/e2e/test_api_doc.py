"""docs/api.md cannot rot: its example runs, as a user would run it, against the real registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgtool.store import Store
from tests.support.gates import CONTAINERS
from tests.support.registry import Registry

pytestmark = [pytest.mark.registry, *CONTAINERS]

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.M | re.S)


def test_the_page_has_an_example() -> None:
    blocks = python_blocks(DOC.read_text())
    assert blocks, f"{DOC} has no ```python block"
    assert all("imgtool." in b for b in blocks)


def test_the_example_runs(plain_registry: Registry, tmp_path: Path) -> None:
    root = tmp_path / "example-store"
    env = {**os.environ, "REGISTRY": plain_registry.host, "IMGTOOL_ROOT": str(root)}
    for i, code in enumerate(python_blocks(DOC.read_text())):
        script = tmp_path / f"example{i}.py"
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"block {i} of {DOC}:\n{proc.stdout}\n{proc.stderr}"
        assert proc.stderr == "", proc.stderr  # the library is silent
    store = Store(root)
    assert store.find("example/busybox:1")
    assert "refused: invalid platform 'linux'" in proc.stdout
    assert f"{plain_registry.host}/example/copy:1" in proc.stdout
    assert "RUN echo hello > /greeting" in proc.stdout, proc.stdout  # build's step events
    assert store.find("example/app:1")
