"""`imgtool build`: the engine and its steps (see engine.py); the cache seam (see cache.py)."""

from imgtool.builder.cache import CacheEntry, CacheSource, cache_mount_dir
from imgtool.builder.common import BuildOptions, BuildResult, Layer, read_containerfile
from imgtool.builder.engine import Builder, build

__all__ = [
    "BuildOptions",
    "BuildResult",
    "Builder",
    "CacheEntry",
    "CacheSource",
    "Layer",
    "build",
    "cache_mount_dir",
    "read_containerfile",
]
