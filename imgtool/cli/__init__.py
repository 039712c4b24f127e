"""The command line: a thin click layer over the library, and the only place that prints.

Commands live one module per verb or small group (the click group in cli/group.py); heavy
modules are imported inside the commands, so that starting imgtool costs only what the command
needs. The commonest command lines of `run` and `images` skip click altogether (cli/fast.py).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from imgtool.cli.common import Convention
    from imgtool.cli.group import cli as cli

# command -> the module that defines it; imported only when that command runs
COMMANDS = {
    "pull": "transfer",
    "push": "transfer",
    "images": "images",
    "inspect": "images",
    "tag": "images",
    "rmi": "images",
    "gc": "images",
    "unpack": "images",
    "login": "login",
    "logout": "login",
    "run": "run",
    "ps": "run",
    "stop": "run",
    "rm": "run",
    "logs": "run",
    "layers": "size",
    "diff": "size",
    "check": "size",
    "build": "build",
    "network": "network",
    "save": "archive",
    "load": "archive",
    "copy": "archive",
}

# how a command reports failures (cli/common.py's failure_of); the rest are "plain"
CONVENTIONS: dict[str, Convention] = {"run": "run", "build": "build", "check": "gate"}


# command -> its one-line help, so that `imgtool --help` lists the commands without importing
# every command module (about 10 ms); tests/unit/test_cli_startup.py keeps these equal to the
# commands' own docstrings
SUMMARIES = {
    "build": "Build an image from a Containerfile and the CONTEXT directory.",
    "check": "Check IMAGE against size rules: exit 0 when all hold, 1 when one fails, 2 on a "
    "usage or lookup error.",
    "copy": "Copy an image between registries (docker://), OCI layouts (oci:DIR[:REF]), "
    "archives (docker-archive:FILE[:REF], oci-archive:FILE[:REF]) and the store (store:NAME "
    "or a NAME).",
    "diff": "What changed from image A to image B: layers, then paths by size.",
    "gc": "Remove every blob no image name reaches (and build-cache entries whose layers went).",
    "images": "List the images in the store.",
    "inspect": "Show an image's manifest and config as JSON.",
    "layers": "Per-layer sizes, file counts and history, totals, and wasted space.",
    "load": "Load the images of a docker-archive or oci-archive (gzip or zstd too) into the store.",
    "login": "Check credentials against REGISTRY and store them where docker login would.",
    "logout": "Forget the credentials of REGISTRY.",
    "logs": "Print the output of a detached container.",
    "network": "The bridge network of `imgtool run` (imgtool0).",
    "ps": "List containers.",
    "pull": "Pull an image from a registry into the store.",
    "push": "Push an image from the store to a registry (to DESTINATION if given, else its name).",
    "rm": "Remove containers.",
    "rmi": "Remove image names from the store (their blobs go with the next gc).",
    "run": "Run a command in a new container from IMAGE.",
    "save": "Save images of the store to an archive, as `docker save`.",
    "stop": "Stop running containers (their stop signal, then SIGKILL).",
    "tag": "Give the image SOURCE another name, TARGET.",
    "unpack": "Write the image's filesystem (every layer applied) to DEST.",
}


def __getattr__(name: str) -> object:
    """`cli`, the click group, on first use: `run` and `images` may never need click."""
    if name == "cli":
        from imgtool.cli.group import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def console() -> None:
    """The `imgtool` command (its console script and `python -m imgtool`): `main`, then, when
    Python's shutdown has nothing left to do (no exit handler registered, no other thread that
    it would wait for), the process ends right after stdout and stderr are flushed. Tearing the
    interpreter down, freeing every module and object one by one, costs ~7 ms: a tenth of a
    `run --rm`. Anything else (a string exit code, a failed flush) exits as Python would."""
    try:
        main()
        status: object = 0
    except SystemExit as e:
        status = e.code
    if status is None:
        status = 0
    if not isinstance(status, int) or not _nothing_left_at_exit():
        sys.exit(status)  # type: ignore[arg-type]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # a closed pipe: Python's own exit reports it, as without this
        sys.exit(status)
    import os

    os._exit(status)


def _nothing_left_at_exit() -> bool:
    """Whether Python's shutdown would do nothing but free memory: no exit handler (logging's
    flush of its handlers, weakref finalizers such as a temporary directory's) and no live
    thread it would wait for."""
    import atexit

    handlers = getattr(atexit, "_ncallbacks", None)  # CPython's; elsewhere, exit as usual
    if handlers is None or handlers():
        return False
    threading = sys.modules.get("threading")
    if threading is None:
        return True
    main_thread = threading.main_thread()
    return not any(
        t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()
    )


def main() -> None:
    from imgtool.cli import fast

    parsed = fast.parse(sys.argv[1:])
    if parsed is not None:
        sys.exit(fast.execute(parsed))
    from imgtool.cli.group import cli

    cli(prog_name="imgtool")
