"""Paths resolved inside a root on directory descriptors, never through a host-side path.

A root is an image's tree, a layer being applied, a build context or a container's rootfs: a
stranger's files. `os.path.join(root, p)` followed by a call that follows symlinks lets one of
its symlinks (`/data -> /etc`) point the call at the host. Here every component is opened with
O_NOFOLLOW relative to the descriptor of the directory before it; a symlink met on the way is
read and resolved as if the root were `/` (the kernel's `openat2(RESOLVE_IN_ROOT)`), `..` never
climbs above the root (a `..` is taken only from a directory that is not the root, checked by
device and inode). One descriptor is held at a time, so depth costs no descriptors. Like
openat2 without its rename check, a directory moved out of the root by a concurrent process
during the walk could take a later `..` outside: the roots walked here are not being changed
by anyone else meanwhile (a layer being applied, a rootfs before its container starts).
The result is an O_PATH descriptor: callers mount on `/proc/self/fd/N`, or pass it as
`dir_fd` to the `*at` calls, as crun does.

A plain component walk instead of openat2: it also creates missing directories on the way
(`mkdir -p` inside the root), which openat2 cannot, and it runs on kernels before 5.6.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing

MAX_SYMLINKS = 40  # the kernel's limit (ELOOP)
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def open_root(path: str) -> int:
    """An O_PATH descriptor of the directory `path`, the root of later walks."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def fd_path(fd: int) -> str:
    """The magic link of `fd`: mount(2) and path-only calls reach the file it names."""
    return f"/proc/self/fd/{fd}"


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def walk(
    root_fd: int,
    path: str,
    *,
    follow_last: bool = True,
    create: bool = False,
    mode: int = 0o755,
) -> int:
    """An O_PATH descriptor of `path` inside the root (symlinks resolved as if the root were
    `/`). `follow_last=False` opens a final symlink itself. `create=True` makes every missing
    component a directory with `mode` (as `mkdir -p`, inside the root). The caller closes it.

    Raises FileNotFoundError, NotADirectoryError, or OSError(ELOOP) with the path in the root.
    """
    todo = _split(path)
    root = os.fstat(root_fd)
    cur = os.dup(root_fd)  # the directory the next component is looked up in
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                st = os.fstat(cur)
                if (st.st_dev, st.st_ino) != (root.st_dev, root.st_ino):
                    up = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
                    os.close(cur)
                    cur = up
                continue
            last = not todo
            try:
                fd = os.open(name, _PATH_FLAGS, dir_fd=cur)
            except FileNotFoundError:
                if not create:
                    raise _error(errno.ENOENT, path) from None
                with contextlib.suppress(FileExistsError):  # made meanwhile: open it below
                    os.mkdir(name, mode, dir_fd=cur)
                fd = os.open(name, _PATH_FLAGS, dir_fd=cur)
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                target = os.readlink(name, dir_fd=cur)
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise _error(errno.ELOOP, path)
                if target.startswith("/"):
                    os.close(cur)
                    cur = os.dup(root_fd)
                todo[:0] = _split(target)
                continue
            if not last and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise _error(errno.ENOTDIR, path)
            os.close(cur)
            cur = fd
        fd, cur = cur, -1
        return fd
    finally:
        if cur >= 0:
            os.close(cur)


def walk_parent(root_fd: int, path: str, *, create: bool = False) -> tuple[int, str]:
    """The directory that holds `path`'s last component, resolved inside the root, and that
    component's name (never followed: the caller decides what to do with a symlink there).
    `path` must name something below the root."""
    parts = _split(path)
    if not parts or parts[-1] == "..":
        raise _error(errno.EINVAL, path)
    parent = walk(root_fd, "/".join(parts[:-1]), create=create)
    st = os.fstat(parent)
    if not stat.S_ISDIR(st.st_mode):
        os.close(parent)
        raise _error(errno.ENOTDIR, path)
    return parent, parts[-1]


def mkdirs(root_fd: int, path: str, mode: int = 0o755) -> int:
    """`mkdir -p path` inside the root; an O_PATH descriptor of the directory."""
    fd = walk(root_fd, path, create=True, mode=mode)
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise _error(errno.ENOTDIR, path)
    return fd


