"""A lean parser for the command lines a user types most (`run`, `images`, `pull`, `push`,
`copy`, `inspect`, `tag`, `rmi`, `load`, the group's --help): click costs about 50 ms of
imports, a third of what `run --rm IMAGE true` or a re-pull may take. It reads the same option
tables as the click commands (cli/options.py), lays out the group's help page as click does
(cli/helptext.py) and accepts only what it fully understands; for anything else (a command's
help, an unknown or malformed option, --debug, --version) it answers None, and click parses
the whole command line, so help and usage errors are click's own. The equivalence is tested
option by option (tests/unit/test_cli_fast.py, tests/unit/test_cli_help.py)."""

from __future__ import annotations

import os

from imgtool.cli.options import (
    COPY,
    DIRECTORY,
    FLAG,
    IMAGES,
    INSPECT,
    INT,
    LOAD,
    MULTIPLE,
    PULL,
    PUSH,
    RUN,
    Opt,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from collections.abc import Callable


class Parsed:
    """A command line the lean parser understood: the command, its parameters as click would
    pass them, and the global --root (None: the default store)."""

    __slots__ = ("command", "params", "root")

    def __init__(self, command: str, params: dict[str, object], root: str | None) -> None:
        self.command = command
        self.params = params
        self.root = root


class _Defer(Exception):
    """Not a command line for the lean parser: click's turn."""


def parse(argv: list[str]) -> Parsed | None:
    try:
        if argv in ([], ["-h"], ["--help"]):
            return _help(argv)
        root, rest = _global_options(argv)
        if not rest or rest[0] not in _COMMANDS:
            return None
        return Parsed(rest[0], _COMMANDS[rest[0]](rest[1:]), root)
    except _Defer:
        return None


def _help(argv: list[str]) -> Parsed:
    """The group's help page: on stdout for -h/--help; on stderr with status 2 for no
    arguments at all (click's NoArgsIsHelpError). Neither reads --root or the environment."""
    from imgtool.cli.helptext import group_help, help_width

    page = group_help(help_width())
    if page is None:
        raise _Defer
    return Parsed("help", {"page": page, "usage_error": not argv}, None)


def _run(args: list[str]) -> dict[str, object]:
    params, positional = _options(RUN, args, interspersed=False)
    if not positional:
        raise _Defer  # click: missing IMAGE
    params["image"], params["command"] = positional[0], tuple(positional[1:])
    return params


def _fixed(table: tuple[Opt, ...], *names: str) -> Callable[[list[str]], dict[str, object]]:
    """The parser of a command with `table`'s options, anywhere on the line, and exactly the
    arguments `names`."""

    def parse(args: list[str]) -> dict[str, object]:
        params, positional = _options(table, args, interspersed=True)
        if len(positional) != len(names):
            raise _Defer  # click: a missing argument, or an extra one
        params.update(zip(names, positional, strict=True))
        return params

    return parse


def _push(args: list[str]) -> dict[str, object]:
    params, positional = _options(PUSH, args, interspersed=True)
    if len(positional) not in (1, 2):
        raise _Defer  # click: missing NAME, or an extra argument
    params["name"] = positional[0]
    params["destination"] = positional[1] if len(positional) == 2 else None
    return params


def _copy(args: list[str]) -> dict[str, object]:
    params = _fixed(COPY, "source", "destination")(args)
    source, destination = str(params["source"]), str(params["destination"])
    for creds in (params["src_creds"], params["dest_creds"]):
        if creds is not None and ":" not in str(creds):
            raise _Defer  # click asks for the password
    from imgtool.cli.actions import copy_usage_error
    from imgtool.errors import ImgtoolError

    try:
        problem = copy_usage_error(source, destination, params)
    except ImgtoolError:
        raise _Defer from None  # a malformed location: click reports it
    if problem:
        raise _Defer  # click's usage error
    return params


def _rmi(args: list[str]) -> dict[str, object]:
    params, positional = _options((), args, interspersed=True)
    if not positional:
        raise _Defer  # click: missing NAMES
    return {**params, "names": tuple(positional)}


_COMMANDS = {
    "run": _run,
    "images": _fixed(IMAGES),
    "pull": _fixed(PULL, "reference"),
    "push": _push,
    "copy": _copy,
    "inspect": _fixed(INSPECT, "name"),
    "tag": _fixed((), "source", "target"),
    "rmi": _rmi,
    "load": _fixed(LOAD),
}


def _global_options(argv: list[str]) -> tuple[str | None, list[str]]:
    """The group's --root (or IMGTOOL_ROOT) before the command; --debug, -h, --version and the
    rest are click's."""
    if os.environ.get("IMGTOOL_DEBUG"):
        raise _Defer
    root = os.environ.get("IMGTOOL_ROOT") or None  # click ignores an empty variable too
    i = 0
    while i < len(argv) and argv[i].startswith("--root"):
        if argv[i] == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
        elif argv[i].startswith("--root="):
            root, i = argv[i].partition("=")[2], i + 1
        else:
            raise _Defer
    if root is not None and os.path.exists(root) and not _readable_dir(root):
        raise _Defer  # click.Path(file_okay=False) refuses it, with its message
    return root or None, argv[i:]


def _readable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.R_OK)


