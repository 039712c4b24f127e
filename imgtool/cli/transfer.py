"""`imgtool pull` and `imgtool push`."""

from __future__ import annotations

import click

from imgtool.cli import cli
from imgtool.cli.common import human_size, registry_options, store_of, transport
from imgtool.cli.progress import Renderer


@cli.command()
@click.argument("reference")
@click.option("--platform", help="os/arch[/variant] to pick from an index (default: this host).")
@click.option("--all-platforms", "-a", is_flag=True, help="Keep the whole index, every platform.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the image's name.")
@registry_options
@click.pass_context
def pull(
    ctx: click.Context,
    reference: str,
    platform: str | None,
    all_platforms: bool,
    quiet: bool,
    insecure: bool,
    cert_dir: str | None,
) -> None:
    """Pull an image from a registry into the store."""
    from imgtool import oci
    from imgtool.puller import PullOptions
    from imgtool.puller import pull as do_pull

    opts = PullOptions(
        platform=oci.Platform.parse(platform) if platform else None,
        all_platforms=all_platforms,
        transport=transport(insecure, cert_dir),
        progress=Renderer("Downloading", quiet),
    )
    result = do_pull(reference, store_of(ctx), opts)
    if quiet:
        click.echo(result.name)
        return
    click.echo(f"Digest: {result.digest}")
    if result.index_digest and result.index_digest != result.digest:
        click.echo(f"Index: {result.index_digest} ({result.platform})")
    click.echo(
        f"Pulled {result.name} from {result.source} ({human_size(result.fetched_bytes)} fetched)"
    )


@cli.command()
@click.argument("name")
@click.argument("destination", required=False)
@click.option("--quiet", "-q", is_flag=True, help="Print only the pushed digest.")
@registry_options
@click.pass_context
def push(
    ctx: click.Context,
    name: str,
    destination: str | None,
    quiet: bool,
    insecure: bool,
    cert_dir: str | None,
) -> None:
    """Push an image from the store to a registry (to DESTINATION if given, else its name)."""
    from imgtool.pusher import PushOptions
    from imgtool.pusher import push as do_push

    opts = PushOptions(
        transport=transport(insecure, cert_dir), progress=Renderer("Uploading", quiet)
    )
    result = do_push(name, store_of(ctx), destination, opts)
    if quiet:
        click.echo(result.digest)
        return
    click.echo(
        f"Pushed {result.reference}: digest {result.digest} "
        f"({result.uploaded} uploaded, {result.mounted} mounted, "
        f"{result.skipped} already there)"
    )
