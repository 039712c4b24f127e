"""`imgtool build`: the engine and its steps (see engine.py)."""

from imgtool.build.common import BuildOptions, BuildResult, _default_file
from imgtool.build.engine import Builder, build

__all__ = ["BuildOptions", "BuildResult", "Builder", "build", "_default_file"]