def ensure_file(root_fd: int, path: str, mode: int = 0o644) -> int:
    """An O_PATH descriptor of a non-directory at `path` inside the root, an empty regular file
    made when nothing is there (a mount point for a file). Symlinks on the way, the last one
    included, are resolved inside the root; a dangling one is resolved to where it points."""
    for _ in range(MAX_SYMLINKS):
        parent, name = walk_parent(root_fd, path, create=True)
        try:
            try:
                fd = os.open(name, _PATH_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.close(
                        os.open(
                            name,
                            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                            mode,
                            dir_fd=parent,
                        )
                    )
                continue  # open what is there now, through the same checks
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=parent)
                os.close(fd)
                # the walk resolves "dir/target" exactly as the kernel would "dir/link"
                path = posixpath.join(posixpath.dirname(path), target)
                continue
            if stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise _error(errno.EISDIR, path)
            return fd
        finally:
            os.close(parent)
    raise _error(errno.ELOOP, path)


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """`with inroot.opened(walk(...)) as fd:` closes the descriptor."""
    try:
        yield fd
    finally:
        os.close(fd)


# --- trees: depth-first, one descriptor at a time ------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


if TYPE_CHECKING:  # a type only: typing is not imported at run time
    from typing import Protocol

    class TreeVisitor(Protocol):
        """What `walk_tree` asks while it walks."""

        def names(self, fd: int, path: str) -> list[str]:
            """The entries of the directory `path` (open on `fd`) to visit, in order."""
            ...

        def entry(self, fd: int, path: str, name: str) -> bool:
            """Handle `name` in the directory `path`; True: descend into it (a directory)."""
            ...

        def leave(self, fd: int, path: str, name: str) -> None:
            """The subdirectory `name` of `path` is done (`fd`: `path`, open again)."""
            ...


def walk_tree(top_fd: int, visitor: TreeVisitor) -> None:
    """Depth-first over the tree below the directory `top_fd` (a readable descriptor, left
    open), whatever its depth: no recursion, and one descriptor open at a time. A directory is
    entered with openat(O_NOFOLLOW) and left through its `..`, which must be the directory it
    was entered from (device and inode), so a tree moved while walked raises ESTALE instead
    of taking the walk elsewhere. `path` is relative to the top ('' for the top itself)."""
    top = os.fstat(top_fd)
    # per level: (device, inode), path, name in its parent, entries left to visit
    levels: list[tuple[tuple[int, int], str, str, list[str]]] = [
        ((top.st_dev, top.st_ino), "", "", list(reversed(visitor.names(top_fd, ""))))
    ]
    cur = top_fd
    try:
        while levels:
            ident, path, name, todo = levels[-1]
            if todo:
                child = todo.pop()
                if not visitor.entry(cur, path, child):
                    continue
                try:
                    fd = os.open(child, _DIR_FLAGS, dir_fd=cur)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue  # gone, or not a directory after all: nothing below it
                    raise
                st = os.fstat(fd)
                if cur != top_fd:
                    os.close(cur)
                cur = fd
                sub = f"{path}/{child}" if path else child
                todo_sub = list(reversed(visitor.names(cur, sub)))
                levels.append(((st.st_dev, st.st_ino), sub, child, todo_sub))
                continue
            levels.pop()
            if not levels:
                break
            if len(levels) == 1:
                up = top_fd
            else:
                up = os.open("..", _DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=cur)
                st = os.fstat(up)
                if (st.st_dev, st.st_ino) != levels[-1][0]:
                    os.close(up)
                    raise _error(errno.ESTALE, levels[-1][1] or ".")
            os.close(cur)
            cur = up
            visitor.leave(cur, levels[-1][1], name)
    finally:
        if cur != top_fd:
            os.close(cur)


class _Remover:
    """Empties directories: non-directories are unlinked as listed, directories removed on the
    way back up."""

    def names(self, fd: int, path: str) -> list[str]:
        subdirs = []
        with os.scandir(fd) as it:
            entries = list(it)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e.name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.name, dir_fd=fd)
        return subdirs

    def entry(self, fd: int, path: str, name: str) -> bool:
        return True

    def leave(self, fd: int, path: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=fd)


def remove(dir_fd: int, name: str) -> None:
    """Remove `name` from the directory `dir_fd`, a directory with everything below it (as
    `rm -rf`, without following any symlink, and without recursion: trees from images and
    containers can be deeper than Python's stack). Nothing there is not an error."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):  # ELOOP: a symlink (O_NOFOLLOW)
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return
    try:
        walk_tree(fd, _Remover())
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """`rm -rf path` for a host path (its parent is trusted, what is below it is not)."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove(fd, name)
    finally:
        os.close(fd)
