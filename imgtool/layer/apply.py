"""Applying a layer tar to a directory, safely.

Two formats (see `view`):
- "plain": the layer is applied onto a root that holds the layers below it (whiteouts delete,
  opaque markers remove lower children): a flattened rootfs, as `umoci unpack` makes.
- "overlay": the directory is the layer's own overlayfs layer, written over the directories of
  the layers below it: a whiteout becomes a 0:0 character device, an opaque marker the
  `trusted.overlay.opaque` xattr. Mounted over the same lower directories, it shows the tree
  the plain apply makes.

Whiteouts and opaque markers apply to lower layers only, wherever they sit in the tar: the
layer's own entries stay (the OCI spec; umoci's flattened unpack agrees).

Safety: nothing is done through a host path. A member's parent directory is opened inside the
root (component by component, O_NOFOLLOW, symlinks resolved as if the root were `/`) and the
member is made there with the *at calls; a member replaces a symlink rather than writing
through it; a hard link's target is a path in the root, never followed at its end; directory
times, set once their entries are in, are set relative to a directory reopened without
following anything and only on the directory the member made.

Limits, so that no layer makes the applier run for hours or fall over: paths (member names,
link targets, and where symlinks lead them) of at most PATH_MAX, 4096 bytes, the most a
syscall takes (Docker and containerd hand whole paths to syscalls: they go no deeper); tar
headers of at most 1 MiB (as Go's archive/tar); and a work budget (`view.Budget`) for layers
built to make every member walk a deep path. Nothing recurses over a tree's depth. The tar
stream is parsed by `tarstream` (lean, big reads; file data written in large chunks).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from imgtool import inroot, whiteout
from imgtool.errors import LayerError, UnsafePath
from imgtool.layer import meta
from imgtool.layer.tarstream import Member, TarReader
from imgtool.layer.view import (
    PATH_MAX,
    Budget,
    Dir,
    Found,
    View,
    is_whiteout,
    join,
    lstat_at,
    set_opaque,
    shown,
    split,
)

Format = Literal["plain", "overlay"]
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
mtime_ns_of = meta.mtime_ns_of


@dataclass
class ApplyStats:
    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0


class _Applier:
    def __init__(self, view: View) -> None:
        self.view = view
        self.overlay = view.overlay
        self.written: set[str] = set()  # resolved paths of this layer's entries and parents
        self.hidden: set[str] = set()  # directories whose lower layers' entries are gone
        self.dir_times: list[tuple[str, int, int, int]] = []  # path, dev, ino, mtime_ns
        self.stats = ApplyStats()

    def member(self, tar: TarReader, m: Member) -> None:
        self.view.budget.member()
        rel = whiteout.clean(m.name)
        if len(os.fsencode(rel)) > PATH_MAX or len(os.fsencode(m.linkname)) > PATH_MAX:
            raise UnsafePath(f"path longer than {PATH_MAX} bytes", shown(rel))
        if rel == "":
            if m.isdir():  # the layer's "." entry: the root directory's own metadata
                self._directory_meta(self.view.root.fd, "", m)
            return
        kind, target = whiteout.classify(rel)
        if kind == "whiteout":
            self.whiteout(target)
        elif kind == "opaque":
            self.opaque(target)
        else:
            self.entry(tar, m, rel)

    def mark_written(self, path: str) -> None:
        """An entry and its parents belong to this layer: whiteouts and opaque markers keep
        them. (The parents of a written path are all written: stop at the first one.)"""
        while path and path not in self.written:
            self.written.add(path)
            path = posixpath.dirname(path)

    # --- entries -------------------------------------------------------------------------

    def entry(self, tar: TarReader, m: Member, rel: str) -> None:
        found = self.view.parent(rel, write=True)
        assert found is not None
        d, name = found
        path = join(d.path, name)
        if d.nbytes + 1 + len(os.fsencode(name)) > PATH_MAX:  # where symlinks led it
            raise UnsafePath(f"path longer than {PATH_MAX} bytes", shown(path))
        f = self.view.lookup(d, name)
        if m.islnk():
            self._hardlink(m, d, name, path, f)
            return
        if m.isdir():
            self._directory(m, d, name, f)
        else:
            self._clear(d, name, f)
            if m.isreg():
                self._file(tar, m, d, name)
            elif m.issym():
                os.symlink(m.linkname, name, dir_fd=d.fd)
                meta.apply(f"{inroot.fd_path(d.fd)}/{name}", meta.of_member(m), m.name, False)
            elif m.ischr() or m.isblk() or m.isfifo():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
                os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=d.fd)
                with inroot.opened(os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=d.fd)) as fd:
                    meta.apply(inroot.fd_path(fd), meta.of_member(m), m.name)
            else:
                raise LayerError(f"unsupported tar entry type {m.type!r}", shown(m.name))
        self.mark_written(path)
        self.stats.entries += 1

    def _clear(self, d: Dir, name: str, f: Found) -> None:
        """Remove what the upper has at `name` (a lower layer's entry is hidden anyway)."""
        if f.upper is None:
            return
        mode = f.upper.st_mode
        if stat.S_ISDIR(mode) or stat.S_ISLNK(mode) or (self.overlay and is_whiteout(f.upper)):
            self.view.cache.clear()  # walks may have gone through it, or stopped at it
        if stat.S_ISDIR(mode):
            inroot.remove(d.fd, name)
        else:
            os.unlink(name, dir_fd=d.fd)

    def _directory(self, m: Member, d: Dir, name: str, f: Found) -> None:
        if f.kind == "dir":  # kept (or copied up): the member only sets its metadata
            fd = self.view.copy_up(d, name, f) if f.upper is None else -1
            if fd < 0:
                fd = os.open(name, _PATH_DIR, dir_fd=d.fd)
        else:
            self._clear(d, name, f)
            os.mkdir(name, 0o700, dir_fd=d.fd)
            fd = os.open(name, _PATH_DIR, dir_fd=d.fd)
            if self.overlay and self.view.lower_shows_dir(d, name):
                set_opaque(fd)  # new and empty where the layer hid a lower directory
        with inroot.opened(fd):
            self._directory_meta(fd, join(d.path, name), m)

    def _directory_meta(self, fd: int, path: str, m: Member) -> None:
        """Owner, xattrs and mode now; the mtime once the directory's entries are in."""
        meta.apply(inroot.fd_path(fd), meta.of_member(m, with_time=False), m.name)
        st = os.fstat(fd)
        self.dir_times.append((path, st.st_dev, st.st_ino, meta.mtime_ns_of(m)))

    def _file(self, tar: TarReader, m: Member, d: Dir, name: str) -> None:
        with inroot.opened(os.open(name, _NEW_FILE, 0o600, dir_fd=d.fd)) as fd:
            self.stats.bytes += tar.write_data(fd)
            meta.apply(fd, meta.of_member(m), m.name)

    def _hardlink(self, m: Member, d: Dir, name: str, path: str, f: Found) -> None:
        """A hard link's target is a path in the root (the layer's or a lower one's), its
        last component not followed; a lower file is copied up first, as overlayfs would."""
        target = whiteout.clean(m.linkname)
        src = self.view.parent(target, write=False) if target else None
        sf = self.view.lookup(*src) if src is not None else Found("absent", None)
        if src is None or sf.kind == "absent":
            raise LayerError("hard link to a file not in the layer or below", shown(m.name))
        if sf.kind == "dir":
            raise LayerError("hard link to a directory", shown(m.name))
        sd, sname = src
        if join(sd.path, sname) == path:
            return  # a hard link to itself: nothing to do
        if sf.upper is None:
            again = self.view.parent(target, write=True)
            assert again is not None
            sd, sname = again
            self.view.copy_up(sd, sname, self.view.lookup(sd, sname))
        self._clear(d, name, f)
        os.link(sname, name, src_dir_fd=sd.fd, dst_dir_fd=d.fd, follow_symlinks=False)
        self.mark_written(path)  # a hard link shares its target's metadata, not its header's

    # --- whiteouts -----------------------------------------------------------------------

    def whiteout(self, target: str) -> None:
        self.stats.whiteouts += 1
        found = self.view.parent(target, write=False)
        if found is None:
            return  # its directory is not there (or is a dead symlink): nothing to delete
        d, name = found
        path = join(d.path, name)
        f = self.view.lookup(d, name)
        if path in self.written:  # the layer's own entry stays; what lower layers have goes
            if f.kind == "dir":
                self.hide_lower(path)
            return
        if f.kind == "absent":
            return
        self.view.cache.clear()
        if self.overlay:
            found = self.view.parent(target, write=True)  # its directory copied up
            assert found is not None
            d, name = found
            f = self.view.lookup(d, name)
        with _times_kept(d.fd):  # a whiteout is no change of the directory
            if f.upper is not None:
                inroot.remove(d.fd, name)
            if self.overlay:
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=d.fd)

    def opaque(self, dirpath: str) -> None:
        d = self.view.open_dir(split(dirpath), write=False)
        if d is not None:  # an opaque marker on a non-directory or on nothing does nothing
            self.hide_lower(d.path)

    def hide_lower(self, path: str) -> None:
        """Below the directory `path`, what lower layers have goes and this layer's own
        entries stay: opaque in overlay format (and the upper's copies of lower directories,
        and its whiteouts, which the opaque directory makes pointless, go)."""
        if path in self.hidden:
            return  # nothing of a lower layer has come back below it since
        self.hidden.add(path)
        self.view.cache.clear()
        d = self.view.open_dir(split(path), write=self.overlay)
        assert d is not None and d.fd >= 0
        if self.overlay and path:
            set_opaque(d.fd)
        with inroot.opened(os.open(inroot.fd_path(d.fd), os.O_RDONLY | os.O_DIRECTORY)) as fd:
            inroot.walk_tree(fd, _Prune(self.written, path, self.view.budget))
        if self.overlay and not path:
            self._whiteout_lower_root(d)  # overlayfs ignores opaque on a layer's root

    def _whiteout_lower_root(self, root: Dir) -> None:
        names: set[str] = set()
        for fd in root.lowers:
            with inroot.opened(os.open(inroot.fd_path(fd), os.O_RDONLY | os.O_DIRECTORY)) as r:
                names.update(os.listdir(r))
        below = Dir("", -1, root.lowers)
        for name in sorted(names):
            if lstat_at(root.fd, name) is None and self.view.lookup(below, name).kind != "absent":
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=root.fd)

    # --- directory times -----------------------------------------------------------------

    def restore_dir_times(self) -> None:
        """Each directory member's mtime, now that its entries are in: set on the directory
        the member made, reached again without following anything (a later member may have
        put a symlink on the way), or not at all."""
        opener = _NoFollowOpener(self.view.root.fd, self.view.budget)
        try:
            for path, dev, ino, mtime_ns in self.dir_times:
                parent, name = posixpath.split(path)
                pfd = opener.open(parent)
                if pfd is None:
                    continue
                st = lstat_at(pfd, name) if name else os.fstat(pfd)  # no name: the root
                if st is None or not stat.S_ISDIR(st.st_mode) or _ident(st) != (dev, ino):
                    continue
                if name:
                    os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
                else:
                    os.utime(inroot.fd_path(pfd), ns=(mtime_ns, mtime_ns))
        finally:
            opener.close()


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def _times_kept(dir_fd: int) -> Iterator[None]:
    path = inroot.fd_path(dir_fd)
    st = os.stat(path)
    yield
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


