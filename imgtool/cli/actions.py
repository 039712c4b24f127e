"""What `run` and `images` do once their command line is parsed, by click (cli/run.py,
cli/images.py) or by the lean parser (cli/fast.py). No click here: the fast path runs these
without importing it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from imgtool.cli.common import echo, human_size, resolve_name
from imgtool.cli.table import table_lines
from imgtool.store import Store

if TYPE_CHECKING:
    from imgtool.oci import Platform


def open_store(root: str | None) -> Store:
    return Store(Path(root) if root else None, resolve=resolve_name)


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
