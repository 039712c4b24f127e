"""What `run`, `images`, `pull` and `push` do once their command line is parsed, by click
(cli/run.py, cli/images.py, cli/transfer.py) or by the lean parser (cli/fast.py). No click here:
the fast path runs these without importing it."""

from __future__ import annotations

from collections.abc import Mapping

from imgtool.cli.common import echo, human_size, resolve_name
from imgtool.cli.table import table_lines
from imgtool.store import Store

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from imgtool.oci import Platform
    from imgtool.progress import Callback


def open_store(root: str | None) -> Store:
    return Store(root or None, resolve=resolve_name)


def run_container(store: Store, image: str, command: tuple[str, ...], o: Mapping) -> int:
    """`imgtool run`: the container's exit status (the detached id printed, 0)."""
    from imgtool.runner import RunOptions, execute, parse_limits, prepare, start_detached

    # a bad value exits 125 as docker's does: cli's "run" convention
    opts = RunOptions(
        command=list(command),
        entrypoint=o["entrypoint"],
        env=list(o["env"]),
        workdir=o["workdir"],
        user=o["user"],
        volumes=list(o["volume"]),
        hostname=o["hostname"],
        name=str(o["name"]),
        network=str(o["network"]),
        limits=parse_limits(o["memory"], o["cpus"], o["pids_limit"]),
        rm=bool(o["rm"]),
        detach=bool(o["detach"]),
        tty=bool(o["tty"]),
        interactive=bool(o["interactive"]),
        init=bool(o["init"]),
        read_only=bool(o["read_only"]),
        platform=_platform(o["platform"]),
        publish=list(o["publish"]),
        publish_all=bool(o["publish_all"]),
        security_opts=list(o["security_opt"]),
        devices=list(o["device"]),
        cap_add=list(o["cap_add"]),
        cap_drop=list(o["cap_drop"]),
        privileged=bool(o["privileged"]),
    )
    rec, spec = prepare(store, image, opts)
    if opts.detach:
        echo(start_detached(store, rec, spec).id)
        return 0
    outcome = execute(store, rec, spec)
    if outcome.oom_killed:
        echo(
            f"imgtool: container {rec.name} was killed: out of memory (limit {o['memory']})",
            err=True,
        )
    return outcome.status


def _platform(text: object) -> Platform | None:
    if not text:
        return None
    from imgtool import oci

    return oci.Platform.parse(str(text))


def pull_image(store: Store, reference: str, o: Mapping) -> None:
    """`imgtool pull`: the pulled name (with -q), or its digest, index and source."""
    from imgtool.cli.common import transport
    from imgtool.puller import PullOptions, pull

    quiet = bool(o["quiet"])
    opts = PullOptions(
        platform=_platform(o["platform"]),
        all_platforms=bool(o["all_platforms"]),
        transport=transport(bool(o["insecure"]), o["cert_dir"]),
        progress=_progress("Downloading", quiet),
    )
    result = pull(reference, store, opts)
    if quiet:
        echo(result.name)
        return
    echo(f"Digest: {result.digest}")
    if result.index_digest and result.index_digest != result.digest:
        echo(f"Index: {result.index_digest} ({result.platform})")
    echo(f"Pulled {result.name} from {result.source} ({human_size(result.fetched_bytes)} fetched)")


def push_image(store: Store, name: str, o: Mapping) -> None:
    """`imgtool push`: the pushed digest (with -q), or what was uploaded, mounted, skipped."""
    from imgtool.cli.common import transport
    from imgtool.pusher import PushOptions, push

    quiet = bool(o["quiet"])
    opts = PushOptions(
        transport=transport(bool(o["insecure"]), o["cert_dir"]),
        progress=_progress("Uploading", quiet),
    )
    result = push(name, store, o["destination"], opts)
    if quiet:
        echo(result.digest)
        return
    echo(
        f"Pushed {result.reference}: digest {result.digest} "
        f"({result.uploaded} uploaded, {result.mounted} mounted, "
        f"{result.skipped} already there)"
    )


def _progress(verb: str, quiet: bool) -> Callback:
    """The progress renderer; none under -q, which shows nothing (cli/progress.py imports
    click, which a quiet re-pull then never loads)."""
    if quiet:
        from imgtool.progress import ignore

        return ignore
    from imgtool.cli.progress import Renderer

    return Renderer(verb, quiet)


def list_images(store: Store, as_json: bool, digests: bool) -> None:
    """`imgtool images`: a table, or JSON."""
    from imgtool.inspect import list_images as rows_of

    rows = rows_of(store)
    if as_json:
        import json

        echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = [("NAME", "DIGEST", "IMAGE ID", "CREATED", "SIZE")]
    for r in rows:
        digest = r.digest if digests else r.digest.split(":", 1)[1][:12]
        table.append(
            (
                r.name,
                digest,
                r.image_id.split(":", 1)[1][:12] if r.image_id else "-",
                r.created_ago,
                human_size(r.size),
            )
        )
    echo("\n".join(table_lines(table)))
