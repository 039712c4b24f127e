"""A build's work directory (`<store>/build/build.*`), held by a lock for as long as the build
runs, so that `gc` can tell an abandoned one (a build killed before it cleaned up) from a
running one, and remove only the first."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

from imgtool import inroot

PREFIX = "build."


def hold_new(parent: Path) -> tuple[Path, int]:
    """A new work directory under `parent` and the descriptor whose lock holds it (close it to
    let go). A `gc` that removed the directory before the lock was taken is seen (its link
    count is 0) and a fresh one is made."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return path, fd
        os.close(fd)


def release(path: Path, fd: int) -> None:
    """Remove the work directory (any depth: containers wrote in it), then drop the lock."""
    try:
        with contextlib.suppress(OSError):
            inroot.remove_tree(path)
    finally:
        os.close(fd)


def remove_abandoned(parent: Path, dry_run: bool = False) -> list[str]:
    """The work directories no running build holds, removed (or only named, with dry_run)."""
    gone: list[str] = []
    if not parent.is_dir():
        return gone
    for path in sorted(parent.glob(PREFIX + "*")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile, or not a directory of ours
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running build's
            if not dry_run:
                with contextlib.suppress(OSError):
                    inroot.remove_tree(path)
            gone.append(path.name)
        finally:
            os.close(fd)
    return gone
