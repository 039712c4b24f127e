"""Where a build's output goes: the library prints nothing (a failed RUN step's output is on
the error), the CLI shows it; and RUN steps get the seccomp program from the store's cache, as
`run` does."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import imgtool as api
from imgtool.errors import RunStepFailed
from imgtool.sandbox import seccomp_cache
from imgtool.sandbox.spec import DEFAULT_CAPS
from imgtool.store import Store
from tests.conftest import imgtool
from tests.support.registry import Registry

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (namespaces, mounts)"),
]

FAILING = """\
FROM busybox
RUN echo step-output-line && echo step-error-line >&2 && exit 5
"""


def _context(tmp_path: Path, text: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(text)
    return ctx


def test_the_library_prints_nothing_for_a_failed_step_and_carries_its_output(
    hub: Registry, store: Store, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RunStepFailed) as failed:
        api.build(store, _context(tmp_path, FAILING))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert failed.value.status == 5
    assert "step-output-line" in failed.value.output_tail
    assert "step-error-line" in failed.value.output_tail


def test_the_library_gives_a_steps_output_to_the_callback_only(
    hub: Registry, store: Store, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    events: list[str] = []
    with pytest.raises(RunStepFailed) as failed:
        api.build(store, _context(tmp_path, FAILING), progress=lambda e: events.append(e.message))
    assert capfd.readouterr() == ("", "")
    assert "step-output-line" in events and "step-error-line" in events
    assert failed.value.output_tail == ""  # already given, line by line


def test_the_cli_shows_a_failed_steps_output_when_quiet(hub: Registry, tmp_path: Path) -> None:
    r = imgtool("build", "-q", str(_context(tmp_path, FAILING)), timeout=600)
    assert r.code == 5, r.err
    lines = r.err.splitlines()
    assert "step-output-line" in lines and "step-error-line" in lines, r.err
    assert lines[-1].startswith("imgtool: ") and "exit status 5" in lines[-1]
    assert r.out == ""


def test_run_steps_use_the_stores_seccomp_cache(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    """A RUN step installs the program the store's cache holds (as `run` does): an allow-all
    program planted there, trusted (root's, 0600), lets `unshare -U` through, which Docker's
    default profile refuses."""
    script = "FROM busybox\nRUN unshare -U -r id -u; echo rc=$?\n"
    r = imgtool("build", "--no-cache", str(_context(tmp_path, script)), timeout=600)
    assert r.code == 0, r.err
    assert "rc=1" in (r.out + r.err).splitlines(), r.err  # confined by the default program
    uname = os.uname()
    key = seccomp_cache.cache_key(DEFAULT_CAPS, uname.machine, uname.release)
    cached = store.root / "cache" / "seccomp" / f"{key}.bpf"
    assert seccomp_cache.read(cached.parent, cached.stem) is not None  # written by the build
    allow_all = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)
    cached.write_bytes(seccomp_cache.encode(allow_all))
    cached.chmod(0o600)
    r = imgtool("build", "--no-cache", str(tmp_path / "ctx"), timeout=600)
    assert r.code == 0, r.err
    assert "rc=0" in (r.out + r.err).splitlines(), (
        r.err
    )  # the planted program was the one installed
