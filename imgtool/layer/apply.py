"""Applying a layer tar to a directory, safely.

Two formats:
- "plain": the layer is applied onto a root that holds the layers below it (whiteouts delete,
  opaque markers remove lower children): a flattened rootfs, as `umoci unpack` makes.
- "overlay": the directory is an overlayfs layer of its own: a whiteout becomes the 0:0
  character device, an opaque marker the `trusted.overlay.opaque` xattr.

Safety: every member path is resolved inside the root with chroot semantics (symlinks are
followed, but `..` and absolute targets never climb above the root); the final component is
never followed, so a member replaces a symlink instead of writing through it; hard links must
point at something already in the root. Python's tarfile does the parsing only: it neither
applies `SCHILY.xattr.*` records nor handles whiteouts, and its extraction filters are not made
for layers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from imgtool import whiteout
from imgtool.errors import LayerError, UnsafePath

Format = Literal["plain", "overlay"]
MAX_SYMLINKS = 255
XATTR_PREFIX = "SCHILY.xattr."
COPY_CHUNK = 1 << 20


@dataclass
class ApplyStats:
    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0


@dataclass
class _Layer:
    root: str
    fmt: Format
    written: set[str] = field(default_factory=set)  # paths this layer created
    opaque: set[str] = field(default_factory=set)  # dirs this layer made opaque (overlay)
    dir_times: list[tuple[str, int]] = field(default_factory=list)
    stats: ApplyStats = field(default_factory=ApplyStats)


def resolve(root: str, rel: str, follow_last: bool = True) -> str:
    """The host path of `rel` inside `root`, resolving symlinks as if `root` were `/`."""
    parts = [p for p in rel.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while parts:
        comp = parts.pop(0)
        if comp == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, comp)
        is_last = not parts
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            done.append(comp)
            continue
        except NotADirectoryError:
            done.append(comp)
            continue
        if stat.S_ISLNK(st.st_mode) and (follow_last or not is_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise UnsafePath("too many levels of symbolic links", rel)
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(comp)
    return os.path.join(root, *done)


def _is_whiteout_dev(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _lexists(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class _Applier:
    def __init__(self, layer: _Layer) -> None:
        self.l = layer

    def rel_of(self, host: str) -> str:
        return os.path.relpath(host, self.l.root) if host != self.l.root else ""

    def ensure_dir(self, host: str, create: bool = True) -> bool:
        """Make `host` (already resolved) a directory, creating missing parents; a
        non-directory in the way is replaced. Returns False when it is missing and
        `create` is off."""
        rel = self.rel_of(host)
        cur = self.l.root
        for comp in [p for p in rel.split("/") if p]:
            cur = os.path.join(cur, comp)
            st = _lexists(cur)
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            if not create:
                return False
            was_whiteout = st is not None and _is_whiteout_dev(st)
            if st is not None:
                os.unlink(cur)
            os.mkdir(cur, 0o755)
            self.l.written.add(self.rel_of(cur))
            if was_whiteout and self.l.fmt == "overlay":
                self.make_opaque(cur)
        return True

    def make_opaque(self, host: str) -> None:
        os.setxattr(host, whiteout.OVERLAY_OPAQUE_XATTR, b"y", follow_symlinks=False)
        rel = self.rel_of(host)
        self.l.opaque.add(rel)
        # whiteouts of this layer below an opaque directory are redundant: drop them
        for dirpath, dirnames, filenames in os.walk(host):
            for name in filenames + dirnames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if _is_whiteout_dev(st):
                    os.unlink(p)

    def under_opaque(self, rel: str) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[:i]) in self.l.opaque for i in range(1, len(parts)))

    def apply_whiteout(self, rel_target: str) -> None:
        parent_rel, name = os.path.split(rel_target)
        parent = resolve(self.l.root, parent_rel)
        self.l.stats.whiteouts += 1
        if self.l.fmt == "plain":
            st = _lexists(parent)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return  # nothing below to delete (e.g. the parent is a dead symlink)
            target = os.path.join(parent, name)
            if _lexists(target) is None or self.rel_of(target) in self.l.written:
                return  # whiteouts delete what lower layers have, never this layer's entries
            # keep the parent's times: a whiteout is not a change of the directory
            pst = os.stat(parent)
            _remove(target)
            os.utime(parent, ns=(pst.st_atime_ns, pst.st_mtime_ns))
            return
        self.ensure_dir(parent)
        target = os.path.join(parent, name)
        if self.under_opaque(self.rel_of(target)):
            _remove(target)
            return
        _remove(target)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        self.l.written.add(self.rel_of(target))

    def apply_opaque(self, rel_dir: str) -> None:
        host = resolve(self.l.root, rel_dir)
        if self.l.fmt == "overlay":
            self.ensure_dir(host)
            self.make_opaque(host)
            return
        st = _lexists(host)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        self._remove_lower(host)

    def _remove_lower(self, host: str) -> None:
        for name in os.listdir(host):
            p = os.path.join(host, name)
            if self.rel_of(p) not in self.l.written:
                _remove(p)
            elif os.path.isdir(p) and not os.path.islink(p):
                self._remove_lower(p)

    def apply_entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str) -> None:
        parent_rel, name = os.path.split(rel)
        parent = resolve(self.l.root, parent_rel)
        self.ensure_dir(parent)
        dest = os.path.join(parent, name)
        st = _lexists(dest)
        keep_dir = st is not None and stat.S_ISDIR(st.st_mode) and m.isdir()
        was_whiteout = st is not None and _is_whiteout_dev(st)
        if st is not None and not keep_dir:
            if m.islnk() and self._link_source(m) == dest:
                return  # a hard link to itself: nothing to do
            _remove(dest)
        if m.isreg():
            self._write_file(tar, m, dest)
        elif m.isdir():
            if not keep_dir:
                os.mkdir(dest, 0o700)
                if was_whiteout and self.l.fmt == "overlay":
                    self.make_opaque(dest)
        elif m.issym():
            os.symlink(m.linkname, dest)
        elif m.islnk():
            src = self._link_source(m)
            sst = _lexists(src)
            if sst is None:
                raise LayerError("hard link to a file not in the layer or below", m.name)
            if stat.S_ISDIR(sst.st_mode):
                raise LayerError("hard link to a directory", m.name)
            os.link(src, dest, follow_symlinks=False)
            self.mark_written(self.rel_of(dest))
            return  # a hard link shares its target's metadata; its header's is not applied
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(dest, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(dest, 0o600)
        else:
            raise LayerError(f"unsupported tar entry type {m.type!r}", m.name)
        self._metadata(m, dest)
        self.mark_written(self.rel_of(dest))
        self.l.stats.entries += 1

    def mark_written(self, rel: str) -> None:
        """An entry and its ancestors belong to this layer: an opaque marker keeps them."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            self.l.written.add("/".join(parts[:i]))

    def _link_source(self, m: tarfile.TarInfo) -> str:
        return resolve(self.l.root, whiteout.clean(m.linkname), follow_last=False)

    def _write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, dest: str) -> None:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            src = tar.extractfile(m)
            if src is not None:
                shutil.copyfileobj(src, out, COPY_CHUNK)
        self.l.stats.bytes += m.size

    def _metadata(self, m: tarfile.TarInfo, dest: str) -> None:
        is_link = m.issym()
        try:
            os.lchown(dest, m.uid, m.gid)
        except PermissionError:
            if os.geteuid() == 0:
                raise
        for key, value in m.pax_headers.items():
            if key.startswith(XATTR_PREFIX):
                self._setxattr(dest, key[len(XATTR_PREFIX) :], value, m.name)
        if not is_link:
            os.chmod(dest, stat.S_IMODE(m.mode))  # after chown, which clears setuid bits
        mtime_ns = mtime_ns_of(m)
        if m.isdir():
            self.l.dir_times.append((dest, mtime_ns))
        else:
            os.utime(dest, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _setxattr(self, dest: str, key: str, value: str, member: str) -> None:
        # tarfile decodes PAX values as UTF-8 with surrogateescape: binary values survive
        raw = value.encode("utf-8", "surrogateescape")
        try:
            os.setxattr(dest, key, raw, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) and (
                key.startswith("user.") or os.geteuid() != 0
            ):
                return  # user.* xattrs are not allowed on symlinks and devices
            raise LayerError(f"cannot set xattr {key}: {e.strerror}", member) from None


def mtime_ns_of(m: tarfile.TarInfo) -> int:
    """The member's mtime in nanoseconds, exactly: tarfile gives PAX times as floats, which
    lose the last digits of a nanosecond time."""
    text = m.pax_headers.get("mtime")
    if text:
        sign = -1 if text.startswith("-") else 1
        whole, _, frac = text.lstrip("-").partition(".")
        with contextlib.suppress(ValueError):
            return sign * (int(whole or 0) * 1_000_000_000 + int((frac + "0" * 9)[:9]))
    return int(m.mtime) * 1_000_000_000 if m.mtime else 0


def apply_layer(src: BinaryIO, root: Path | str, fmt: Format = "plain") -> ApplyStats:
    """Apply the uncompressed layer tar read from `src` to `root` (which must exist)."""
    layer = _Layer(os.path.realpath(root), fmt)
    applier = _Applier(layer)
    try:
        with tarfile.open(fileobj=src, mode="r|", errorlevel=2) as tar:
            for m in tar:
                _apply_member(applier, tar, m)
    except tarfile.TarError as e:
        raise LayerError(f"invalid archive: {e}") from None
    for path, mtime_ns in reversed(layer.dir_times):
        with contextlib.suppress(FileNotFoundError):
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    return layer.stats


def _apply_member(applier: _Applier, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
    rel = whiteout.clean(m.name)
    if rel == "":
        if m.isdir():  # the layer's "." entry: the root directory's own metadata
            applier._metadata(m, applier.l.root)
        return
    kind, target = whiteout.classify(rel)
    if kind == "whiteout":
        applier.apply_whiteout(target)
    elif kind == "opaque":
        applier.apply_opaque(target)
    else:
        applier.apply_entry(tar, m, rel)
