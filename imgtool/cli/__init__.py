"""The command line: a thin click layer over the library, and the only place that prints.

Commands live one module per verb or small group; heavy modules are imported inside the
commands, so that starting imgtool costs only what the command needs.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

import click

from imgtool import __version__

if TYPE_CHECKING:
    from imgtool.cli.common import Convention

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


class _Group(click.Group):
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, from SUMMARIES instead of importing each command's module."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, _shortened(SUMMARIES[n], limit)) for n in names]
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


def _shortened(text: str, limit: int) -> str:
    """As click shortens a command's help: whole words, then "...", within `limit`."""
    if len(text) <= limit:
        return text
    if limit < 3:
        return "..."
    import textwrap  # only when a line is too long for the terminal

    return textwrap.shorten(text, limit, placeholder="...", break_on_hyphens=False)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgtool")
@click.option(
    "--root",
    envvar="IMGTOOL_ROOT",
    type=click.Path(file_okay=False),
    help="The store (an OCI image layout). Default /var/lib/imgtool as root.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="IMGTOOL_DEBUG",
    help="On failure print the traceback; log HTTP exchanges (redacted) to stderr.",
)
@click.pass_context
def cli(ctx: click.Context, root: str | None, debug: bool) -> None:
    """A daemonless OCI image builder, layer manager and runner."""
    ctx.obj = {"root": root, "debug": debug}
    if debug:
        from imgtool.cli.debug import log_http_exchanges

        log_http_exchanges()


def main() -> None:
    cli(prog_name="imgtool")
