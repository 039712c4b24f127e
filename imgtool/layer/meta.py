"""File metadata as a layer gives it (owner, mode, xattrs, mtime), set on what a descriptor
holds: a real descriptor for regular files and directories, `/proc/self/fd/N` of an O_PATH
descriptor for devices and fifos (opening those would open the device), and
`/proc/self/fd/<parent>/<name>` without following for symlinks. Never a host-side path join.

Overlay's private xattrs (`trusted.overlay.*`, `user.overlay.*`) are dropped wherever they come
from, a tar member or a lower layer being copied up: they are overlayfs's bookkeeping (opaque
directories, whiteouts, redirects), which the kernel neither shows to nor lets a container
set, so they are never image content; honoured in a layer directory they would let a layer
hide or redirect lower layers' files behind the back of the `.wh.` rules. Stripped rather than
refused: tools that tar an overlay upper directory carelessly leak them into otherwise good
layers, and `diff` never writes them either.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass

from imgtool import whiteout
from imgtool.errors import LayerError
from imgtool.layer.tarstream import Member

XATTR_PREFIX = "SCHILY.xattr."
Where = int | str  # a real descriptor, or a /proc/self/fd path


@dataclass(frozen=True)
class Meta:
    uid: int
    gid: int
    mode: int | None  # permission bits; None for a symlink (they have none)
    xattrs: tuple[tuple[str, bytes], ...] = ()
    mtime_ns: int | None = None  # None: set later (directories, once their entries are in)
    atime_ns: int | None = None  # None: the mtime


def mtime_ns_of(m: Member) -> int:
    """The member's mtime in nanoseconds, exactly (as a float, a PAX time would lose the last
    digits of a nanosecond time)."""
    text = m.pax_headers.get("mtime")
    if text:
        sign = -1 if text.startswith("-") else 1
        whole, _, frac = text.lstrip("-").partition(".")
        with contextlib.suppress(ValueError):
            return sign * (int(whole or 0) * 1_000_000_000 + int((frac + "0" * 9)[:9]))
    return int(m.mtime) * 1_000_000_000 if m.mtime else 0


def of_member(m: Member, with_time: bool = True) -> Meta:
    xattrs = []
    for key, value in m.pax_headers.items():
        if key.startswith(XATTR_PREFIX):
            name = key[len(XATTR_PREFIX) :]
            if not name.startswith(whiteout.OVERLAY_XATTR_PREFIXES):
                # PAX values are decoded as UTF-8 with surrogateescape: binary values survive
                xattrs.append((name, value.encode("utf-8", "surrogateescape")))
    mode = None if m.issym() else m.mode & 0o7777
    return Meta(m.uid, m.gid, mode, tuple(xattrs), mtime_ns_of(m) if with_time else None)


def of_file(where: str, st: os.stat_result, is_link: bool) -> Meta:
    """What a lower layer's entry has (a copy-up takes it): `where` a /proc path, unfollowed."""
    xattrs = []
    for key in os.listxattr(where, follow_symlinks=False):
        if not key.startswith(whiteout.OVERLAY_XATTR_PREFIXES):
            xattrs.append((key, os.getxattr(where, key, follow_symlinks=False)))
    mode = None if is_link else st.st_mode & 0o7777
    return Meta(st.st_uid, st.st_gid, mode, tuple(xattrs), st.st_mtime_ns, st.st_atime_ns)


def apply(where: Where, meta: Meta, member: str, follow: bool = True) -> None:
    """Owner, xattrs, mode, times, in that order: chown clears setuid bits and file
    capabilities, so it goes first. `follow=False` for a symlink's own /proc path."""
    follow = follow or isinstance(where, int)  # a descriptor is the file itself
    try:
        os.chown(where, meta.uid, meta.gid, follow_symlinks=follow)
    except PermissionError:
        if os.geteuid() == 0:
            raise
    for key, value in meta.xattrs:
        _setxattr(where, key, value, member, follow)
    if meta.mode is not None:
        os.chmod(where, meta.mode)
    if meta.mtime_ns is not None:
        atime = meta.mtime_ns if meta.atime_ns is None else meta.atime_ns
        os.utime(where, ns=(atime, meta.mtime_ns), follow_symlinks=follow)


def _setxattr(where: Where, key: str, value: bytes, member: str, follow: bool) -> None:
    try:
        os.setxattr(where, key, value, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) and (
            key.startswith("user.") or os.geteuid() != 0
        ):
            return  # user.* xattrs are not allowed on symlinks and devices
        raise LayerError(f"cannot set xattr {key}: {e.strerror}", member) from None
