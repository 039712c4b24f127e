"""OCI whiteout naming and member path rules (pure).

`dir/.wh.NAME` deletes `dir/NAME` of lower layers; `dir/.wh..wh..opq` makes `dir` opaque: lower
layers' children of `dir` are hidden, entries of the same layer never are.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from imgtool.errors import InvalidWhiteout

PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
# overlayfs's private xattrs (its own mounts use trusted.*, `userxattr` mounts user.*): never
# image content, so never read from a layer nor written into one
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

Kind = Literal["entry", "whiteout", "opaque"]


def clean(name: str) -> str:
    """A member name as a path relative to the root, '' for the root itself.

    Lexical, as containerd does (path.Clean of "/" + name): `../x`, `/../x` and `/x` all mean
    `x`; whatever they say, member paths never leave the root.
    """
    return posixpath.normpath("/" + name).lstrip("/") if name else ""


def classify(path: str) -> tuple[Kind, str]:
    """(kind, target): for a whiteout the path it deletes, for an opaque marker its directory."""
    parent, base = posixpath.split(path)
    if base == OPAQUE:
        return "opaque", parent
    if base.startswith(PREFIX):
        target = base[len(PREFIX) :]
        if target in ("", ".", ".."):
            raise InvalidWhiteout("invalid archive: whiteout with no name", path)
        return "whiteout", posixpath.join(parent, target)
    return "entry", path


def whiteout_name(path: str) -> str:
    """The tar name that deletes `path`."""
    parent, base = posixpath.split(path)
    return posixpath.join(parent, PREFIX + base)


def opaque_name(directory: str) -> str:
    return posixpath.join(directory, OPAQUE)
