"""Building the stages a plan needs, independent ones at the same time.

A stage starts once every stage it reads is built. When it is the only one that can run, it
runs in the calling (main) thread, as a single-stage build always does; stages that can run
together run in threads (their work is subprocesses and I/O). The first failure stops the
others (`stop` ends their running steps) and is the one raised.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from imgtool.containerfile.plan import Plan

if TYPE_CHECKING:
    from concurrent.futures import Future


def build_stages(plan: Plan, build: Callable[[int], None], stop: Callable[[], None]) -> None:
    """Call build(index) for every needed stage, each after the stages it reads."""
    if all(len(wave) == 1 for wave in plan.waves()):
        for index in plan.needed:  # a chain: one after the other, in this thread
            build(index)
        return
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # only if needed

    done: set[int] = set()
    pending = list(plan.needed)
    running: dict[Future[None], int] = {}
    workers = max(2, min(len(pending), os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stage") as pool:
        try:
            while pending or running:
                ready = [i for i in pending if done.issuperset(plan.stages[i].reads)]
                for i in ready:
                    pending.remove(i)
                if len(ready) == 1 and not running:
                    build(ready[0])  # alone: in this thread, as a sequential build
                    done.add(ready[0])
                    continue
                for i in ready:
                    running[pool.submit(build, i)] = i
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: running[f]):
                    index = running.pop(future)
                    future.result()  # the first failure, raised here
                    done.add(index)
        except BaseException:
            stop()
            wait(running)
            raise
