"""`imgtool build`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from imgtool.cli import cli
from imgtool.cli.common import store_of

if TYPE_CHECKING:
    from imgtool.buildcache import CacheSpec, ImportedCache
    from imgtool.builder import BuildOptions, BuildResult
    from imgtool.store import Store


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


def _build_showing_failed_output(store: Store, opts: BuildOptions) -> BuildResult:
    """The build; a failed RUN step's held output (quiet) goes to stderr before the error."""
    from imgtool.builder import build as do_build
    from imgtool.errors import RunStepFailed

    try:
        return do_build(store, opts)
    except RunStepFailed as e:
        if e.output_tail:
            tail = e.output_tail
            sys.stderr.write(tail if tail.endswith("\n") else tail + "\n")
            sys.stderr.flush()
        raise


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
@click.option(
    "--cache-from",
    "cache_from",
    multiple=True,
    metavar="SPEC",
    help="Also read the build cache from type=registry,ref=REF or type=local,src=DIR "
    "(,mounts=true restores cache mounts first). Repeatable.",
)
@click.option(
    "--cache-to",
    "cache_to",
    multiple=True,
    metavar="SPEC",
    help="Write the build cache to type=registry,ref=REF or type=local,dest=DIR "
    "(,mode=min|max, ,mounts=true). Repeatable.",
)
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
    cache_from: tuple[str, ...],
    cache_to: tuple[str, ...],
    check_only: bool,
    quiet: bool,
) -> None:
    """Build an image from a Containerfile and the CONTEXT directory.

    CONTEXT `-` reads stdin: a tar of the context (plain, gzip or zstd; -f then names a file
    in it), or else the Containerfile itself, with an empty context."""
    from imgtool.builder import BuildOptions, read_containerfile

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
    from imgtool.buildcache.spec import parse_spec

    to_specs = [parse_spec(t, "to") for t in cache_to]  # a bad spec fails before any step
    from_specs = [parse_spec(t, "from") for t in cache_from]
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
        live_output=not quiet,
    )
    if check_only:  # parse, type and plan: everything refused before a step runs
        from imgtool.builder.engine import check

        label, text = read_containerfile(opts)
        plan = check(text, label, opts, opts.output)
        shown = opts.file or opts.context / label
        count = sum(1 + len(st.instructions) for st in plan.stages)
        click.echo(f"{shown}: {count} instructions in {len(plan.stages)} stages, no errors")
        return
    store = store_of(ctx)
    sources = _open_caches(store, from_specs, quiet)
    opts.cache_from = sources
    _exit_on_termination()  # so that the build's work directory is removed on the way out
    # a failed RUN ends the command with the step's own status: cli's "build" convention
    result = _build_showing_failed_output(store, opts)
    if to_specs:
        _export_caches(store, result, to_specs, sources, quiet)
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


def _open_caches(store: Store, specs: list[CacheSpec], quiet: bool) -> tuple[ImportedCache, ...]:
    """The --cache-from sources; the registry client is loaded only when one is given."""
    if not specs:
        return ()
    from imgtool.buildcache import open_source
    from imgtool.cli.common import transport

    reach = transport(False, None)
    sources = tuple(open_source(store, s, reach) for s in specs)
    for src in sources:
        if not src.found and not quiet:
            click.echo(f"no build cache at {src.name} yet", err=True)
    return sources


def _export_caches(
    store: Store,
    result: BuildResult,
    specs: list[CacheSpec],
    sources: tuple[ImportedCache, ...],
    quiet: bool,
) -> None:
    from imgtool.buildcache import export
    from imgtool.cli.common import transport

    reach = transport(False, None)
    for spec in specs:
        done = export(
            store, result.cache_entries, spec,
            mount_ids=result.cache_mounts, sources=sources, transport=reach,
        )  # fmt: skip
        if not quiet:
            click.echo(
                f"cache {done.location}: {done.entries} steps; {done.uploaded} blobs sent, "
                f"{done.mounted} mounted, {done.skipped} already there",
                err=True,
            )
