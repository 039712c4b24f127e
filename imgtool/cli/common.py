"""Options and helpers shared by several commands. click is imported where it is used, not
here: the lean path (cli/fast.py) uses this module without it."""

from __future__ import annotations

import sys

from imgtool.errors import ImgtoolError, InvalidArgument, RunStepFailed
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Literal

    import click

    from imgtool.reference import Reference
    from imgtool.store import Store

    # How a command reports its failures (docker's and CI gates' habits):
    #   plain  ImgtoolError 1, usage 2
    #   run    imgtool's own failures 125 (usage too, as docker run); RunError its 126/127
    #   build  a failed RUN step's own status; the rest as plain
    #   gate   `check`: 1 is taken by "a rule failed", so every error, usage or not, is 2
    Convention = Literal["plain", "run", "build", "gate"]


def store_of(ctx: click.Context) -> Store:
    """The store, reading names as pull does: a short name follows its registries.conf alias
    in run, inspect, tag, rmi and the rest, as in podman."""
    from imgtool.store import Store

    root = ctx.find_root().obj.get("root")
    return Store(root or None, resolve=resolve_name)


def echo(text: str, err: bool = False) -> None:
    """click.echo's behaviour for plain text (a line, flushed), without importing click."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def resolve_name(text: str) -> Reference:
    """registries.conf's resolver, imported on first use: `images` and a run by digest or full
    name never need it (a few ms of start-up)."""
    from imgtool.registry.config import resolve_name

    return resolve_name(text)


def transport(insecure: bool, cert_dir: str | None, **extra: Any) -> Any:
    from imgtool.registry.options import TransportOptions

    cert_path = None
    if cert_dir:
        from pathlib import Path  # only for --cert-dir: a re-pull need not import pathlib

        cert_path = Path(cert_dir)
    return TransportOptions(
        insecure=insecure,
        cert_dir=cert_path,
        notice=_warn,
        **extra,
    )


def _warn(message: str) -> None:
    echo(f"imgtool: warning: {message}", err=True)


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}B"


EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_RUN_OWN_FAILURE = 125


class Failure(Frozen):
    """What the CLI prints (one line, after "imgtool: ") and exits with for an exception."""

    __slots__ = ("message", "status")
    message: str
    status: int

    def __init__(self, message: str, status: int) -> None:
        self._init(message, status)


def failure_of(exc: BaseException, convention: Convention = "plain") -> Failure | None:
    """The one mapping from exceptions to messages and exit statuses, by exception type.
    None for what is not a failure of ours to report (SystemExit, click's own exits)."""
    own = {"run": EXIT_RUN_OWN_FAILURE, "gate": EXIT_USAGE}.get(convention, 1)
    # click's exceptions exist only once click is loaded (the lean path never loads it)
    click = sys.modules.get("click")
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", EXIT_INTERRUPTED)
    usage = click is not None and isinstance(exc, click.UsageError)
    if usage or isinstance(exc, InvalidArgument):
        message = exc.format_message() if usage else str(exc)  # type: ignore[attr-defined]
        return Failure(one_line(message), own if convention == "run" else EXIT_USAGE)
    if click is not None and isinstance(exc, click.ClickException):  # a file click could not open
        return Failure(one_line(exc.format_message()), own)
    if isinstance(exc, RunStepFailed) and convention == "build":
        return Failure(one_line(str(exc)), min(max(exc.status, 1), 255))
    if isinstance(exc, ImgtoolError):
        return Failure(one_line(str(exc)), _container_status(exc, convention) or own)
    if isinstance(exc, OSError):  # what the library did not expect: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        return Failure(one_line(f"{where}{exc.strerror or exc}"), own)
    return None


def _container_status(exc: ImgtoolError, convention: Convention) -> int | None:
    """`run`'s RunError carries docker's status: 125, or 126/127 when the command could not be
    executed. runner is imported only under `run`, which has imported it already."""
    if convention != "run":
        return None
    from imgtool.runner import RunError

    return exc.status if isinstance(exc, RunError) else None


def one_line(text: str) -> str:
    """Blanks and line ends made single spaces; any other control character escaped (a
    registry's reason phrase or error message could carry terminal escapes)."""
    flat = " ".join(text.split())
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in flat)
