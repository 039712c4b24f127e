"""A fork server for RUN steps of stages built in threads.

Forking a process that has other threads is unsafe: the child has only the forking thread,
and a lock another thread held at that moment (an I/O buffer's, the allocator's, a logging
handler's) stays locked in it forever (Python 3.12 warns about it). So before the stage
threads start, the build forks one server process while it is still single-threaded; a stage
asks it for a step's process over a socket, and the server, single-threaded itself, forks it.

A request carries two descriptors: the step's channel (a stream socket) and the file its
output goes to. The step's process sends "pid N\\n" on the channel, reads the pickled task
(its end of input marks the end), runs it with its output on the file, and answers
"status N" or "error TEXT". The server exits when the build closes its end of the socket.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# a request: the two descriptors and this marker (a datagram with no data cannot be told
# from the end of the connection)
_REQUEST = b"step"


@dataclass(frozen=True)
class StepAnswer:
    status: int | None  # None: the step's process failed, `error` says how
    error: str = ""


class ForkServer:
    """A single-threaded process forking one process per step, each running `task` (in the
    step's process, given what `start` was given)."""

    def __init__(self, task: Callable[[Any], int]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the server never returns
            ours.close()
            _serve(theirs, task)
        theirs.close()
        self.pid = pid
        self._socket = ours
        self._send_lock = threading.Lock()

    def start(self, work: Any, output_fd: int) -> socket.socket:
        """A step's process running task(work), its stdout and stderr on `output_fd`: the
        channel its pid and its answer come back on (see `answer`)."""
        channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._send_lock:
                socket.send_fds(self._socket, [_REQUEST], [theirs.fileno(), output_fd])
        finally:
            theirs.close()
        channel.sendall(pickle.dumps(work))
        channel.shutdown(socket.SHUT_WR)
        return channel

    def close(self) -> None:
        """End the server (it sees the end of its socket) and reap it; steps still running
        go on to their end."""
        self._socket.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def read_pid(channel: socket.socket) -> int | None:
    """The step process's pid, its first line on the channel; None when it died first."""
    line = b""
    while not line.endswith(b"\n"):
        byte = channel.recv(1)
        if not byte:
            return None
        line += byte
    return int(line.removeprefix(b"pid ").strip())


def answer(channel: socket.socket) -> StepAnswer:
    """The step's end, once its process has sent it and exited."""
    chunks = []
    while chunk := channel.recv(4096):
        chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace")
    if text.startswith("status "):
        return StepAnswer(int(text.removeprefix("status ")))
    return StepAnswer(None, text.removeprefix("error ") or "the step's process died")


def _serve(server: socket.socket, task: Callable[[Any], int]) -> None:  # pragma: no cover
    # the build's Ctrl-C is for the build and its steps; the server goes when its socket does
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while True:
            data, fds, _flags, _addr = socket.recv_fds(server, len(_REQUEST), 2)
            if data != _REQUEST or len(fds) != 2:
                break
            if os.fork() == 0:
                server.close()
                _step_process(fds[0], fds[1], task)
            for fd in fds:
                os.close(fd)
            _reap()
    finally:
        os._exit(0)


def _reap() -> None:  # pragma: no cover - in the server
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _step_process(channel_fd: int, output_fd: int, task: Callable[[Any], int]) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the step cleans up on Ctrl-C
    os.set_inheritable(channel_fd, False)  # the step's own processes must not hold it open
    channel = socket.socket(fileno=channel_fd)
    result = "error the step's process failed"
    try:
        channel.sendall(f"pid {os.getpid()}\n".encode())
        chunks = []
        while chunk := channel.recv(1 << 16):
            chunks.append(chunk)
        work = pickle.loads(b"".join(chunks))
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.close(output_fd)
        result = f"status {task(work)}"
    except BaseException as e:  # noqa: BLE001 - all of it goes back to the build
        result = f"error {e}"
    finally:
        with contextlib.suppress(OSError):
            channel.sendall(result.encode())
        os._exit(0)
