"""Whether a container is alive, for every imgtool on the host, whatever its store.

Cgroups, network namespaces and bridge addresses are the host's; one store's records cannot say
whether another store's container still owns them. So the imgtool that runs a container (or the
monitor of a detached one) holds an flock on `/run/imgtool/containers/<id12>.lock` from before
it makes anything host-wide until it has removed all of it. The kernel drops the lock when that
process dies, even by SIGKILL: an unheld lock means whatever carries the id is left-over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

LOCK_DIR = os.environ.get("IMGTOOL_LIVENESS_DIR", "/run/imgtool/containers")
_held: dict[str, int] = {}  # id (12 hex) -> the lock this process holds


def _path(cid: str) -> str:
    return os.path.join(LOCK_DIR, f"{cid[:12]}.lock")


def hold(cid: str) -> None:
    """Take the container's lock for the life of this process (or until `release`)."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    path = _path(cid)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # a sweep may have unlinked the file between our open and our flock: then the lock
        # we hold is on a name nobody can find, so take it again on the file that is there
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                _held[cid[:12]] = fd
                return
        os.close(fd)


def release(cid: str) -> None:
    """Give the lock up, once everything host-wide of the container is gone."""
    fd = _held.pop(cid[:12], None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(_path(cid))  # still holding it: nobody else can be sweeping it now
    os.close(fd)


def held(cid: str) -> bool:
    """Whether some process holds the container's lock (this one included)."""
    if cid[:12] in _held:
        return True
    try:
        fd = _try_lock(_path(cid))
    except OSError:
        return False  # no lock file: nobody ever held it, or its holder let go
    if fd is None:
        return True
    os.close(fd)
    return False


def _try_lock(path: str) -> int | None:
    """The lock at `path`, taken without waiting (the caller closes it), or None when someone
    holds it. OSError when there is no such file."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def sweep() -> None:
    """Remove the lock files of processes that died without releasing them."""
    with contextlib.suppress(OSError):
        for name in os.listdir(LOCK_DIR):
            if not name.endswith(".lock") or name[:-5] in _held:
                continue
            path = os.path.join(LOCK_DIR, name)
            with contextlib.suppress(OSError):
                fd = _try_lock(path)
                if fd is not None:
                    try:
                        os.unlink(path)  # under the lock: `hold` re-checks the name after its flock
                    finally:
                        os.close(fd)
