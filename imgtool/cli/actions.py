"""What `run`, `images`, `pull`, `push`, `copy`, `inspect`, `tag`, `rmi` and `load` do once
their command line is parsed, by click (cli/run.py, cli/images.py, cli/transfer.py,
cli/archive.py) or by the lean parser (cli/fast.py). No click here:
the fast path runs these without importing it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from imgtool.cli.common import echo, human_size, resolve_name
from imgtool.cli.table import table_lines
from imgtool.store import Store

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from imgtool.oci import Platform
    from imgtool.progress import Callback
    from imgtool.registry.credentials import Credentials


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


def copy_usage_error(source: str, destination: str, o: Mapping) -> str | None:
    """What makes a `copy` command line wrong before anything is opened (click reports it as
    a usage error; the lean parser leaves such a line to click), or None."""
    from imgtool.copy import Location

    if o["all_platforms"] and o["platform"]:
        return "--all copies every platform: drop --platform, or --all"
    creds = (
        ("--src-creds", o["src_creds"], source),
        ("--dest-creds", o["dest_creds"], destination),
    )
    for flag, value, where in creds:
        if value is not None and Location.parse(where).transport != "docker":
            return f"{flag} is for a docker:// registry, not {where}"
    return None


def copy_image(
    store: Store,
    source: str,
    destination: str,
    o: Mapping,
    ask_password: Callable[[str], str] | None = None,
) -> None:
    """`imgtool copy`: the digest written (with -q), or what was copied where. Credentials
    given as USER alone get their password from `ask_password` (without it: refused)."""
    from imgtool.cli.common import transport
    from imgtool.copy import CopyOptions, copy

    quiet = bool(o["quiet"])
    insecure, cert_dir = bool(o["insecure"]), o["cert_dir"]
    src_creds = _credentials("--src-creds", o["src_creds"], ask_password)
    dest_creds = _credentials("--dest-creds", o["dest_creds"], ask_password)
    opts = CopyOptions(
        all_platforms=bool(o["all_platforms"]),
        platform=_platform(o["platform"]),
        source_transport=transport(insecure, cert_dir, credentials=src_creds),
        destination_transport=transport(insecure, cert_dir, credentials=dest_creds),
        progress=_progress("Copying", quiet),
    )
    result = copy(source, destination, store, opts)
    if quiet:
        echo(result.digest)
        return
    what = f"{result.platforms} platforms" if result.platforms > 1 else "1 image"
    echo(f"Copied {what} from {result.source} to {result.destination}: {result.digest}")


def _credentials(
    flag: str, text: str | None, ask_password: Callable[[str], str] | None
) -> Credentials | None:
    """USER:PASSWORD as skopeo's --src-creds; a missing password is asked for."""
    if text is None:
        return None
    from imgtool.registry.credentials import Credentials

    user, sep, password = text.partition(":")
    if not sep:
        if ask_password is None:
            from imgtool.errors import InvalidArgument

            raise InvalidArgument(flag, text, f"no password for {user}, and none can be asked")
        password = ask_password(user)
    return Credentials(user, password)


def _progress(verb: str, quiet: bool) -> Callback:
    """The progress renderer; none under -q, which shows nothing (a quiet copy or re-pull
    never loads cli/progress.py)."""
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


def inspect_image(store: Store, name: str, o: Mapping) -> None:
    """`imgtool inspect`: the manifest and config as JSON; with --raw or --config, the bytes
    as stored."""
    platform = _platform(o["platform"])
    if o["raw"] or o["config_only"]:
        import sys

        img = store.image(name, platform)
        data = img.config.raw if o["config_only"] else store.read_blob(img.descriptor.digest)
        out = sys.stdout.buffer
        out.write(data)  # the exact bytes, no newline added: they hash to the digest
        out.flush()
        return
    import json

    from imgtool.inspect import inspect_image as described

    echo(json.dumps(described(store, name, platform), indent=2))


def tag_image(store: Store, source: str, target: str) -> None:
    """`imgtool tag`: the new name, in full."""
    new = str(store.resolve(target))
    with store.writing():
        _, desc = store.find(source)
        store.set_ref(new, desc)
    echo(new)


def remove_names(store: Store, names: tuple[str, ...]) -> None:
    """`imgtool rmi`: each name removed, as it was found."""
    for name in names:
        found, _ = store.find(name)
        store.remove_ref(found)
        echo(f"Untagged: {found}")


def load_archive(store: Store, path: str, quiet: bool) -> None:
    """`imgtool load` of the archive at `path` ("-": stdin): the names (or ids) loaded."""
    import sys

    from imgtool.copy import load

    stream = sys.stdin.buffer if path == "-" else None
    for image in load(store, path, stream):
        shown = list(image.names) or [image.image_id or image.digest]
        for name in shown:
            if quiet:
                echo(name)
            elif image.names:
                echo(f"Loaded image: {name} ({image.digest})")
            else:
                echo(f"Loaded image ID: {name}")
