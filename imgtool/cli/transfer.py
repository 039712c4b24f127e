"""`imgtool pull` and `imgtool push`. Their options are tables (cli/options.py) that the lean
parser of cli/fast.py reads too: a quiet re-pull starts without click."""

from __future__ import annotations

import click

from imgtool.cli import cli, options
from imgtool.cli.common import store_of
from imgtool.cli.group import with_options


@cli.command()
@click.argument("reference")
@with_options(options.PULL)
@click.pass_context
def pull(ctx: click.Context, reference: str, **o: object) -> None:
    """Pull an image from a registry into the store."""
    from imgtool.cli.actions import pull_image

    pull_image(store_of(ctx), reference, o)


@cli.command()
@click.argument("name")
@click.argument("destination", required=False)
@with_options(options.PUSH)
@click.pass_context
def push(ctx: click.Context, name: str, **o: object) -> None:
    """Push an image from the store to a registry (to DESTINATION if given, else its name)."""
    from imgtool.cli.actions import push_image

    push_image(store_of(ctx), name, o)