def _options(
    table: tuple[Opt, ...], args: list[str], interspersed: bool
) -> tuple[dict[str, object], list[str]]:
    """click's option parsing for this table: long options with `=` or a separate value,
    short ones clustered (`-it`) or with an attached value (`-eA=b`), `--` ending options."""
    by_decl = {d: opt for opt in table for d in opt.decls}
    params: dict[str, object] = {opt.dest: opt.default for opt in table}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            return params, positional + args[i:]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            i = _take(by_decl, name, value if eq else None, args, i, params)
        elif arg.startswith("-") and len(arg) > 1:
            i = _short(by_decl, arg, args, i, params)
        elif interspersed:
            positional.append(arg)
        else:
            return params, [arg, *args[i:]]
    return params, positional


def _short(by_decl: dict[str, Opt], arg: str, args: list[str], i: int, params: dict) -> int:
    for k in range(1, len(arg)):
        opt = by_decl.get("-" + arg[k])
        if opt is None:
            raise _Defer
        if opt.kind != FLAG:
            attached = arg[k + 1 :]
            return _take(by_decl, "-" + arg[k], attached or None, args, i, params)
        params[opt.dest] = True
    return i


def _take(
    by_decl: dict[str, Opt],
    name: str,
    value: str | None,
    args: list[str],
    i: int,
    params: dict[str, object],
) -> int:
    """Store option `name` (its value attached, or the next argument); the new position."""
    opt = by_decl.get(name)
    if opt is None:
        raise _Defer  # unknown (or -h/--help): click says which, or shows the help
    if opt.kind == FLAG:
        if value is not None:
            raise _Defer  # click: "option does not take a value"
        params[opt.dest] = True
        return i
    if value is None:
        if i >= len(args) or args[i].startswith("-"):
            raise _Defer  # missing, or a value that looks like an option: click decides
        value, i = args[i], i + 1
    if opt.kind == MULTIPLE:
        params[opt.dest] = (*params[opt.dest], value)  # type: ignore[misc]
    elif opt.kind == INT:
        params[opt.dest] = _int(value)
    elif opt.kind == DIRECTORY and not _readable_dir(value):
        raise _Defer  # click.Path(exists=True, file_okay=False) refuses it, with its message
    else:
        params[opt.dest] = value
    return i


def _int(text: str) -> int:
    try:
        return int(text)  # click's IntParamType converts with int() too
    except ValueError:
        raise _Defer from None


def execute(parsed: Parsed) -> int:
    """Run a parsed command as the click group would: its failures mapped by failure_of, one
    line on stderr. The exit status."""
    p = parsed.params
    if parsed.command == "help":
        return _show_help(str(p["page"]), bool(p["usage_error"]))  # nothing else to load
    from imgtool.cli import CONVENTIONS, actions
    from imgtool.cli.common import echo, failure_of

    try:
        store = actions.open_store(parsed.root)
        command = parsed.command
        if command == "run":
            return actions.run_container(store, str(p["image"]), p["command"], p)  # type: ignore[arg-type]
        if command == "images":
            actions.list_images(store, bool(p["as_json"]), bool(p["digests"]))
        elif command == "pull":
            actions.pull_image(store, str(p["reference"]), p)
        elif command == "push":
            actions.push_image(store, str(p["name"]), p)
        elif command == "copy":
            actions.copy_image(store, str(p["source"]), str(p["destination"]), p)
        elif command == "inspect":
            actions.inspect_image(store, str(p["name"]), p)
        elif command == "tag":
            actions.tag_image(store, str(p["source"]), str(p["target"]))
        elif command == "rmi":
            actions.remove_names(store, p["names"])  # type: ignore[arg-type]
        else:
            actions.load_archive(store, str(p["path"]), bool(p["quiet"]))
        return 0
    except (Exception, KeyboardInterrupt) as e:
        failure = failure_of(e, CONVENTIONS.get(parsed.command, "plain"))
        if failure is None:
            raise  # a bug: its traceback, as under click
        echo(f"imgtool: {failure.message}", err=True)
        return failure.status


def _show_help(page: str, usage_error: bool) -> int:
    """Print the help page as click does: a reader that went away (`imgtool --help | head
    -1`) ends it silently with status 1."""
    import sys

    stream = sys.stderr if usage_error else sys.stdout
    try:
        stream.write(page + "\n")
        stream.flush()
    except BrokenPipeError:
        # the interpreter's last flush would fail too: let it write to nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        return 1
    return 2 if usage_error else 0
