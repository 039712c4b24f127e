"""The fork server the stages built in threads get their step processes from: each request is
a process of its own (its pid first, then its status or its error), its output on the file
given, and requests from several threads at once are served."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator

import pytest

from imgtool.builder.forkserver import ForkServer, StepAnswer, answer, read_pid


def _task(work: tuple[str, int]) -> int:
    text, status = work
    if text == "raise":
        raise ValueError("the task failed")
    os.write(1, f"{text} from {os.getpid()}\n".encode())  # as the sandbox's programs write
    return status


@pytest.fixture
def server() -> Iterator[ForkServer]:
    s = ForkServer(_task)
    yield s
    s.close()


def _step(server: ForkServer, work: tuple[str, int]) -> tuple[int | None, StepAnswer, str]:
    with tempfile.TemporaryFile() as out:
        with server.start(work, out.fileno()) as channel:
            pid = read_pid(channel)
            end = answer(channel)
        out.seek(0)
        return pid, end, out.read().decode()


def test_a_step_runs_in_its_own_process(server: ForkServer) -> None:
    pid, end, output = _step(server, ("hello", 7))
    assert end == StepAnswer(7)
    assert pid is not None and pid not in (os.getpid(), server.pid)
    assert output == f"hello from {pid}\n"


def test_a_failing_task_is_an_error_not_a_status(server: ForkServer) -> None:
    _, end, _ = _step(server, ("raise", 0))
    assert end.status is None and "the task failed" in end.error


def test_steps_asked_from_threads_at_once(server: ForkServer) -> None:
    results: dict[int, StepAnswer] = {}

    def ask(i: int) -> None:
        results[i] = _step(server, (f"t{i}", i))[1]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: StepAnswer(i) for i in range(6)}


def test_closing_ends_the_server() -> None:
    s = ForkServer(_task)
    s.close()
    with pytest.raises(ProcessLookupError):
        os.kill(s.pid, 0)
