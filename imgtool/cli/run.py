"""`imgtool run`, `ps`, `stop`, `rm`, `logs`. Kept free of registry imports: `run` starts fast."""

from __future__ import annotations

import sys
import time

import click

from imgtool.cli import cli
from imgtool.cli.common import store_of


@cli.command(context_settings={"allow_interspersed_args": False})
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--name", default="", help="A name for the container.")
@click.option("--rm", is_flag=True, help="Remove the container when it exits.")
@click.option("-d", "--detach", is_flag=True, help="Run in the background; print the id.")
@click.option("-i", "--interactive", is_flag=True, help="Keep standard input open.")
@click.option("-t", "--tty", is_flag=True, help="Give the container a terminal.")
@click.option("-e", "--env", multiple=True, help="NAME=value (or NAME: the host's value).")
@click.option("-w", "--workdir", help="Working directory in the container.")
@click.option("-u", "--user", help="name|uid[:group|gid], resolved in the image.")
@click.option("-v", "--volume", multiple=True, help="/host/path:/container/path[:ro].")
@click.option("--hostname", help="The container's host name.")
@click.option("--network", default="bridge", show_default=True, help="bridge, none or host.")
@click.option(
    "-p", "--publish", multiple=True, help="[ip:]hostport:containerport[/tcp|udp] (bridge network)."
)
@click.option("-P", "--publish-all", is_flag=True, help="Publish every EXPOSEd port.")
@click.option("-m", "--memory", help="Memory limit (e.g. 256m, 1g; 0: none).")
@click.option("--cpus", help="CPU limit in CPUs (e.g. 1.5; 0: none).")
@click.option("--pids-limit", type=int, help="Maximum number of processes (0 or -1: none).")
@click.option(
    "--device", multiple=True, help="HOST[:CONTAINER][:rwm]: give the container a host device."
)
@click.option("--cap-add", multiple=True, help="Add a capability (or ALL).")
@click.option("--cap-drop", multiple=True, help="Drop a capability (or ALL).")
@click.option(
    "--privileged",
    is_flag=True,
    help="All capabilities and host devices, no seccomp filter, nothing masked.",
)
@click.option("--entrypoint", help="Override the image's entrypoint ('' clears it).")
@click.option("--init", is_flag=True, help="Run a minimal init as PID 1 (reaps zombies).")
@click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only.")
@click.option("--platform", help="For an index: which platform's image.")
@click.option(
    "--security-opt",
    multiple=True,
    help="seccomp=unconfined, seccomp=PROFILE.json (Docker's format), no-new-privileges.",
)
@click.pass_context
def run(ctx: click.Context, image: str, command: tuple[str, ...], **o: object) -> None:
    """Run a command in a new container from IMAGE."""
    from imgtool import oci
    from imgtool.api import parse_limits
    from imgtool.runner import RunOptions, execute, prepare, start_detached

    # a bad value exits 125 as docker's does: cli's "run" convention
    limits = parse_limits(o["memory"], o["cpus"], o["pids_limit"])  # type: ignore[arg-type]
    opts = RunOptions(
        command=list(command),
        entrypoint=o["entrypoint"],
        env=list(o["env"]),  # type: ignore[arg-type]
        workdir=o["workdir"],
        user=o["user"],
        volumes=list(o["volume"]),  # type: ignore[arg-type]
        hostname=o["hostname"],
        name=str(o["name"]),
        network=str(o["network"]),  # type: ignore[arg-type]
        limits=limits,
        rm=bool(o["rm"]),
        detach=bool(o["detach"]),
        tty=bool(o["tty"]),
        interactive=bool(o["interactive"]),
        init=bool(o["init"]),
        read_only=bool(o["read_only"]),
        platform=oci.Platform.parse(str(o["platform"])) if o["platform"] else None,
        publish=list(o["publish"]),  # type: ignore[arg-type]
        publish_all=bool(o["publish_all"]),
        security_opts=list(o["security_opt"]),  # type: ignore[arg-type]
        devices=list(o["device"]),  # type: ignore[arg-type]
        cap_add=list(o["cap_add"]),  # type: ignore[arg-type]
        cap_drop=list(o["cap_drop"]),  # type: ignore[arg-type]
        privileged=bool(o["privileged"]),
    )
    store = store_of(ctx)
    rec, spec = prepare(store, image, opts)
    if opts.detach:
        rec = start_detached(store, rec, spec)
        click.echo(rec.id)
        return
    outcome = execute(store, rec, spec)
    if outcome.oom_killed:
        click.echo(
            f"imgtool: container {rec.name} was killed: out of memory (limit {o['memory']})",
            err=True,
        )
    sys.exit(outcome.status)


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
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


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
