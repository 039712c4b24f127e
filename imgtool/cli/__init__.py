"""The command line: a thin click layer over the library, and the only place that prints.

Commands live one module per verb or small group; heavy modules are imported inside the
commands, so that starting imgtool costs only what the command needs.
"""

from __future__ import annotations

import importlib
import sys

import click

from imgtool import __version__
from imgtool.errors import ImgtoolError

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


class _Group(click.Group):
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
        except ImgtoolError as e:
            click.echo(f"imgtool: {_one_line(str(e))}", err=True)
            sys.exit(getattr(ctx, "imgtool_exit_code", 1))
        except OSError as e:  # what the library did not expect: still one line, naming the path
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"imgtool: {where}{e.strerror or e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("imgtool: interrupted", err=True)
            sys.exit(130)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgtool")
@click.option(
    "--root",
    envvar="IMGTOOL_ROOT",
    type=click.Path(file_okay=False),
    help="The store (an OCI image layout). Default /var/lib/imgtool as root.",
)
@click.pass_context
def cli(ctx: click.Context, root: str | None) -> None:
    """A daemonless OCI image builder, layer manager and runner."""
    ctx.obj = {"root": root}


def main() -> None:
    cli(prog_name="imgtool")
