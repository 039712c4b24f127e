"""transports.common.each: the blobs of a copy, a few at once; a failure is raised in the
caller's thread."""

from __future__ import annotations

import threading

import pytest

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.transports.common import MAX_CONCURRENT, each

BLOBS = [oci.Descriptor(mt.OCI_LAYER_GZIP, "sha256:" + f"{i:064x}", i) for i in range(12)]


def test_every_blob_once_and_a_few_at_once() -> None:
    seen: list[int] = []
    running = [0, 0]  # now, most at once
    lock = threading.Lock()
    barrier = threading.Barrier(MAX_CONCURRENT, timeout=10)

    def fn(d: oci.Descriptor) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running)
            seen.append(d.size)
        if d.size < MAX_CONCURRENT:
            barrier.wait()  # the first ones meet: they run side by side
        with lock:
            running[0] -= 1

    each(BLOBS, fn, parallel=True)
    assert sorted(seen) == list(range(12)) and running[1] == MAX_CONCURRENT


def test_a_failure_is_raised_in_the_callers_thread() -> None:
    started: list[int] = []

    def fn(d: oci.Descriptor) -> None:
        started.append(d.size)
        if d.size == 1:
            raise ValueError("blob 1 is bad")

    with pytest.raises(ValueError, match="blob 1 is bad"):
        each(BLOBS, fn, parallel=True)
    assert 1 in started and len(started) == len(set(started))


def test_one_at_a_time_when_the_source_says_so() -> None:
    threads: set[int] = set()
    each(BLOBS, lambda d: threads.add(threading.get_ident()), parallel=False)
    assert threads == {threading.get_ident()}
