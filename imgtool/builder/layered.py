"""A stage's filesystem as its unpacked layers make it, looked up without mounting anything.

The layers are overlay lower dirs (whiteouts are 0/0 character devices, opaque directories
carry `trusted.overlay.opaque`). A path is resolved component by component across the stack,
as overlayfs would merge it, inside the image's root: a symlink in one layer is read there and
resolved from the image's `/` (never the host's), its target's directories may come from any
layer. Every directory of every layer is opened with O_NOFOLLOW from the layer's own root. The
builder asks this what a COPY's destination or a RUN mount's target leads to, whether they
exist, and reads the image's /etc/passwd and /etc/group through it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imgtool import inroot, whiteout
from imgtool.builder.sourcetree import Comps, split
from imgtool.errors import BuildError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Found:
    comps: Comps  # the resolved path in the image, no symlink in it (but a final one kept)
    st: os.stat_result | None  # None: nothing there (the missing part is in comps)
    layer: int = -1  # which layer (index, lowest first) holds it


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, whiteout.OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _clean(parts: tuple[str, ...]) -> Comps:
    """`..` taken lexically in a path's missing part, never above the root."""
    out: list[str] = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()
        else:
            out.append(p)
    return tuple(out)


class LayerStack:
    def __init__(self, diff_dirs: list[Path]) -> None:
        self.dirs = [str(d) for d in diff_dirs]  # lowest first

    def _dirs_of(self, comps: Comps) -> Iterator[tuple[int, int]]:
        """(layer, open directory) for each layer whose `comps` shows through, top first."""
        for index in reversed(range(len(self.dirs))):
            fd, hides_lower = self._open_in(index, comps)
            if fd is not None:
                try:
                    yield index, fd
                finally:
                    os.close(fd)
            if hides_lower:
                return

    def _open_in(self, index: int, comps: Comps) -> tuple[int | None, bool]:
        """The directory `comps` in one layer (None if that layer has none), and whether the
        layer hides the lower ones there: a non-directory on the way, or an opaque directory
        (the layer's own entries below it still count)."""
        try:
            cur = os.open(self.dirs[index], _DIR)
        except OSError:
            return None, False
        hides = False
        for name in comps:
            try:
                nxt = os.open(name, _DIR, dir_fd=cur)
            except OSError as e:  # missing; or a file, symlink or whiteout over the directory
                os.close(cur)
                return None, hides or e.errno in (errno.ENOTDIR, errno.ELOOP)
            os.close(cur)
            cur = nxt
            hides = hides or _is_opaque(cur)
        return cur, hides

    def _entry(self, parent: Comps, name: str) -> tuple[int, os.stat_result] | None:
        for index, fd in self._dirs_of(parent):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            return None if _is_whiteout(st) else (index, st)
        return None

    def _readlink(self, index: int, parent: Comps, name: str) -> str:
        fd, _ = self._open_in(index, parent)
        if fd is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/".join((*parent, name)))
        with inroot.opened(fd):
            return os.readlink(name, dir_fd=fd)

    def lookup(self, path: str, follow_last: bool = True) -> Found:
        """What `path` leads to in the image; for a path that leads nowhere, where it would be
        made (the kernel's resolution with the missing part appended)."""
        if "\0" in path:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path.replace("\0", "\\0"))
        todo = split(path)
        done: list[str] = []
        links = 0
        found: tuple[int, os.stat_result] | None = None
        while todo:
            name = todo.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            found = self._entry(tuple(done), name)
            if found is None:
                return Found(_clean((*done, name, *todo)), None)
            index, st = found
            last = not todo
            if stat.S_ISLNK(st.st_mode) and (follow_last or not last):
                links += 1
                if links > inroot.MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = self._readlink(index, tuple(done), name)
                if target.startswith("/"):
                    done = []
                todo[:0] = split(target)
                continue
            if not last and not stat.S_ISDIR(st.st_mode):
                return Found(_clean((*done, name, *todo)), None)
            done.append(name)
        if found is None:  # the root itself
            return Found((), os.stat(self.dirs[-1]) if self.dirs else None)
        return Found(tuple(done), found[1], found[0])

    def read(self, path: str) -> bytes | None:
        """A regular file's content (symlinks followed inside the image), or None."""
        f = self.lookup(path)
        if f.st is None or not stat.S_ISREG(f.st.st_mode):
            return None
        fd, _ = self._open_in(f.layer, f.comps[:-1])
        if fd is None:
            return None
        with inroot.opened(fd):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            with inroot.opened(os.open(f.comps[-1], flags, dir_fd=fd)) as rfd:
                if not stat.S_ISREG(os.fstat(rfd).st_mode):
                    return None
                chunks = []
                while chunk := os.read(rfd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)


def owner_in(stack: LayerStack, spec: str, what: str = "--chown") -> tuple[int, int]:
    """USER[:GROUP] as numbers: names looked up in the image's /etc/passwd and /etc/group."""
    user, _, group = spec.partition(":")

    def lookup(db: str, name: str, field_: int) -> int:
        if name.isdigit():
            return int(name)
        text = (stack.read(f"/etc/{db}") or b"").decode(errors="replace")
        for line in text.splitlines():
            parts = line.split(":")
            if parts and parts[0] == name and len(parts) > field_ and parts[field_].isdigit():
                return int(parts[field_])
        raise BuildError(
            f"{what}: no {'user' if db == 'passwd' else 'group'} {name!r} in the image's /etc/{db}"
        )

    uid = lookup("passwd", user, 2)
    if group:
        return uid, lookup("group", group, 2)
    return uid, int(user) if user.isdigit() else lookup("passwd", user, 3)


def parents_like_lowers(stack: LayerStack, stage: int, dest: str) -> None:
    """The parent directories a step creates in its staging directory (`stage`, open) carry
    the metadata they already have below, so that a COPY does not change /usr/local/bin's
    mode or time."""
    parts = split(dest)
    if not dest.endswith("/"):
        parts = parts[:-1]
    for i in range(1, len(parts) + 1):
        rel = "/".join(parts[:i])
        below = stack.lookup(rel, follow_last=False)
        if below.st is None or not stat.S_ISDIR(below.st.st_mode):
            continue
        with inroot.opened(inroot.walk(stage, rel, follow_last=False)) as fd:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                continue
            here = inroot.fd_path(fd)
            os.chown(here, below.st.st_uid, below.st.st_gid)
            os.chmod(here, stat.S_IMODE(below.st.st_mode))
            os.utime(here, ns=(below.st.st_atime_ns, below.st.st_mtime_ns))
