"""The gates privileged tests share: they skip, saying why, where the machine cannot run them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def has_overlayfs() -> bool:
    filesystems = Path("/proc/filesystems")
    return filesystems.exists() and "overlay" in filesystems.read_text()


def needs_root(why: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason=f"{why} need root")


NEEDS_OVERLAYFS = pytest.mark.skipif(not has_overlayfs(), reason="the kernel has no overlayfs")
# containers: namespaces and mounts as root, the root file system an overlay
CONTAINERS = [needs_root("containers (namespaces, mounts)"), NEEDS_OVERLAYFS]