class _Prune:
    """Below a directory: entries that are not the layer's own go (a tree visitor)."""

    def __init__(self, written: set[str], top: str, budget: Budget) -> None:
        self.written = written
        self.top = top
        self.budget = budget

    def names(self, fd: int, path: str) -> list[str]:
        base = join(self.top, path) if path else self.top
        keep = []
        with os.scandir(fd) as it:
            entries = list(it)
        self.budget.spend(len(entries))
        for e in entries:
            if join(base, e.name) not in self.written:
                inroot.remove(fd, e.name)
            elif e.is_dir(follow_symlinks=False):
                keep.append(e.name)
        return keep

    def entry(self, fd: int, path: str, name: str) -> bool:
        return True

    def leave(self, fd: int, path: str, name: str) -> None:
        pass


class _NoFollowOpener:
    """Directories of the root by resolved path, every component opened with O_NOFOLLOW (a
    symlink or a non-directory on the way: None); recent ones kept open."""

    def __init__(self, root_fd: int, budget: Budget, keep: int = 32) -> None:
        self.root_fd = root_fd
        self.budget = budget
        self.keep = keep
        self.open_fds: OrderedDict[str, int] = OrderedDict()

    def open(self, path: str) -> int | None:
        if not path:
            return self.root_fd
        parts, cur, rest = split(path), self.root_fd, []
        for up in range(min(8, len(parts))):
            hit = self.open_fds.get("/".join(parts[: len(parts) - up]))
            if hit is not None:
                cur, rest = hit, parts[len(parts) - up :]
                break
        else:
            rest = parts
        fd = cur
        self.budget.spend(len(rest))
        for name in rest:
            try:
                nxt = os.open(name, _PATH_DIR, dir_fd=fd)
            except OSError:
                nxt = -1
            if fd != cur:
                os.close(fd)
            if nxt < 0:
                return None
            fd = nxt
        if fd != cur:
            self.open_fds[path] = fd
            while len(self.open_fds) > self.keep:
                os.close(self.open_fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        for fd in self.open_fds.values():
            os.close(fd)
        self.open_fds.clear()


def apply_layer(
    src: BinaryIO, root: Path | str, fmt: Format = "plain", lowers: Sequence[Path | str] = ()
) -> ApplyStats:
    """Apply the uncompressed layer tar read from `src` to `root` (which must exist). In
    overlay format, `lowers` are the overlay-format directories of the layers below, top
    first."""
    fds: list[int] = []
    try:
        fds.append(inroot.open_root(str(root)))
        for lower in lowers if fmt == "overlay" else ():
            fds.append(inroot.open_root(str(lower)))
        view = View(fds[0], fds[1:], fmt == "overlay")
        try:
            return _apply(src, view)
        finally:
            view.close()
    finally:
        for fd in fds:
            os.close(fd)


def _apply(src: BinaryIO, view: View) -> ApplyStats:
    applier = _Applier(view)
    tar = TarReader(src)
    try:
        for m in tar:
            try:
                applier.member(tar, m)
            except OSError as e:
                raise LayerError(f"cannot apply: {e.strerror or e}", shown(m.name)) from None
            finally:
                view.cache.release()
        applier.restore_dir_times()
    except EOFError as e:  # a compressed stream cut short
        raise LayerError(f"invalid archive: {e}") from None
    return applier.stats
