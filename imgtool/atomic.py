"""Whole-file writes that readers see entirely or not at all (temporary file, fsync, rename),
and the flock(2) that serialises read-modify-write of such files between processes."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A file to write that replaces `path` only when the block ends without an error (a
    temporary file beside it is renamed over it); else nothing is left. Readers see the old or
    the new content, never a mix. `durable` also survives a power cut (fsync); state that dies
    with the machine skips it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write a whole file so that readers see the old or the new content, never a mix."""
    with replacing(path, mode, durable) as f:
        f.write(data)


@contextlib.contextmanager
def flocked(path: Path | str, exclusive: bool = True) -> Iterator[None]:
    """Hold an flock on `path` (created if missing; its directory must exist) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
