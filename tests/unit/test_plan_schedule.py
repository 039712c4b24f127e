"""Building a plan's stages: each after the stages it reads, independent ones at the same time
(a barrier only both can pass proves it, with no timing), the first failure raised and the
others stopped."""

from __future__ import annotations

import threading

import pytest

from imgtool.builder.schedule import build_stages
from imgtool.containerfile.parser import parse
from imgtool.containerfile.plan import Plan, make_plan

TWO_THEN_ONE = """\
FROM scratch AS a
FROM scratch AS b
FROM scratch
COPY --from=a /x /x
COPY --from=b /y /y
"""


def plan_of(text: str) -> Plan:
    return make_plan(parse(text, "C", lambda _: None).instructions, "C")


def test_independent_stages_meet_and_the_last_waits_for_both() -> None:
    both = threading.Barrier(2, timeout=30)  # sequential: the first waits alone and breaks
    order: list[str] = []
    lock = threading.Lock()

    def build(i: int) -> None:
        if i in (0, 1):
            both.wait()
        with lock:
            order.append(f"{i}:{threading.current_thread() is threading.main_thread()}")

    build_stages(plan_of(TWO_THEN_ONE), build, lambda: None)
    assert sorted(order[:2]) == ["0:False", "1:False"]  # in threads, together
    assert order[2] == "2:True"  # alone: in the main thread, after both


def test_a_chain_runs_in_the_main_thread_in_order() -> None:
    seen: list[tuple[int, bool]] = []
    text = "FROM scratch AS a\nFROM a AS b\nFROM b\n"
    build_stages(plan_of(text), lambda i: seen.append((i, _main())), lambda: None)
    assert seen == [(0, True), (1, True), (2, True)]


def test_the_first_failure_is_raised_and_stops_the_others() -> None:
    stopped = threading.Event()
    started = threading.Barrier(2, timeout=30)

    def build(i: int) -> None:
        started.wait()
        if i == 0:
            raise RuntimeError("stage a failed")
        assert stopped.wait(30), "the other stage was never stopped"
        raise RuntimeError("stage b stopped")

    with pytest.raises(RuntimeError, match="stage a failed"):
        build_stages(plan_of(TWO_THEN_ONE), build, stopped.set)
    assert stopped.is_set()


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()
