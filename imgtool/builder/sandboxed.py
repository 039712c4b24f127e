"""Running a RUN step's sandbox, and where its output goes.

A build the CLI runs in one thread (not quiet) runs its steps as `imgtool run` runs a
container, their output straight to ours. Otherwise a step's output is kept in a file: shown
afterwards through the build's output callback (each line prefixed with the stage's name when
stages build at once, so that their outputs do not mix), or, quiet, only its last 4000 bytes
kept for RunStepFailed (the library prints nothing). When stages build in threads, each step
runs in a process the fork server makes (see forkserver: no fork from a threaded process).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from imgtool.builder.common import _redirect
from imgtool.builder.forkserver import ForkServer, answer, read_pid
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


@dataclass(frozen=True)
class StepEnd:
    status: int
    output_tail: str = ""  # the end of a failed step's held output, when quiet


def start_fork_server() -> ForkServer:
    """The server for the steps of stages built in threads; call before any thread starts."""
    from imgtool.sandbox import runner  # noqa: F401 - loaded once, before the fork

    return ForkServer(_run_stoppable)


def run_step(session: BuildSession, spec: SandboxSpec, stage: str) -> StepEnd:
    """Run the step to its end."""
    server = session.fork_server
    if server is None and session.opts.live_output:
        return StepEnd(_run_held(spec))
    with tempfile.TemporaryFile(dir=session.work) as out:
        if server is not None:
            status = _run_in_step_process(session, server, spec, out)
        else:
            with _redirect(out):
                status = _run_held(spec)
        out.seek(0)
        data = out.read()
    if session.opts.quiet:
        tail = data[-_SHOWN_ON_FAILURE:].decode(errors="replace") if status else ""
        return StepEnd(status, tail)
    prefix = f"[{stage}] " if server is not None else ""
    for line in data.decode(errors="replace").splitlines():
        session.say(f"{prefix}{line}")
    return StepEnd(status)


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


def _run_stoppable(spec: SandboxSpec) -> int:
    return _run_held(spec, stoppable=True)


def _run_in_step_process(
    session: BuildSession, server: ForkServer, spec: SandboxSpec, out: BinaryIO
) -> int:
    """_run_held in a process the fork server makes for the step, its output to `out`; its
    pid is one of the session's children while it runs (see stop_children)."""
    try:
        channel = server.start(spec, out.fileno())
    except OSError as e:  # the server died (killed): no step can start
        raise BuildError(f"the build's fork server is gone: {e.strerror or e}") from None
    with channel:
        pid = read_pid(channel)
        if pid is not None:
            with session.lock:
                session.children.add(pid)
        try:
            end = answer(channel)
        finally:
            with session.lock:
                session.children.discard(pid or 0)
    if end.status is None:
        raise BuildError(end.error)
    return end.status


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
