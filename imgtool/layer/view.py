"""The tree a layer is applied to, walked on directory descriptors.

- plain: one directory holding the layers below, flattened.
- overlay: the layer's own directory (the upper) over the directories of the layers below it,
  top first, merged as overlayfs will merge them: a 0:0 character device hides what is below
  it, a non-directory hides everything below it, a directory marked `trusted.overlay.opaque`
  hides the directories below it.

A path is resolved one component at a time with O_NOFOLLOW, in whichever layer shows it; a
symlink, whichever layer holds it, is resolved as if the root were `/`, and `..` never climbs
above the root. Only the upper is written: a lower directory on the way of a write is copied
up first (owner, mode, times, xattrs, as overlayfs does), so that a member written through a
lower layer's symlink, a whiteout reached through one and a parent directory the layer leaves
out give the tree that applying the same layers flattened gives.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from imgtool import inroot, whiteout
from imgtool.errors import UnsafePath
from imgtool.layer import meta

PATH_MAX = 4096  # bytes of a path inside the root, as the kernel takes them (and so Docker)
NAME_SHOWN = 120  # characters of a path quoted in an error
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = _PATH | os.O_DIRECTORY
Kind = Literal["absent", "dir", "symlink", "other"]


def shown(path: str) -> str:
    """A path for a one-line error: pathological ones are thousands of characters long."""
    return path if len(path) <= NAME_SHOWN else f"{path[: NAME_SHOWN // 2]}...{path[-40:]}"


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_opaque(fd: int) -> bool:
    try:
        return os.getxattr(inroot.fd_path(fd), whiteout.OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def set_opaque(fd: int) -> None:
    os.setxattr(inroot.fd_path(fd), whiteout.OVERLAY_OPAQUE_XATTR, b"y")


def _lexical(name: str, todo: list[str]) -> bool:
    """`name` is not a directory here, so what follows it is taken lexically, as containerd
    takes it (`missing/../x` is `x`): rewrites the reversed stack `todo`, `name` pushed back
    on it. True when that cancelled anything."""
    out: list[str] = []
    for comp in [name, *reversed(todo)]:
        if comp == ".." and out and out[-1] != "..":
            out.pop()
        else:
            out.append(comp)
    if len(out) == len(todo) + 1:
        return False
    todo[:] = reversed(out)
    return True


def _kind(st: os.stat_result) -> Kind:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "symlink" if stat.S_ISLNK(st.st_mode) else "other"


class Budget:
    """The work a layer may make its applier do, counted in path components walked and
    entries visited. A layer in any ordinary order costs a few per member; one built so that
    every member walks thousands of components (deep paths in no order, or a cache of open
    directories defeated on purpose) is refused after a few seconds instead of running for
    hours, as a deep layer did before."""

    BASE = 100_000
    PER_MEMBER = 64

    def __init__(self) -> None:
        self.left = self.BASE

    def member(self) -> None:
        self.left += self.PER_MEMBER

    def spend(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise UnsafePath("the layer takes too much work to apply (deep paths in no order)")


@dataclass
class Dir:
    """A directory of the tree, open."""

    path: str  # resolved, relative to the root ('' for the root): no symlink in it
    fd: int  # O_PATH descriptor of the upper's directory; -1 when only lower layers have it
    lowers: tuple[int, ...] = ()  # the lower layers' directories merged into it, top first
    nbytes: int = 0  # len(path) in bytes

    def close(self) -> None:
        for fd in (self.fd, *self.lowers):
            if fd >= 0:
                os.close(fd)


@dataclass(frozen=True)
class Found:
    """What a name in a directory of the tree is."""

    kind: Kind
    upper: os.stat_result | None  # what the upper holds there (a whiteout included)
    holder: int = -1  # the directory (upper or lower) holding the visible entry
    st: os.stat_result | None = None  # the visible entry


class _Cache:
    """Directories recent walks opened, by the path the walk was given: a tar's members of one
    directory come together, so most walks are one lookup. Dropped entries are retired, not
    closed, until the member being applied is done: it may still be using them."""

    MAX_FDS = 64

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str, bool], Dir] = OrderedDict()
        self.retired: list[Dir] = []
        self.fds = 0

    def get(self, key: tuple[str, bool]) -> Dir | None:
        d = self.entries.get(key)
        if d is not None:
            self.entries.move_to_end(key)
        return d

    def put(self, key: tuple[str, bool], d: Dir) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self._retire(old)
        self.entries[key] = d
        self.fds += 1 + len(d.lowers)
        while self.fds > self.MAX_FDS and len(self.entries) > 4:
            self._retire(self.entries.popitem(last=False)[1])

    def _retire(self, d: Dir) -> None:
        self.fds -= 1 + len(d.lowers)
        self.retired.append(d)

    def clear(self) -> None:
        """The tree changed where cached walks may have gone: forget them all."""
        self.retired.extend(self.entries.values())
        self.entries.clear()
        self.fds = 0

    def release(self) -> None:
        for d in self.retired:
            d.close()
        self.retired.clear()


class View:
    """Lookups in, and writes to, the tree rooted at `root_fd` (the upper), seen through
    `lower_fds` (top first) when `overlay`. The caller owns and closes the root descriptors."""

    def __init__(self, root_fd: int, lower_fds: list[int], overlay: bool) -> None:
        self.overlay = overlay
        self.root = Dir("", root_fd, tuple(lower_fds) if overlay else ())
        self.cache = _Cache()
        self.budget = Budget()

    def close(self) -> None:
        self.cache.clear()
        self.cache.release()

    # --- lookups ---------------------------------------------------------------------------

    def lookup(self, d: Dir, name: str) -> Found:
        upper = lstat_at(d.fd, name) if d.fd >= 0 else None
        if upper is not None:
            if self.overlay and is_whiteout(upper):
                return Found("absent", upper)
            return Found(_kind(upper), upper, d.fd, upper)
        for fd in d.lowers:
            st = lstat_at(fd, name)
            if st is None:
                continue
            if is_whiteout(st):
                break
            return Found(_kind(st), None, fd, st)
        return Found("absent", None)

    def lower_shows_dir(self, d: Dir, name: str) -> bool:
        """Whether the layers below show a directory at `name` (a fresh upper directory there
        would merge with it: it has to be opaque to be the new, empty directory it is)."""
        for fd in d.lowers:
            st = lstat_at(fd, name)
            if st is not None:
                return stat.S_ISDIR(st.st_mode)
        return False

    def _lower_dirs(self, d: Dir, name: str, upper_fd: int) -> tuple[int, ...]:
        """The lower directories merged into `d`'s `name` (opened): down to an opaque one,
        stopping at anything that is not a directory."""
        if not d.lowers or (upper_fd >= 0 and is_opaque(upper_fd)):
            return ()
        out: list[int] = []
        try:
            for fd in d.lowers:
                st = lstat_at(fd, name)
                if st is None:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    break
                out.append(os.open(name, _PATH_DIR, dir_fd=fd))
                if is_opaque(out[-1]):
                    break
        except BaseException:
            for fd in out:
                os.close(fd)
            raise
        return tuple(out)

    # --- walks -----------------------------------------------------------------------------

    def parent(self, path: str, write: bool) -> tuple[Dir, str] | None:
        """The directory holding `path`'s last component, and that component (not followed).
        `write`: the directory is made to exist in the upper (missing components become 0755
        directories, a non-directory in the way is replaced, lower directories are copied
        up); otherwise None when the tree has no such directory. The caller does not close
        the Dir: it stays valid until `cache.release()`."""
        parts = split(path)
        d = self.open_dir(parts[:-1], write)
        return None if d is None else (d, parts[-1])

    def open_dir(self, parts: list[str], write: bool) -> Dir | None:
        """The directory `parts` name, every symlink on the way followed inside the root."""
        key = "/".join(parts)
        hit = self.cache.get((key, write)) or (None if write else self.cache.get((key, True)))
        if hit is not None:
            return hit
        start, rest = self._start(parts, write)
        found = self._walk(start, rest, write)
        if found is None:
            return None
        d, owned = found
        if owned:
            self.cache.put((key, write), d)
        return d

    def _start(self, parts: list[str], write: bool) -> tuple[Dir, list[str]]:
        """A cached directory a few components up, where the walk can start."""
        for up in range(1, min(4, len(parts)) + 1):
            key = "/".join(parts[:-up])
            d = self.cache.get((key, True)) or (None if write else self.cache.get((key, False)))
            if d is not None:
                return d, parts[-up:]
        return self.root, parts

    def _walk(self, start: Dir, rest: list[str], write: bool) -> tuple[Dir, bool] | None:
        todo = list(reversed(rest))
        cur, owned = start, False  # owned: a Dir this walk opened (and closes when moving on)
        links, lexical = 0, False
        try:
            while todo:
                name = todo.pop()
                self.budget.spend()
                if name == "..":
                    if cur.path:  # the path has no symlink in it: its parent is lexical
                        up = self.open_dir(split(posixpath.dirname(cur.path)), write)
                        if up is None:
                            return None
                        cur, owned = self._move(cur, owned, up, False)
                    continue
                fd = self._open_plain_dir(cur, name)
                if fd >= 0:  # the common case: one open, no lookup
                    cur, owned = self._move(cur, owned, self._child(cur, name, fd, ()), True)
                    continue
                f = self.lookup(cur, name)
                if f.kind == "symlink":
                    links += 1
                    if links > inroot.MAX_SYMLINKS:
                        raise UnsafePath("too many levels of symbolic links", shown(cur.path))
                    target = os.readlink(name, dir_fd=f.holder)
                    if target.startswith("/"):
                        cur, owned = self._move(cur, owned, self.root, False)
                    todo.extend(reversed(split(target)))
                    lexical = False
                    continue
                if f.kind == "dir":
                    nxt = self._enter(cur, name, f, write)
                elif not lexical and _lexical(name, todo):
                    lexical = True  # all of the rest is lexical now: once is enough
                    continue
                elif not write:
                    return None
                else:
                    nxt = self._make_dir(cur, name, f)
                cur, owned = self._move(cur, owned, nxt, True)
            result, cur, owned = (cur, owned), self.root, False
            return result
        finally:
            if owned:
                cur.close()

    @staticmethod
    def _move(cur: Dir, owned: bool, nxt: Dir, nxt_owned: bool) -> tuple[Dir, bool]:
        if owned:
            cur.close()
        return nxt, nxt_owned

    @staticmethod
    def _open_plain_dir(cur: Dir, name: str) -> int:
        """`name` opened when it is a directory of the upper with nothing below it, else -1."""
        if cur.lowers or cur.fd < 0:
            return -1
        try:
            return os.open(name, _PATH_DIR, dir_fd=cur.fd)
        except OSError:
            return -1  # missing, a symlink (ELOOP), not a directory: the lookup says which

    def _child(self, cur: Dir, name: str, fd: int, lowers: tuple[int, ...]) -> Dir:
        size = cur.nbytes + len(os.fsencode(name)) + (1 if cur.path else 0)
        d = Dir(join(cur.path, name), fd, lowers, size)
        if size > PATH_MAX:
            d.close()
            raise UnsafePath(f"path longer than {PATH_MAX} bytes", shown(d.path))
        return d

    def _enter(self, cur: Dir, name: str, f: Found, write: bool) -> Dir:
        if f.upper is not None:
            fd = os.open(name, _PATH_DIR, dir_fd=cur.fd)
        elif write:
            fd = self.copy_up(cur, name, f)
        else:
            fd = -1
        try:
            lowers = self._lower_dirs(cur, name, fd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return self._child(cur, name, fd, lowers)

    def _make_dir(self, cur: Dir, name: str, f: Found) -> Dir:
        """A missing directory on the way of a write (`mkdir -p`), replacing a non-directory."""
        if f.upper is not None:
            if is_whiteout(f.upper):
                self.cache.clear()
            os.unlink(name, dir_fd=cur.fd)
        os.mkdir(name, 0o755, dir_fd=cur.fd)
        fd = os.open(name, _PATH_DIR, dir_fd=cur.fd)
        os.chmod(inroot.fd_path(fd), 0o755)  # whatever the umask
        if self.overlay and self.lower_shows_dir(cur, name):
            set_opaque(fd)  # new and empty where a lower directory was hidden
        return self._child(cur, name, fd, ())

    # --- copy-up ---------------------------------------------------------------------------

    def copy_up(self, d: Dir, name: str, f: Found) -> int:
        """Copy the lower entry `f` (named `name` in `d`) into the upper's `d`, with its owner,
        mode, times and xattrs. Returns an O_PATH descriptor of a directory, else -1."""
        assert f.st is not None and f.holder >= 0 and d.fd >= 0
        st, src = f.st, f.holder
        source = meta.of_file(f"{inroot.fd_path(src)}/{name}", st, stat.S_ISLNK(st.st_mode))
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=d.fd)
            fd = os.open(name, _PATH_DIR, dir_fd=d.fd)
            meta.apply(inroot.fd_path(fd), source, name)
            return fd
        if stat.S_ISREG(st.st_mode):
            self._copy_file(src, d.fd, name, source)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=d.fd)
            meta.apply(f"{inroot.fd_path(d.fd)}/{name}", source, name, follow=False)
        else:
            os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=d.fd)
            with inroot.opened(os.open(name, _PATH, dir_fd=d.fd)) as fd:
                meta.apply(inroot.fd_path(fd), source, name)
        return -1

    @staticmethod
    def _copy_file(src_dir: int, dst_dir: int, name: str, source: meta.Meta) -> None:
        rd = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        wr = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with (
            inroot.opened(os.open(name, rd, dir_fd=src_dir)) as i,
            inroot.opened(os.open(name, wr, 0o600, dir_fd=dst_dir)) as o,
        ):
            _copy_data(i, o)
            meta.apply(o, source, name)


def _copy_data(i: int, o: int) -> None:
    try:
        while os.copy_file_range(i, o, 1 << 30):
            pass
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(i, 1 << 20):  # the kernel cannot copy between these two
        while chunk:
            chunk = chunk[os.write(o, chunk) :]
