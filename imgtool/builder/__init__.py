"""`imgtool build`: the engine and its steps (see engine.py)."""

from imgtool.builder.common import BuildOptions, BuildResult, read_containerfile
from imgtool.builder.engine import Builder, build

__all__ = ["BuildOptions", "BuildResult", "Builder", "build", "read_containerfile"]
