"""`imgtool run`, `ps`, `stop`, `rm`, `logs`. Kept free of registry imports: `run` starts fast
(and usually without click at all: cli/fast.py)."""

from __future__ import annotations

import sys
import time

import click

from imgtool.cli import cli, options
from imgtool.cli.common import store_of
from imgtool.cli.group import with_options
from imgtool.cli.table import table_lines


@cli.command(context_settings={"allow_interspersed_args": False})
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@with_options(options.RUN)
@click.pass_context
def run(ctx: click.Context, image: str, command: tuple[str, ...], **o: object) -> None:
    """Run a command in a new container from IMAGE."""
    from imgtool.cli.actions import run_container

    sys.exit(run_container(store_of(ctx), image, command, o))


def _ago(t: float) -> str:
    s = time.time() - t
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return f"{int(s // n)} {unit} ago"
    return f"{int(s)} seconds ago"


@cli.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only ids.")
@click.pass_context
def ps(ctx: click.Context, show_all: bool, quiet: bool) -> None:
    """List containers."""
    from imgtool.containers import Containers

    containers = Containers(store_of(ctx).root)
    containers.reap_stale()
    rows = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    for r in containers.list():
        running = containers.is_running(r)
        if not (running or show_all):
            continue
        if quiet:
            click.echo(r.short_id)
            continue
        status = (
            "Up"
            if running
            else (f"Exited ({r.exit_code})" if r.exit_code is not None else r.status.capitalize())
        )
        cmd = " ".join(r.command)
        rows.append(
            (
                r.short_id,
                r.image,
                cmd if len(cmd) < 30 else cmd[:27] + "...",
                _ago(r.created),
                status,
                r.name,
            )
        )
    if quiet:
        return
    for line in table_lines(rows):
        click.echo(line)


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@click.option("-t", "--time", "timeout", default=10.0, help="Seconds before SIGKILL.")
@click.pass_context
def stop(ctx: click.Context, containers: tuple[str, ...], timeout: float) -> None:
    """Stop running containers (their stop signal, then SIGKILL)."""
    from imgtool.runner import stop as do_stop

    for key in containers:
        do_stop(store_of(ctx), key, timeout)
        click.echo(key)


@cli.command(name="rm")
@click.argument("containers", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.pass_context
def rm_(ctx: click.Context, containers: tuple[str, ...], force: bool) -> None:
    """Remove containers."""
    from imgtool.runner import remove

    for key in containers:
        remove(store_of(ctx), key, force)
        click.echo(key)


@cli.command()
@click.argument("container")
@click.pass_context
def logs(ctx: click.Context, container: str) -> None:
    """Print the output of a detached container."""
    from imgtool.containers import Containers

    containers = Containers(store_of(ctx).root)
    rec = containers.find(container)
    log = containers.dir(rec.id) / "ctr.log"
    if log.exists():
        sys.stdout.buffer.write(log.read_bytes())
