"""What readers and writers of images share: the chosen image, and running over blobs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from imgtool import oci
from imgtool.values import Frozen

MAX_CONCURRENT = 3  # blobs at once, as pull and Docker


class Selected(Frozen):
    """What a copy writes: `top` is named (the index with --all, else one manifest); the
    manifests' blobs go first. `index_digest` is the index a platform was picked from."""

    __slots__ = ("top", "manifests", "index_digest")
    top: oci.Manifest | oci.Index
    manifests: tuple[oci.Manifest, ...]
    index_digest: str | None

    def __init__(
        self,
        top: oci.Manifest | oci.Index,
        manifests: tuple[oci.Manifest, ...],
        index_digest: str | None = None,
    ) -> None:
        self._init(top, manifests, index_digest)


def short_digest(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def each(
    items: Sequence[oci.Descriptor], fn: Callable[[oci.Descriptor], None], parallel: bool
) -> None:
    """fn over the blobs, a few at once when the source allows. The first failure is raised
    once the blobs already started have ended; what had not started yet is dropped. (Threads
    of its own: concurrent.futures would load logging too, ~9 ms of every copy's start.)"""
    if not parallel or len(items) <= 1:
        for d in items:
            fn(d)
        return
    pending = list(reversed(items))
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if failures or not pending:
                    return
                desc = pending.pop()
            try:
                fn(desc)
            except BaseException as e:  # raised again in the caller's thread
                with lock:
                    failures.append(e)
                return

    workers = [threading.Thread(target=work, daemon=True) for _ in items[:MAX_CONCURRENT]]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join()
    except BaseException:  # interrupted: nothing new starts, and what runs ends first
        with lock:
            pending.clear()
        for w in workers:
            w.join()
        raise
    if failures:
        raise failures[0]


def unique_blobs(manifests: Sequence[oci.Manifest]) -> list[oci.Descriptor]:
    return list({d.digest: d for m in manifests for d in m.blobs()}.values())
