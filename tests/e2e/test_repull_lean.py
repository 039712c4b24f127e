"""`imgtool pull` of an image already in the store, as a user types it: the lean parser
(cli/fast.py) takes the command line, so neither click nor requests is imported (issue 13).
`push -q` takes it too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.registry import Registry

pytestmark = pytest.mark.registry

# what a command may or may not load: the full registry client (with requests only for HTTPS)
LOADED = ("click", "requests", "imgtool.registry.client")
_PROBE = (
    f"LOADED = {LOADED!r}\n"
    "import sys\nsys.argv = ['imgtool', *sys.argv[1:]]\nfrom imgtool.cli import main\n"
    "try:\n    main()\nfinally:\n"
    "    print(*(m for m in LOADED if m in sys.modules), file=sys.stderr)\n"
)


def _imgtool(*argv: str) -> tuple[str, list[str]]:
    """(stdout, which of LOADED it loaded) of a successful `imgtool ARGV`."""
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    *_, loaded = r.stderr.splitlines() or [""]
    assert r.returncode == 0, r.stderr
    return r.stdout, loaded.split()


@pytest.fixture
def pulled(plain_registry: Registry) -> str:
    ref = f"{plain_registry.host}/library/busybox:latest"
    out, loaded = _imgtool("pull", ref)
    assert out.startswith("Digest: sha256:")
    assert loaded == ["imgtool.registry.client"]  # the full client; plain HTTP: no requests
    return ref


def test_quiet_repull_loads_neither_click_nor_requests(pulled: str) -> None:
    out, loaded = _imgtool("pull", "-q", pulled)
    assert out == f"{pulled}\n"
    assert loaded == []


def test_repull_with_progress_loads_neither_click_nor_requests(pulled: str) -> None:
    out, loaded = _imgtool("pull", pulled)
    assert out.startswith("Digest: sha256:") and "(0B fetched)" in out
    assert loaded == []


def test_quiet_push_loads_no_click(pulled: str, plain_registry: Registry) -> None:
    """push takes the lean path too (it needs the client for its uploads, not click)."""
    out, loaded = _imgtool("push", "-q", pulled, f"{plain_registry.host}/lean/pushed:1")
    assert out.startswith("sha256:") and len(out.strip()) == len("sha256:") + 64
    assert loaded == ["imgtool.registry.client"]
