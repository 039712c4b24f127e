"""Commands over the store: images, inspect, tag, rmi, gc (the first four run without click
too: cli/fast.py)."""

from __future__ import annotations

import click

from imgtool.cli import cli, options
from imgtool.cli.common import human_size, store_of
from imgtool.cli.group import with_options


@cli.command()
@with_options(options.IMAGES)
@click.pass_context
def images(ctx: click.Context, as_json: bool, digests: bool) -> None:
    """List the images in the store."""
    from imgtool.cli.actions import list_images

    list_images(store_of(ctx), as_json, digests)


@cli.command()
@click.argument("name")
@with_options(options.INSPECT)
@click.pass_context
def inspect(ctx: click.Context, name: str, **o: object) -> None:
    """Show an image's manifest and config as JSON."""
    from imgtool.cli.actions import inspect_image

    inspect_image(store_of(ctx), name, o)


@cli.command()
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag(ctx: click.Context, source: str, target: str) -> None:
    """Give the image SOURCE another name, TARGET."""
    from imgtool.cli.actions import tag_image

    tag_image(store_of(ctx), source, target)


@cli.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rmi(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Remove image names from the store (their blobs go with the next gc)."""
    from imgtool.cli.actions import remove_names

    remove_names(store_of(ctx), names)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--build-cache", is_flag=True, help="Also empty the build cache and cache mounts.")
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, build_cache: bool) -> None:
    """Remove every blob no image name reaches (and build-cache entries whose layers went)."""
    from imgtool.cleanup import gc as do_gc

    result = do_gc(store_of(ctx), dry_run=dry_run, build_cache=build_cache)
    verb = "Would remove" if dry_run else "Removed"
    total = sum(size for _, size in result.blobs)
    for digest, size in result.blobs:
        click.echo(f"{verb} {digest} ({human_size(size)})")
    for diff_id in result.layers:
        click.echo(f"{verb} unpacked layer {diff_id}")
    click.echo(
        f"{verb} {len(result.blobs)} blobs, {human_size(total)}; "
        f"{len(result.layers)} unpacked layers; {result.cache_entries} build-cache entries"
    )


@cli.command()
@click.argument("name")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--platform", help="For an index: which platform's image.")
@click.pass_context
def unpack(ctx: click.Context, name: str, dest: str, platform: str | None) -> None:
    """Write the image's filesystem (every layer applied) to DEST."""
    from pathlib import Path

    from imgtool import oci
    from imgtool.layer.unpacked import LayerStore

    store = store_of(ctx)
    img = store.image(name, oci.Platform.parse(platform) if platform else None)
    target = Path(dest)
    if target.exists() and any(target.iterdir()):
        raise click.UsageError(f"{dest} exists and is not empty")
    LayerStore(store).export_rootfs(img, target)
    click.echo(dest)
