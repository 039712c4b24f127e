"""A layer tar from a directory in overlay format (a RUN step's upper dir, or a COPY's staging
dir): 0:0 character devices become `.wh.` whiteouts, opaque directories get `.wh..wh..opq`.

The tar is deterministic: entries sorted (parents before children), numeric owners with no
names, no atime/ctime records, mtimes clamped to SOURCE_DATE_EPOCH when given (whiteouts at
0), hard links within the layer written once and linked after.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imgtool import inroot, whiteout
from imgtool.errors import LayerError
from imgtool.layer.view import PATH_MAX, shown

SKIP_XATTR_PREFIXES = whiteout.OVERLAY_XATTR_PREFIXES


@dataclass
class LayerTar:
    diff_id: str
    size: int
    entries: int


class _HashingSink:
    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        pass


def _is_opaque(path: str) -> bool:
    for ns in ("trusted", "user"):
        try:
            if os.getxattr(path, f"{ns}.overlay.opaque", follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _is_xattr_whiteout(path: str, st: os.stat_result) -> bool:
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
        return False
    for ns in ("trusted", "user"):
        try:
            os.getxattr(path, f"{ns}.overlay.whiteout", follow_symlinks=False)
            return True
        except OSError:
            continue
    return False


def write_layer(
    root: Path, sink: BinaryIO, epoch: int | None = None, skip: Callable[[str], bool] | None = None
) -> LayerTar:
    """Write the layer for the overlay-format directory `root` to `sink`. The tree is walked
    on descriptors, one open at a time (it is a container's: any depth, any symlinks); a path
    longer than PATH_MAX is refused, as applying the layer would refuse it."""
    out = _HashingSink(sink)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        writer = _Writer(tar, epoch, skip)
        with inroot.opened(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)) as fd:
            inroot.walk_tree(fd, writer)
    return LayerTar("sha256:" + out.hash.hexdigest(), out.size, writer.count)


class _Writer:
    """Each entry of the upper dir as tar members, sorted, a directory before what it holds
    (a tree visitor)."""

    def __init__(
        self, tar: tarfile.TarFile, epoch: int | None, skip: Callable[[str], bool] | None
    ) -> None:
        self.tar = tar
        self.epoch = epoch
        self.skip = skip
        self.links: dict[tuple[int, int], str] = {}
        self.count = 0

    def names(self, fd: int, path: str) -> list[str]:
        return sorted(os.listdir(fd))

    def leave(self, fd: int, path: str, name: str) -> None:
        pass

    def entry(self, fd: int, path: str, name: str) -> bool:
        rel = f"{path}/{name}" if path else name
        if len(os.fsencode(rel)) > PATH_MAX:
            raise LayerError(f"path longer than {PATH_MAX} bytes", shown(rel))
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if self.skip is not None and self.skip(rel):
            return stat.S_ISDIR(st.st_mode)  # left out, what it holds asked about one by one
        where = f"{inroot.fd_path(fd)}/{name}"  # the entry itself, never followed
        if (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or _is_xattr_whiteout(where, st):
            self._add(self._marker(whiteout.whiteout_name(rel)))
            return False
        ti = self._header(rel, where, st)
        if ti is None:
            return False  # sockets are not part of a layer
        if ti.type == tarfile.REGTYPE and ti.size:
            rd = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(name, rd, dir_fd=fd), "rb") as data:
                self._add(ti, data)
        else:
            self._add(ti)
        if stat.S_ISDIR(st.st_mode) and _is_opaque(where):
            self._add(self._marker(whiteout.opaque_name(rel)))
        return stat.S_ISDIR(st.st_mode)

    def _add(self, ti: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
        self.tar.addfile(ti, data)
        self.count += 1

    @staticmethod
    def _marker(name: str) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.mtime, ti.mode = 0, 0o600
        return ti

    def _header(self, rel: str, where: str, st: os.stat_result) -> tarfile.TarInfo | None:
        ti = tarfile.TarInfo(rel + ("/" if stat.S_ISDIR(st.st_mode) else ""))
        ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
        ti.mode = stat.S_IMODE(st.st_mode)
        sec, ns = divmod(st.st_mtime_ns, 1_000_000_000)
        if self.epoch is not None and sec >= self.epoch:
            sec, ns = self.epoch, 0
        ti.mtime = sec
        pax: dict[str, str] = {}
        if ns:
            pax["mtime"] = f"{sec}.{ns:09d}".rstrip("0")
        for key in os.listxattr(where, follow_symlinks=False):
            if not key.startswith(SKIP_XATTR_PREFIXES):
                value = os.getxattr(where, key, follow_symlinks=False)
                pax["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
        ti.pax_headers = pax
        if stat.S_ISDIR(st.st_mode):
            ti.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(where)
        elif stat.S_ISREG(st.st_mode):
            ident = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and ident in self.links:
                ti.type, ti.linkname = tarfile.LNKTYPE, self.links[ident]
            else:
                self.links[ident] = rel
                ti.size = st.st_size
        elif stat.S_ISFIFO(st.st_mode):
            ti.type = tarfile.FIFOTYPE
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        else:
            return None
        return ti
