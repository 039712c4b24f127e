"""What COPY, ADD and RUN mounts read, resolved and read inside its own root, on descriptors.

A build context, a stage's flattened tree and an exported image are strangers' trees. A path in
one is resolved the way the kernel's `openat2(RESOLVE_IN_ROOT)` would: a symlink means what it
means inside that tree, `/` being its root and `..` never climbing above it (BuildKit resolves
COPY sources with continuity's RootPath the same way, and buildah in a chroot of the context).
What a path resolved to is kept as its components, free of symlinks; every later open walks
them again with O_NOFOLLOW relative to the directory before, so a name swapped for a symlink
after it was resolved fails instead of reaching the host. .dockerignore rules match the
resolved path: a file is excluded whatever name it is reached by.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgtool import inroot
from imgtool.containerfile.pathmatch import has_wildcards, match_component
from imgtool.digest import sha256

if TYPE_CHECKING:
    from hashlib import _Hash

Comps = tuple[str, ...]  # a resolved path inside a root, as its components
Skip = Callable[[Comps], bool]  # whether an entry (by its resolved path) is left out
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Root:
    """An open root: its descriptor, its real host path, and what errors call it."""

    def __init__(self, path: str | os.PathLike[str], label: str) -> None:
        self.path = os.path.realpath(path)
        self.label = label
        self.fd = inroot.open_root(self.path)

    def host_path(self, comps: Comps) -> str:
        """The host path of a resolved path: for a bind mount's source, which has no symlink
        left in it to follow."""
        return os.path.join(self.path, *comps)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def open_at(root_fd: int, comps: Comps, flags: int = os.O_RDONLY) -> int:
    """Open a resolved path with no symlink followed on the way or at the end (a component
    that became a symlink since it was resolved fails: ELOOP or ENOTDIR)."""
    cur = os.dup(root_fd)
    try:
        for name in comps[:-1]:
            nxt = os.open(name, _PATH_DIR, dir_fd=cur)
            os.close(cur)
            cur = nxt
        last = comps[-1] if comps else "."
        return os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
    finally:
        os.close(cur)


def resolve(root_fd: int, path: str, follow_last: bool = True) -> Comps:
    """Where `path` leads inside the root, as components free of symlinks (a final symlink is
    kept when `follow_last` is off). Raises FileNotFoundError, NotADirectoryError or
    OSError(ELOOP), naming `path`."""
    if "\0" in path:
        raise _error(errno.EINVAL, path.replace("\0", "\\0"))
    todo = split(path)
    done: list[str] = []
    cur = os.dup(root_fd)  # the directory `done` names
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if done:
                    done.pop()
                    os.close(cur)
                    cur = -1
                    cur = open_at(root_fd, tuple(done), _PATH_DIR)
                continue
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                raise _error(errno.ENOENT, path) from None
            last = not todo
            if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                links += 1
                if links > inroot.MAX_SYMLINKS:
                    raise _error(errno.ELOOP, path)
                target = os.readlink(name, dir_fd=cur)
                if target.startswith("/"):
                    done = []
                    os.close(cur)
                    cur = -1
                    cur = os.dup(root_fd)
                todo[:0] = split(target)
                continue
            if not last:
                if not stat.S_ISDIR(st.st_mode):
                    raise _error(errno.ENOTDIR, path)
                nxt = os.open(name, _PATH_DIR, dir_fd=cur)
                os.close(cur)
                cur = nxt
            done.append(name)
        return tuple(done)
    finally:
        if cur >= 0:
            os.close(cur)


def escaping_link(root_fd: int, path: str) -> tuple[str, str] | None:
    """The first symlink on `path` (as written) whose target leaves the root, and that target:
    what an error says when the path resolves to nothing inside its root."""
    parts = split(path)
    if ".." in parts or "\0" in path:
        return None
    for i in range(len(parts)):
        try:
            parent = resolve(root_fd, "/".join(parts[:i]))
            with inroot.opened(open_at(root_fd, parent, _PATH_DIR)) as fd:
                st = os.stat(parts[i], dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    continue
                target = os.readlink(parts[i], dir_fd=fd)
        except OSError:
            return None
        if _leaves(len(parent), target):
            return "/".join(parts[: i + 1]), target
    return None


def _leaves(depth: int, target: str) -> bool:
    """Whether a symlink `depth` directories below the root points above it, or is absolute."""
    if target.startswith("/"):
        return True
    for part in split(target):
        depth += -1 if part == ".." else 1
        if depth < 0:
            return True
    return False


def glob(root_fd: int, pattern: str) -> list[str]:
    """The paths a COPY source names. Without wildcards, the pattern itself. With them, as
    BuildKit: the part before the first wildcard resolved inside the root, the rest matched
    level by level (Go's path.Match: a malformed pattern matches nothing) without following
    symlinks; sorted by level."""
    parts = split(pattern)
    first = next((i for i, p in enumerate(parts) if has_wildcards(p)), None)
    if first is None:
        return [pattern]
    try:
        found = [resolve(root_fd, "/".join(parts[:first]))]
    except OSError:
        return []
    for part in parts[first:]:
        nxt: list[Comps] = []
        for base in found:
            try:
                with inroot.opened(open_at(root_fd, base, _DIR)) as fd:
                    for name in sorted(os.listdir(fd)):
                        if match_component(part, name):
                            nxt.append((*base, name))
            except OSError:
                continue  # not a directory: nothing below it matches
        found = nxt
    return ["/".join(c) for c in found]


def read_bytes(root_fd: int, comps: Comps) -> bytes:
    with inroot.opened(open_at(root_fd, comps, os.O_RDONLY | os.O_NONBLOCK)) as fd:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _error(errno.EINVAL, "/".join(comps))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)


@dataclass(frozen=True)
class Entry:
    """One entry met in a walk: its directory (open while the walk is there), its name, its
    lstat, and its resolved path inside the root."""

    dir_fd: int
    name: str
    st: os.stat_result
    comps: Comps


def walk(root_fd: int, top: Comps, skip: Skip | None = None) -> Iterator[Entry]:
    """Every entry below the directory `top` (not `top` itself), parents before children,
    names sorted; symlinks are entries, never followed. One directory is open at a time."""
    todo = [top]
    while todo:
        here = todo.pop()
        with inroot.opened(open_at(root_fd, here, _DIR)) as fd:
            subdirs = []
            for name in sorted(os.listdir(fd)):
                comps = (*here, name)
                if skip is not None and skip(comps):
                    continue
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                yield Entry(fd, name, st, comps)
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(comps)
            todo += reversed(subdirs)


@contextlib.contextmanager
def entry_of(root_fd: int, comps: Comps) -> Iterator[Entry]:
    """The resolved path as a walk entry (its parent held open meanwhile); the root itself is
    the entry "." of its own descriptor."""
    if not comps:
        yield Entry(root_fd, ".", os.fstat(root_fd), comps)
        return
    with inroot.opened(open_at(root_fd, comps[:-1], _PATH_DIR)) as parent:
        st = os.stat(comps[-1], dir_fd=parent, follow_symlinks=False)
        yield Entry(parent, comps[-1], st, comps)


def open_entry(entry: Entry) -> int:
    """The regular file of a walk entry, opened for reading; it must still be the file that
    was listed (no symlink followed, same inode)."""
    fd = os.open(
        entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=entry.dir_fd
    )
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (entry.st.st_dev, entry.st.st_ino):
        os.close(fd)
        raise _error(errno.ESTALE, "/".join(entry.comps))
    return fd


def _hash_entry(h: _Hash, rel: str, e: Entry) -> None:
    h.update(f"{rel}\0{e.st.st_mode}\0".encode())
    if stat.S_ISLNK(e.st.st_mode):
        h.update(os.readlink(e.name, dir_fd=e.dir_fd).encode())
    elif stat.S_ISREG(e.st.st_mode):
        with inroot.opened(open_entry(e)) as fd:
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
    elif stat.S_ISCHR(e.st.st_mode) or stat.S_ISBLK(e.st.st_mode):
        h.update(f"{e.st.st_rdev}".encode())


def tree_digest(root_fd: int, comps: Comps, skip: Skip | None = None) -> str:
    """Content and metadata (not times) of a resolved file or tree: what a copy depends on."""
    h = sha256()
    with entry_of(root_fd, comps) as top:
        if not stat.S_ISDIR(top.st.st_mode):
            _hash_entry(h, top.name, top)
            return h.hexdigest()
    for e in walk(root_fd, comps, skip):
        _hash_entry(h, "/".join(e.comps[len(comps) :]), e)
    return h.hexdigest()
