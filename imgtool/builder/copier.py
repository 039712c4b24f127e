"""The copies COPY and ADD make: from a resolved source (sourcetree) into the directory that
becomes the layer, every entry created there on descriptors (inroot), so that nothing a source
holds, nor an earlier source of the same instruction, can point a write outside it.

Entries keep their type (directories, files, symlinks as symlinks, device nodes and fifos as
nodes: never read through), their xattrs and times; owner and mode are the instruction's
(--chown, --chmod) or, for the mode, the source's. The owner is set before the mode, as
BuildKit does, since chown(2) clears the setuid and setgid bits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from imgtool import inroot
from imgtool.builder.sourcetree import Comps, Entry, Skip, open_entry, walk
from imgtool.containerfile.filemode import ModeChange
from imgtool.errors import BuildError

_XATTR_SKIPPED = (errno.EPERM, errno.ENOTSUP, errno.ENODATA, errno.EINVAL)
_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")  # the layer store's, not the file's


@dataclass(frozen=True)
class Ownership:
    uid: int | None = 0  # None: the source's
    gid: int | None = 0
    mode: ModeChange | None = None  # --chmod, for files and directories (never symlinks)

    def owner_of(self, st: os.stat_result) -> tuple[int, int]:
        return (
            st.st_uid if self.uid is None else self.uid,
            st.st_gid if self.gid is None else self.gid,
        )

    def mode_of(self, st: os.stat_result) -> int:
        if self.mode is None:
            return stat.S_IMODE(st.st_mode)
        return self.mode.apply(stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode))


def write_data(dst_root: int, path: str, data: bytes, how: Ownership) -> None:
    """A heredoc's text as the file `path` in the destination."""
    parent, name = inroot.walk_parent(dst_root, path, create=True)
    with inroot.opened(parent):
        _clear(parent, name, path, want_dir=False)
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent
        )
        with inroot.opened(fd):
            os.write(fd, data)
            os.fchown(fd, how.uid or 0, how.gid or 0)
            os.fchmod(fd, how.mode.apply(0o644, False) if how.mode is not None else 0o644)


def copy_entry(src: Entry, dst_root: int, path: str, how: Ownership) -> None:
    """One non-directory entry as `path` in the destination."""
    parent, name = inroot.walk_parent(dst_root, path, create=True)
    with inroot.opened(parent):
        _copy_one(src, parent, name, path, how)


def copy_tree(
    src_root: int, top: Entry, dst_root: int, path: str, how: Ownership, skip: Skip | None
) -> None:
    """The contents of the directory `top` into the directory `path` (made, with top's
    metadata). Directory times are set last, once nothing more is written in them."""
    dirs: list[tuple[str, os.stat_result]] = [(path, top.st)]
    with inroot.opened(inroot.mkdirs(dst_root, path)) as made:
        _metadata(made, top, how)
    here: tuple[Comps, int] | None = None  # the destination directory last written in
    try:
        for e in walk(src_root, top.comps, skip):
            rel = e.comps[len(top.comps) :]
            if here is None or here[0] != rel[:-1]:
                if here is not None:
                    os.close(here[1])
                    here = None
                here = (rel[:-1], inroot.mkdirs(dst_root, "/".join((path, *rel[:-1]))))
            target = "/".join((path, *rel))
            _copy_one(e, here[1], e.name, target, how)
            if stat.S_ISDIR(e.st.st_mode):
                dirs.append((target, e.st))
    finally:
        if here is not None:
            os.close(here[1])
    for target, st in reversed(dirs):
        with inroot.opened(inroot.walk(dst_root, target, follow_last=False)) as fd:
            os.utime(inroot.fd_path(fd), ns=(st.st_atime_ns, st.st_mtime_ns))


def _clear(parent: int, name: str, path: str, want_dir: bool) -> bool:
    """Make room for `name`: a non-directory there goes (a copy replaces it); a directory stays
    for a directory and refuses anything else. Returns whether a directory is there."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if not want_dir:
            raise BuildError(f"cannot copy a non-directory over the directory {path!r}")
        return True
    os.unlink(name, dir_fd=parent)
    return False


def _copy_one(src: Entry, parent: int, name: str, path: str, how: Ownership) -> None:
    mode = src.st.st_mode
    is_dir = _clear(parent, name, path, stat.S_ISDIR(mode))
    if stat.S_ISREG(mode):
        _copy_file(src, parent, name, how)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src.name, dir_fd=src.dir_fd), name, dir_fd=parent)
        os.chown(name, *how.owner_of(src.st), dir_fd=parent, follow_symlinks=False)
        ns = (src.st.st_atime_ns, src.st.st_mtime_ns)
        os.utime(name, ns=ns, dir_fd=parent, follow_symlinks=False)
    elif stat.S_ISDIR(mode):
        if not is_dir:
            os.mkdir(name, 0o700, dir_fd=parent)
        with inroot.opened(
            os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=parent)
        ) as fd:
            _metadata(fd, src, how)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        # a node, never opened: reading a device node would read the host's device
        os.mknod(name, stat.S_IFMT(mode) | 0o600, src.st.st_rdev, dir_fd=parent)
        with inroot.opened(os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=parent)) as fd:
            os.chown(inroot.fd_path(fd), *how.owner_of(src.st))
            os.chmod(inroot.fd_path(fd), how.mode_of(src.st))
            os.utime(inroot.fd_path(fd), ns=(src.st.st_atime_ns, src.st.st_mtime_ns))
    # sockets are not copied (BuildKit refuses them; they mean nothing in an image)


def _copy_file(src: Entry, parent: int, name: str, how: Ownership) -> None:
    with inroot.opened(open_entry(src)) as rfd:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with inroot.opened(os.open(name, flags, 0o600, dir_fd=parent)) as wfd:
            offset = 0
            while sent := os.sendfile(wfd, rfd, offset, 1 << 30):
                offset += sent
            os.fchown(wfd, *how.owner_of(src.st))
            os.fchmod(wfd, how.mode_of(src.st))
            _copy_xattrs(rfd, wfd)
            os.utime(wfd, ns=(src.st.st_atime_ns, src.st.st_mtime_ns))


def _metadata(dst_fd: int, src: Entry, how: Ownership) -> None:
    """Owner, mode and xattrs of a directory (its times come last, see copy_tree)."""
    where = inroot.fd_path(dst_fd)
    os.chown(where, *how.owner_of(src.st))
    os.chmod(where, how.mode_of(src.st))
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    name = src.name or "."
    with (
        contextlib.suppress(OSError),
        inroot.opened(os.open(name, flags, dir_fd=src.dir_fd)) as rfd,
    ):
        if os.fstat(rfd).st_ino == src.st.st_ino:
            _copy_xattrs(rfd, where)


def _copy_xattrs(src_fd: int, dst: int | str) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError as e:
        if e.errno in _XATTR_SKIPPED:
            return
        raise
    for key in names:
        if key.startswith(_OVERLAY_XATTRS):
            continue
        try:
            os.setxattr(dst, key, os.getxattr(src_fd, key))
        except OSError as e:
            if e.errno not in _XATTR_SKIPPED:
                raise
