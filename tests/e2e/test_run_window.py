"""`run` at its edges: a signal that comes while the container is being started, and the API's
captured output. The store is a busybox layout made in place (no registry needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import imgtool
from fixtures import make_images
from imgtool.errors import InvalidArgument
from imgtool.store import Store
from tests.conftest import REPO
from tests.support.gates import CONTAINERS
from tests.support.tools import require_tool

pytestmark = CONTAINERS


@pytest.fixture
def busybox_store(tmp_path: Path) -> Store:
    require_tool(str(make_images.BUSYBOX), "busybox-static")
    return Store(make_images.make_busybox(tmp_path / "store"))


# Runs `api.run` with the relay process (A, forked by imgtool) sending SIGTERM to imgtool as
# its first act, before it has started the container or reported its PID: imgtool is then
# waiting for that PID, on every run, no timing involved.
SIGNAL_IN_THE_GAP = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import imgtool
    from imgtool.sandbox import runner
    from imgtool.store import Store

    relay_main = runner._relay_main

    def signalling_relay_main(*args, **kwargs):
        os.kill(os.getppid(), signal.SIGTERM)  # the relay's parent: imgtool
        relay_main(*args, **kwargs)

    runner._relay_main = signalling_relay_main
    ended = imgtool.run(Store(Path(sys.argv[1])), "latest", ["true"], network="none", rm=True)
    print("status", ended.status)
    """
)


def test_a_sigterm_before_the_pid_is_known_does_not_kill_imgtool(busybox_store: Store) -> None:
    r = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_THE_GAP, str(busybox_store.root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # before the fix imgtool died of the signal (returncode -15) and left the container behind
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.strip() == "status 0"
    assert not list((busybox_store.root / "containers").glob("*/state.json"))


def test_a_queued_signal_is_forwarded_once_the_pid_is_known() -> None:
    from imgtool.sandbox.runner import _Forwarder

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys\n"
            "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(42))\n"
            "print('ready', flush=True)\n"
            "signal.pause()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    forward = _Forwarder()
    try:
        signal.raise_signal(signal.SIGUSR1)  # no PID yet: held, not fatal
        assert forward.queued == [signal.SIGUSR1]
        forward.started(child.pid)
    finally:
        forward.restore()
    assert child.wait(timeout=10) == 42
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_api_run_captures_stdout_and_stderr(busybox_store: Store, tmp_path: Path) -> None:
    out_r, out_w = os.pipe()
    err_path = tmp_path / "err"
    with open(err_path, "wb") as err:
        ended = imgtool.run(
            busybox_store,
            "latest",
            ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"],
            network="none",
            rm=True,
            stdout=out_w,
            stderr=err.fileno(),
        )
    os.close(out_w)
    with os.fdopen(out_r) as captured:
        assert captured.read() == "to-out\n"
    assert ended.status == 3
    assert err_path.read_text() == "to-err\n"


def test_api_run_swaps_stdout_and_stderr(busybox_store: Store) -> None:
    """stdout=2, stderr=1: each goes where the other was, not both to one place."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import imgtool
        from imgtool.store import Store
        imgtool.run(Store(Path(sys.argv[1])), "latest", ["sh", "-c", "echo O; echo E >&2"],
                    network="none", rm=True, stdout=2, stderr=1)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(busybox_store.root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("E\n", "O\n")


def test_api_run_from_another_thread(busybox_store: Store) -> None:
    """Signal handlers can only be set in the main thread: a library caller's worker thread
    runs containers without them (Python would raise ValueError)."""
    import threading

    ended: list[int] = []
    worker = threading.Thread(
        target=lambda: ended.append(
            imgtool.run(
                busybox_store, "latest", ["sh", "-c", "exit 4"], network="none", rm=True
            ).status
        )
    )
    worker.start()
    worker.join(timeout=60)
    assert ended == [4]


def test_api_run_refuses_a_closed_descriptor(busybox_store: Store) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(InvalidArgument, match="stdout: file descriptor .* is not open"):
        imgtool.run(busybox_store, "latest", ["true"], network="none", stdout=w)
    assert not (busybox_store.root / "containers").exists() or not list(
        (busybox_store.root / "containers").iterdir()
    )


def test_the_container_is_in_every_cgroup_of_its_own(busybox_store: Store) -> None:
    """B joins its cgroups itself now: its PID is in each hierarchy's container cgroup."""
    from imgtool import runner
    from imgtool.containers import Containers
    from imgtool.sandbox import cgroups

    opts = runner.RunOptions(command=["sleep", "30"], network="none", detach=True)
    rec, spec = runner.prepare(busybox_store, "latest", opts)
    rec = runner.start_detached(busybox_store, rec, spec)
    try:
        dirs = cgroups.dirs_of(rec.id)
        assert len(dirs) >= (1 if cgroups.version() == 2 else 4)
        for d in dirs:
            assert Path(d, "cgroup.procs").read_text().split() == [str(rec.pid)], d
    finally:
        runner.remove(busybox_store, rec.id, force=True)
    assert not Containers(busybox_store.root).dir(rec.id).exists()
