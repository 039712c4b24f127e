"""What readers and writers of images share: the chosen image, and running over blobs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imgtool import oci

MAX_CONCURRENT = 3  # blobs at once, as pull and Docker


@dataclass(frozen=True)
class Selected:
    """What a copy writes: `top` is named (the index with --all, else one manifest); the
    manifests' blobs go first. `index_digest` is the index a platform was picked from."""

    top: oci.Manifest | oci.Index
    manifests: tuple[oci.Manifest, ...]
    index_digest: str | None = None


def short_digest(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def each(
    items: Sequence[oci.Descriptor], fn: Callable[[oci.Descriptor], None], parallel: bool
) -> None:
    """fn over the blobs, a few at once when the source allows; the first failure is raised and
    what had not started yet is dropped."""
    if not parallel or len(items) <= 1:
        for d in items:
            fn(d)
        return
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENT) as pool:
        futures = [pool.submit(fn, d) for d in items]
        try:
            for f in futures:
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def unique_blobs(manifests: Sequence[oci.Manifest]) -> list[oci.Descriptor]:
    return list({d.digest: d for m in manifests for d in m.blobs()}.values())
