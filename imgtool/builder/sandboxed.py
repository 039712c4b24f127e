"""Running a RUN step's sandbox, and where its output goes.

A stage built alone (in the main thread) runs its steps as `imgtool run` runs a container,
their output straight to ours. A stage built beside others runs in a thread: each step then
runs in a process forked for it (the sandbox's runner forwards signals, which only a main
thread may set up), its output kept in a file and shown afterwards, each line prefixed with
the stage's name, so that the stages' outputs do not mix. With --quiet the output is shown
only when the step fails (its last 4000 bytes).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, BinaryIO

from imgtool.builder.common import _redirect
from imgtool.errors import BuildError, SandboxError

if TYPE_CHECKING:
    from imgtool.builder.session import BuildSession
    from imgtool.sandbox.cgroups import Cgroup
    from imgtool.sandbox.spec import SandboxSpec

_SHOWN_ON_FAILURE = 4000
# what a stopped stage's step process gets: it kills the processes of its step's cgroup (a
# TERM would reach only the step's first process, which as PID 1 may ignore it); a real-time
# signal, as the sandbox forwards the usual ones to the step
STOP = signal.SIGRTMIN + 3


def run_step(session: BuildSession, spec: SandboxSpec, stage: str) -> int:
    """Run the step to its end; its exit status."""
    from imgtool.sandbox import runner  # noqa: F401 - loaded here, before any fork, not at start-up

    in_thread = threading.current_thread() is not threading.main_thread()
    if not in_thread and not session.opts.quiet:
        return _run_held(spec)
    with tempfile.TemporaryFile(dir=session.work) as out:
        if in_thread:
            status = _run_in_child(session, spec, out)
        else:
            with _redirect(out):
                status = _run_held(spec)
        out.seek(0)
        data = out.read()
    if session.opts.quiet:
        if status != 0:
            os.write(2, data[-_SHOWN_ON_FAILURE:])
        return status
    for line in data.decode(errors="replace").splitlines():
        session.say(f"[{stage}] {line}")
    return status


def _run_held(spec: SandboxSpec, stoppable: bool = False) -> int:
    """Run a step as `imgtool run` runs a container: in its own cgroup under imgtool/, with
    the host-wide liveness lock held from before the cgroup exists until it is gone, so that
    the clean-up of any imgtool kills a step whose imgtool was killed, and only such a step."""
    from imgtool.sandbox import liveness, runner
    from imgtool.sandbox.cgroups import Cgroup, Limits

    step_id = secrets.token_hex(32)
    liveness.hold(step_id)
    try:
        cgroup = Cgroup(step_id, Limits())
        try:
            cgroup.create()
            if stoppable:
                signal.signal(STOP, lambda _s, _f: _kill_members(cgroup))
            return runner.run(spec, step_id, cgroup=cgroup).status
        except SandboxError as e:  # the caller names the file, line and step
            raise BuildError(str(e)) from None
        finally:
            cgroup.destroy()
    finally:
        liveness.release(step_id)


def _run_in_child(session: BuildSession, spec: SandboxSpec, out: BinaryIO) -> int:
    """_run_held in a process forked for the step, its output to `out`. The session's lock
    is held across the fork so that no other thread is writing our output then (a buffer's
    lock held by a thread the child does not have would block it)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with session.lock:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            _child(spec, out.fileno(), r, w)
        session.children.add(pid)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as report:
            answer = report.read()
        os.waitpid(pid, 0)
    finally:
        with session.lock:
            session.children.discard(pid)
    text = answer.decode(errors="replace")
    if text.startswith("status "):
        return int(text.removeprefix("status "))
    raise BuildError(text.removeprefix("error ") or "the step's process died")


def _child(spec: SandboxSpec, out_fd: int, r: int, w: int) -> None:
    answer = "error the step's process failed"
    try:
        os.close(r)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        answer = f"status {_run_held(spec, stoppable=True)}"
    except BaseException as e:  # noqa: BLE001 - all of it goes back to the parent
        answer = f"error {e}"
    finally:
        with contextlib.suppress(OSError):
            os.write(w, answer.encode())
        os._exit(0)


def _kill_members(cgroup: Cgroup) -> None:
    for d in cgroup.dirs:
        with contextlib.suppress(OSError):
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def stop_children(session: BuildSession) -> None:
    """A failure in one stage stops the steps that others are running: each step's process
    kills what runs in its step's cgroup."""
    with session.lock:
        pids = list(session.children)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP)
