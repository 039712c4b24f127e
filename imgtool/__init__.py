"""imgtool: a daemonless OCI image builder, layer manager and runner.

The Python API (docs/api.md)::

    import imgtool
    store = imgtool.Store("/var/lib/imgtool")       # imgtool.Store() for the default place
    imgtool.pull(store, "localhost:5000/app:1", platform="linux/arm64")
    result = imgtool.run(store, "localhost:5000/app:1", ["true"], network="none", memory="64m")

Every name below is imported on first use (a module __getattr__), so `import imgtool` costs
nothing: every CLI command imports this package first.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from imgtool.analyze import Report, RuleResult, Rules
    from imgtool.api import (
        RunResult,
        build,
        check,
        images,
        inspect_image,
        layers,
        pull,
        push,
        rmi,
        run,
        tag,
    )
    from imgtool.builder import BuildResult
    from imgtool.errors import ImgtoolError
    from imgtool.inspect import ImageRow
    from imgtool.progress import Event
    from imgtool.puller import PullResult
    from imgtool.pusher import PushResult
    from imgtool.store import Store

# the module of each public name not defined in imgtool.api (the others are api's). Names of
# submodules (inspect, copy, ...) are avoided: importing a submodule sets the package
# attribute of that name.
_ELSEWHERE = {
    "Store": "imgtool.store",
    "Event": "imgtool.progress",
    "ImgtoolError": "imgtool.errors",
    "PullResult": "imgtool.puller",
    "PushResult": "imgtool.pusher",
    "BuildResult": "imgtool.builder",
    "Report": "imgtool.analyze",
    "Rules": "imgtool.analyze",
    "RuleResult": "imgtool.analyze",
    "ImageRow": "imgtool.inspect",
}

# the one list of public names; literal, so that type checkers and linters read it
__all__ = [
    "__version__",
    "Store",
    "pull",
    "push",
    "build",
    "run",
    "layers",
    "check",
    "images",
    "inspect_image",
    "tag",
    "rmi",
    "Event",
    "ImgtoolError",
    "PullResult",
    "PushResult",
    "BuildResult",
    "RunResult",
    "Report",
    "Rules",
    "RuleResult",
    "ImageRow",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:  # __version__ is a global: never asked for here
        raise AttributeError(f"module 'imgtool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_ELSEWHERE.get(name, "imgtool.api")), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
