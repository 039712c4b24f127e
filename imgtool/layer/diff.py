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

from imgtool import whiteout

SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


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
    """Write the layer for the overlay-format directory `root` to `sink`."""
    out = _HashingSink(sink)
    links: dict[tuple[int, int], str] = {}
    count = 0

    def clamp(mtime_ns: int) -> tuple[int, int]:
        sec, ns = divmod(mtime_ns, 1_000_000_000)
        if epoch is not None and sec >= epoch:
            return epoch, 0
        return sec, ns

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for rel in _walk(root):
            if skip is not None and skip(rel):
                continue
            path = os.path.join(root, rel)
            st = os.lstat(path)
            if (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or _is_xattr_whiteout(path, st):
                ti = tarfile.TarInfo(whiteout.whiteout_name(rel))
                ti.mtime, ti.mode = 0, 0o600
                tar.addfile(ti)
                count += 1
                continue
            ti = tarfile.TarInfo(rel + ("/" if stat.S_ISDIR(st.st_mode) else ""))
            ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
            ti.mode = stat.S_IMODE(st.st_mode)
            sec, ns = clamp(st.st_mtime_ns)
            ti.mtime = sec
            if ns:
                ti.pax_headers["mtime"] = f"{sec}.{ns:09d}".rstrip("0")
            for key in os.listxattr(path, follow_symlinks=False):
                if key.startswith(SKIP_XATTR_PREFIXES):
                    continue
                value = os.getxattr(path, key, follow_symlinks=False)
                ti.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
            data = None
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    ti.type, ti.linkname = tarfile.LNKTYPE, links[key]
                else:
                    links[key] = rel
                    ti.size = st.st_size
                    data = open(path, "rb")  # noqa: SIM115 - closed below
            elif stat.S_ISFIFO(st.st_mode):
                ti.type = tarfile.FIFOTYPE
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            else:
                continue  # sockets are not part of a layer
            try:
                tar.addfile(ti, data)
            finally:
                if data is not None:
                    data.close()
            count += 1
            if stat.S_ISDIR(st.st_mode) and _is_opaque(path):
                marker = tarfile.TarInfo(whiteout.opaque_name(rel))
                marker.mtime, marker.mode = 0, 0o600
                tar.addfile(marker)
                count += 1
    return LayerTar("sha256:" + out.hash.hexdigest(), out.size, count)


def _walk(root: Path) -> list[str]:
    """Every path below root, sorted so that a directory comes before what it holds."""
    out: list[str] = []

    def visit(rel: str) -> None:
        path = os.path.join(root, rel) if rel else str(root)
        try:
            names = sorted(os.listdir(path))
        except NotADirectoryError:
            return
        for name in names:
            child = f"{rel}/{name}" if rel else name
            out.append(child)
            if os.path.isdir(os.path.join(root, child)) and not os.path.islink(
                os.path.join(root, child)
            ):
                visit(child)

    visit("")
    return out
