"""The click group of every command (COMMANDS, SUMMARIES and CONVENTIONS are in
cli/__init__.py), and the click side of the option tables of cli/options.py."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from imgtool import __version__
from imgtool.cli import COMMANDS, CONVENTIONS, SUMMARIES
from imgtool.cli.helptext import DEBUG_HELP, GROUP_HELP, ROOT_HELP, shortened
from imgtool.cli.options import DIRECTORY, FLAG, INT, MULTIPLE, Opt


class _Group(click.Group):
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, from SUMMARIES instead of importing each command's module."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, shortened(SUMMARIES[n], limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        if name not in self.commands:
            importlib.import_module(f"imgtool.cli.{COMMANDS[name]}")
        return self.commands.get(name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as e:
            from imgtool.cli.common import failure_of

            failure = failure_of(e, CONVENTIONS.get(ctx.invoked_subcommand or "", "plain"))
            if failure is None:
                raise  # not ours to report: click's own exits, and bugs (with their traceback)
            if ctx.obj and ctx.obj.get("debug"):
                from imgtool.cli.debug import print_traceback

                print_traceback(e)
            if isinstance(e, click.ClickException):
                e.show()  # click's form: the usage line and a hint, then the error
            else:
                click.echo(f"imgtool: {failure.message}", err=True)
            sys.exit(failure.status)


@click.group(cls=_Group, help=GROUP_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgtool")
@click.option(
    "--root",
    envvar="IMGTOOL_ROOT",
    type=click.Path(file_okay=False),
    help=ROOT_HELP,
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="IMGTOOL_DEBUG",
    help=DEBUG_HELP,
)
@click.pass_context
def cli(ctx: click.Context, root: str | None, debug: bool) -> None:
    ctx.obj = {"root": root, "debug": debug}
    if debug:
        from imgtool.cli.debug import log_http_exchanges

        log_http_exchanges()


def with_options(table: tuple[Opt, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click options of a table of cli/options.py, in its order."""

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(table):  # decorators apply bottom-up
            extra: dict[str, Any] = {"is_flag": True} if opt.kind == FLAG else {}
            if opt.kind == MULTIPLE:
                extra["multiple"] = True
            elif opt.kind == INT:
                extra["type"] = int
            elif opt.kind == DIRECTORY:
                extra["type"] = click.Path(exists=True, file_okay=False)
            elif opt.kind != FLAG and opt.default is not None:
                extra["default"] = opt.default
            if opt.show_default:
                extra["show_default"] = True
            if opt.metavar:
                extra["metavar"] = opt.metavar
            f = click.option(*opt.decls, opt.dest, help=opt.help, **extra)(f)
        return f

    return apply
