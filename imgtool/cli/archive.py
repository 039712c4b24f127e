"""`imgtool save`, `imgtool load` and `imgtool copy` (the options of the last two are tables
of cli/options.py, which the lean parser of cli/fast.py reads too)."""

from __future__ import annotations

import sys

import click

from imgtool.cli import cli, options
from imgtool.cli.common import store_of
from imgtool.cli.group import with_options


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--output", "-o", default="-", help="The archive to write (default: stdout).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["docker-archive", "oci-archive"]),
    default="docker-archive",
    show_default=True,
    help="docker save's format, or an OCI image layout in a tar.",
)
@click.option("--platform", help="One platform of an index (docker-archive default: this host's).")
@click.pass_context
def save(
    ctx: click.Context, images: tuple[str, ...], output: str, fmt: str, platform: str | None
) -> None:
    """Save images of the store to an archive, as `docker save`."""
    from imgtool import oci
    from imgtool.copy import save as do_save

    if output == "-" and sys.stdout.isatty():
        raise click.UsageError(
            "refusing to write an archive to a terminal: use -o FILE or redirect"
        )
    plat = oci.Platform.parse(platform) if platform else None
    do_save(store_of(ctx), list(images), output, fmt, plat)


@cli.command()
@with_options(options.LOAD)
@click.pass_context
def load(ctx: click.Context, path: str, quiet: bool) -> None:
    """Load the images of a docker-archive or oci-archive (gzip or zstd too) into the store."""
    from imgtool.cli.actions import load_archive

    load_archive(store_of(ctx), path, quiet)


@cli.command()
@click.argument("source")
@click.argument("destination")
@with_options(options.COPY)
@click.pass_context
def copy(ctx: click.Context, source: str, destination: str, **o: object) -> None:
    """Copy an image between registries (docker://), OCI layouts (oci:DIR[:REF]), archives
    (docker-archive:FILE[:REF], oci-archive:FILE[:REF]) and the store (store:NAME or a NAME)."""
    from imgtool.cli.actions import copy_image, copy_usage_error

    problem = copy_usage_error(source, destination, o)
    if problem:
        raise click.UsageError(problem)
    copy_image(store_of(ctx), source, destination, o, _ask_password)


def _ask_password(user: str) -> str:
    return str(click.prompt(f"Password for {user}", hide_input=True, err=True))
