"""`imgtool save`, `imgtool load` and `imgtool copy`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from imgtool.cli import cli
from imgtool.cli.common import registry_options, store_of, transport
from imgtool.cli.progress import Renderer

if TYPE_CHECKING:
    from imgtool.registry.credentials import Credentials


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
@click.option("--input", "-i", "path", default="-", help="The archive to read (default: stdin).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the names (or ids) loaded.")
@click.pass_context
def load(ctx: click.Context, path: str, quiet: bool) -> None:
    """Load the images of a docker-archive or oci-archive (gzip or zstd too) into the store."""
    from imgtool.copy import load as do_load

    stream = sys.stdin.buffer if path == "-" else None
    for image in do_load(store_of(ctx), path, stream):
        shown = list(image.names) or [image.image_id or image.digest]
        for name in shown:
            if quiet:
                click.echo(name)
            elif image.names:
                click.echo(f"Loaded image: {name} ({image.digest})")
            else:
                click.echo(f"Loaded image ID: {name}")


@cli.command()
@click.argument("source")
@click.argument("destination")
@click.option(
    "--all", "-a", "all_platforms", is_flag=True, help="Copy a whole index, every platform."
)
@click.option("--platform", help="os/arch[/variant] to pick from an index (default: this host).")
@click.option("--src-creds", metavar="USER[:PASSWORD]", help="Credentials for the source registry.")
@click.option("--dest-creds", metavar="USER[:PASSWORD]", help="Credentials for the destination.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the digest written.")
@registry_options
@click.pass_context
def copy(
    ctx: click.Context,
    source: str,
    destination: str,
    all_platforms: bool,
    platform: str | None,
    src_creds: str | None,
    dest_creds: str | None,
    quiet: bool,
    insecure: bool,
    cert_dir: str | None,
) -> None:
    """Copy an image between registries (docker://), OCI layouts (oci:DIR[:REF]), archives
    (docker-archive:FILE[:REF], oci-archive:FILE[:REF]) and the store (store:NAME or a NAME)."""
    from imgtool import oci
    from imgtool.copy import CopyOptions, Location
    from imgtool.copy import copy as do_copy

    if all_platforms and platform:
        raise click.UsageError("--all copies every platform: drop --platform, or --all")
    creds = (("--src-creds", src_creds, source), ("--dest-creds", dest_creds, destination))
    for flag, value, where in creds:
        if value is not None and Location.parse(where).transport != "docker":
            raise click.UsageError(f"{flag} is for a docker:// registry, not {where}")
    opts = CopyOptions(
        all_platforms=all_platforms,
        platform=oci.Platform.parse(platform) if platform else None,
        source_transport=transport(insecure, cert_dir, credentials=_credentials(src_creds)),
        destination_transport=transport(insecure, cert_dir, credentials=_credentials(dest_creds)),
        progress=Renderer("Copying", quiet),
    )
    result = do_copy(source, destination, store_of(ctx), opts)
    if quiet:
        click.echo(result.digest)
        return
    what = f"{result.platforms} platforms" if result.platforms > 1 else "1 image"
    click.echo(f"Copied {what} from {result.source} to {result.destination}: {result.digest}")


def _credentials(text: str | None) -> Credentials | None:
    """USER:PASSWORD as skopeo's --src-creds; a missing password is asked for."""
    if text is None:
        return None
    from imgtool.registry.credentials import Credentials

    user, sep, password = text.partition(":")
    if not sep:
        password = click.prompt(f"Password for {user}", hide_input=True, err=True)
    return Credentials(user, password)
