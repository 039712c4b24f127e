"""Whole-file writes that readers see entirely or not at all (temporary file, fsync, rename),
the flock(2) that serialises read-modify-write of such files between processes, and the
private files of caches: read only when no one but our user can have written them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import BinaryIO

    # str or Path: os.path, not pathlib, so that the commands on the hot paths (run, a
    # re-pull, images) need not import pathlib (and urllib.parse, ipaddress, fnmatch with it)
    StrPath = str | os.PathLike[str]


def _split(path: StrPath) -> tuple[str, str]:
    """(parent, name) of `path`, as Path's .parent and .name are: empty and "." components
    dropped (a trailing "/." names the directory before it, not "."), the parent of a bare
    name is "."."""
    text = os.fspath(path)
    names = [part for part in text.split("/") if part and part != "."]
    root = "//" if text[:2] == "//" and text[2:3] != "/" else "/" if text[:1] == "/" else ""
    if not names:
        return root or ".", ""
    parent = "/".join(names[:-1])
    return (root + parent if root else parent or "."), names[-1]


def fsync_dir(path: StrPath) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: StrPath, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A file to write that replaces `path` only when the block ends without an error (a
    temporary file beside it is renamed over it); else nothing is left. Readers see the old or
    the new content, never a mix. `durable` also survives a power cut (fsync); state that dies
    with the machine skips it."""
    parent, name = _split(path)
    tmp = os.path.join(parent, f".{name}.{os.getpid()}.tmp")
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
        fsync_dir(parent)


def atomic_write(path: StrPath, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write a whole file so that readers see the old or the new content, never a mix."""
    with replacing(path, mode, durable) as f:
        f.write(data)


@contextlib.contextmanager
def flocked(path: StrPath, exclusive: bool = True) -> Iterator[None]:
    """Hold an flock on `path` (created if missing; its directory must exist) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _private_dir(fd: int) -> bool:
    st = os.fstat(fd)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _open_private_dir(directory: StrPath) -> int | None:
    """A descriptor of `directory` when it and its parent are ours alone (owned by our user,
    writable by no one else); opened without following symlinks."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    parent_path, name = _split(directory)
    try:
        parent = os.open(parent_path, flags)
    except OSError:
        return None
    try:
        if not _private_dir(parent):
            return None
        fd = os.open(name, flags, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    if _private_dir(fd):
        return fd
    os.close(fd)
    return None


def read_private(directory: StrPath, name: str, limit: int) -> bytes | None:
    """The first `limit` bytes of the cache file `directory/name`, when it cannot have been
    written by anyone but our user: it is a regular file reached without following a symlink,
    and it, `directory` and the directory above are ours and writable by no one else. None
    otherwise, or when it is missing: what a cache cannot vouch for is made again."""
    dir_fd = _open_private_dir(directory)
    if dir_fd is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        return f.read(limit)


def write_private(directory: StrPath, name: str, data: bytes) -> None:
    """Keep `data` as the cache file `directory/name` (the directory made 0700, the file 0600,
    written atomically); where we cannot write, the cache is simply not kept. Written only
    into a directory `read_private` would trust, through its descriptor and without following
    a symlink: root with another user's HOME must not write through that user's links."""
    with contextlib.suppress(OSError):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        dir_fd = _open_private_dir(directory)
        if dir_fd is None:
            return  # another user's or a shared directory: no cache kept there
        tmp = f".{name}.{os.getpid()}.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)  # a leftover of ours (unlink follows no link)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)
