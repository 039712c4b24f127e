"""Independent stages build at the same time: two stages that can only finish together (each
waits on a FIFO the other one writes) build, and their output stays readable, each line
prefixed with its stage; a failure in one stage stops the other and is the one reported."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import imgtool as api
from imgtool.store import Store
from tests.conftest import REPO, imgtool
from tests.support.registry import Registry

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (namespaces, mounts)"),
]

# each step gives up after a while instead of hanging forever: run one after the other,
# the first one's `echo > /p/ab` waits for a reader that never comes and the build fails
HANDSHAKE = """\
FROM busybox AS left
RUN --mount=type=bind,source=pipes,target=/p \\
    timeout 120 sh -c 'echo from-left > /p/ab && read x < /p/ba && echo "left got $x"' \\
    && echo left > /left.txt
FROM busybox AS right
RUN --mount=type=bind,source=pipes,target=/p \\
    timeout 120 sh -c 'read x < /p/ab && echo from-right > /p/ba && echo "right got $x"' \\
    && echo right > /right.txt
FROM busybox
COPY --from=left /left.txt /left.txt
COPY --from=right /right.txt /right.txt
"""

FAILING = """\
FROM busybox AS broken
RUN echo about to fail && exit 7
FROM busybox AS waiting
RUN --mount=type=bind,source=pipes,target=/p timeout 100 sh -c 'read x < /p/never'
FROM busybox
COPY --from=broken /etc/hostname /a
COPY --from=waiting /etc/hostname /b
"""


def _context(tmp_path: Path, text: str) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "pipes").mkdir(parents=True)
    for name in ("ab", "ba", "never"):
        os.mkfifo(ctx / "pipes" / name)  # a FIFO on a read-only bind still opens for writing
    (ctx / "Containerfile").write_text(text)
    return ctx


def test_independent_stages_run_at_the_same_time(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    r = imgtool("build", "-t", "par:1", str(_context(tmp_path, HANDSHAKE)), timeout=600)
    assert r.code == 0, r.err
    assert "stages built at once: (left, right) | (2)" in r.err
    lines = r.err.splitlines()
    assert "[left] left got from-right" in lines and "[right] right got from-left" in lines
    out = imgtool("run", "--rm", "par:1", "cat", "/left.txt", "/right.txt").out
    assert out.split() == ["left", "right"]


def test_a_failing_stage_stops_the_others_and_is_reported(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    r = imgtool("build", "-t", "par:2", str(_context(tmp_path, FAILING)), timeout=600)
    took = time.monotonic() - t0
    assert r.code == 7, r.err  # the failing step's own status
    errors = [x for x in r.err.splitlines() if x.startswith("imgtool: ")]
    assert len(errors) == 1 and "broken" in errors[0] and "exit 7" in errors[0], r.err
    assert "[broken] about to fail" in r.err.splitlines()
    assert took < 90, f"the waiting stage was not stopped ({took:.0f}s)"
    with pytest.raises(Exception):  # noqa: B017 - nothing was tagged
        store.image("par:2")


def test_no_process_is_forked_while_stage_threads_run(
    hub: Registry, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork in a process with other threads can leave the child stuck on a lock one of them
    held: the stages' steps come from a fork server forked before the first stage thread."""
    real_fork = os.fork
    threads_at_fork: list[list[str]] = []
    before = set(threading.enumerate())  # other tests' servers: not the build's threads

    def fork() -> int:
        others = [t.name for t in threading.enumerate() if t not in before]
        pid = real_fork()
        if pid != 0:  # the parent's record; children keep their own copies
            threads_at_fork.append(others)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    api.build(store, _context(tmp_path, HANDSHAKE), tags=["par:3"])
    assert threads_at_fork and all(others == [] for others in threads_at_fork), threads_at_fork
    assert store.image("par:3")


def test_parallel_stages_raise_no_fork_warning(hub: Registry, tmp_path: Path) -> None:
    """Python 3.12 warns (DeprecationWarning) about fork() in a threaded process; as an error,
    such a fork would fail the build."""
    ctx = _context(tmp_path, HANDSHAKE)
    cmd = [sys.executable, "-W", "error::DeprecationWarning", "-m", "imgtool", "build", str(ctx)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "[left] left got from-right" in r.stderr.splitlines()
