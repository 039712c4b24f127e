"""`imgtool build`: the engine and its steps (see engine.py)."""

from imgtool.build.common import BuildOptions, BuildResult, read_containerfile
from imgtool.build.engine import Builder, build

__all__ = ["BuildOptions", "BuildResult", "Builder", "build", "read_containerfile"]
