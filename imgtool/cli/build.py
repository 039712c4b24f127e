"""`imgtool build`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from imgtool.cli import cli
from imgtool.cli.common import store_of


def _exit_on_termination() -> None:
    """SIGTERM and SIGHUP end the build as an exception does (cleaning up), not on the spot."""
    import signal

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        k, eq, val = v.partition("=")
        if not k:
            raise click.BadParameter(f"{v!r}: expected KEY=VALUE", param_hint=what)
        if not eq:
            import os

            val = os.environ.get(k, "")  # --build-arg NAME takes the host's value
        out[k] = val
    return out


def _ssh_agents(values: tuple[str, ...]) -> dict[str, Path]:
    """--ssh ID=SOCKET (ID alone: the agent of $SSH_AUTH_SOCK), as docker build takes it; an
    agent's socket only (key files are not read: the step gets the agent, never a key)."""
    import os

    out = {}
    for v in values:
        sid, eq, path = v.partition("=")
        if not eq:
            path = os.environ.get("SSH_AUTH_SOCK", "")
            if not path:
                raise click.BadParameter(f"{v!r}: SSH_AUTH_SOCK is not set", param_hint="--ssh")
        if not sid or not path or "," in path:
            raise click.BadParameter(f"{v!r}: expected ID=SOCKET", param_hint="--ssh")
        out[sid] = Path(path).resolve()
    return out


@cli.command()
@click.argument("context", type=click.Path(exists=True, allow_dash=True), default=".")
@click.option(
    "-f",
    "--file",
    "file_",
    type=click.Path(dir_okay=False),
    help="The Containerfile (default: CONTEXT/Containerfile or Dockerfile).",
)
@click.option("-t", "--tag", "tags", multiple=True, help="Name the image (repeatable).")
@click.option("--target", help="Build up to this stage.")
@click.option("--build-arg", "build_args", multiple=True, help="KEY=VALUE for an ARG.")
@click.option("--no-cache", is_flag=True, help="Run every step again.")
@click.option("--pull", is_flag=True, help="Pull base images even when they are in the store.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE label for the image.")
@click.option("--iidfile", type=click.Path(dir_okay=False), help="Write the image id here.")
@click.option(
    "--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True
)
@click.option("--secret", "secrets", multiple=True, help="id=NAME,src=FILE for RUN mounts.")
@click.option(
    "--ssh",
    "ssh",
    multiple=True,
    help="ID=SOCKET, or ID alone for $SSH_AUTH_SOCK: an ssh agent for RUN --mount=type=ssh.",
)
@click.option("--explain-cache", is_flag=True, help="Say why each step missed the cache.")
@click.option("--check", "check_only", is_flag=True, help="Parse and validate only.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image id.")
@click.pass_context
def build(
    ctx: click.Context,
    context: str,
    file_: str | None,
    tags: tuple[str, ...],
    target: str | None,
    build_args: tuple[str, ...],
    no_cache: bool,
    pull: bool,
    labels: tuple[str, ...],
    iidfile: str | None,
    compression: str,
    secrets: tuple[str, ...],
    ssh: tuple[str, ...],
    explain_cache: bool,
    check_only: bool,
    quiet: bool,
) -> None:
    """Build an image from a Containerfile and the CONTEXT directory.

    CONTEXT `-` reads stdin: a tar of the context (plain, gzip or zstd; -f then names a file
    in it), or else the Containerfile itself, with an empty context."""
    from imgtool.builder import BuildOptions, read_containerfile
    from imgtool.builder import build as do_build

    secret_files = {}
    for s in secrets:
        parts = dict(p.partition("=")[::2] for p in s.split(","))
        if "id" not in parts or "src" not in parts:
            raise click.BadParameter(f"{s!r}: expected id=NAME,src=FILE", param_hint="--secret")
        secret_files[parts["id"]] = Path(parts["src"]).resolve()
    agents = _ssh_agents(ssh)
    from_stdin = context == "-"
    if not from_stdin and not Path(context).is_dir():
        raise click.BadParameter(f"{context!r} is not a directory", param_hint="CONTEXT")
    if from_stdin and check_only:
        raise click.UsageError("--check reads a context directory or -f, not stdin")
    opts = BuildOptions(
        context=Path(context),
        stdin=sys.stdin.buffer if from_stdin else None,
        file=Path(file_) if file_ else None,
        tags=list(tags),
        target=target,
        build_args=_pairs(build_args, "--build-arg"),
        no_cache=no_cache,
        pull=pull,
        labels=_pairs(labels, "--label"),
        compression=compression,
        secrets=secret_files,
        ssh=agents,
        explain_cache=explain_cache,
        quiet=quiet,
        output=lambda line: click.echo(line, err=True),
    )
    if check_only:  # parse, type and plan: everything refused before a step runs
        from imgtool.builder.engine import check

        label, text = read_containerfile(opts)
        plan = check(text, label, opts, opts.output)
        shown = opts.file or opts.context / label
        count = sum(1 + len(st.instructions) for st in plan.stages)
        click.echo(f"{shown}: {count} instructions in {len(plan.stages)} stages, no errors")
        return
    _exit_on_termination()  # so that the build's work directory is removed on the way out
    # a failed RUN ends the command with the step's own status: cli's "build" convention
    result = do_build(store_of(ctx), opts)
    if iidfile:
        Path(iidfile).write_text(result.image_id)
    if quiet:
        click.echo(result.image_id)
        return
    click.echo(
        f"Built {result.image_id[7:19]} ({result.steps} steps, {result.cached} cached)"
        + (f": {', '.join(result.tags)}" if result.tags else "")
    )
    sys.stdout.flush()
