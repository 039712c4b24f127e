"""The Python API: a store and the verbs over it, as `import imgtool` exports them.

Silent: nothing is printed; what a user would see goes to an optional `progress` callback as
`imgtool.Event` values. Every argument is checked before anything is created, and every
failure is an `imgtool.errors.ImgtoolError` (docs/api.md has the tree). The engines (puller,
pusher, builder, runner, analyze) are imported inside each verb, so that `import imgtool`
and the CLI's start-up pay only for what they use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from imgtool.errors import InvalidArgument
from imgtool.progress import Callback, Event, ignore
from imgtool.store import Store
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any, Literal

    from imgtool import oci
    from imgtool.analyze import Report, RuleResult, Rules
    from imgtool.builder import BuildResult
    from imgtool.inspect import ImageRow
    from imgtool.puller import PullResult
    from imgtool.pusher import PushResult
    from imgtool.registry.options import TransportOptions

    Network = Literal["bridge", "none", "host"]
    Compression = Literal["gzip", "zstd"]

NETWORKS: tuple[Network, ...] = ("bridge", "none", "host")
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd")


class RunResult(Frozen):
    """How a container ended: `status` as docker reports it (the exit code, 128+N for signal
    N, 137 for an OOM kill); `container_id` names its record (gone when `rm=True`)."""

    __slots__ = ("container_id", "name", "status", "oom_killed")
    container_id: str
    name: str
    status: int
    oom_killed: bool

    def __init__(self, container_id: str, name: str, status: int, oom_killed: bool) -> None:
        self._init(container_id, name, status, oom_killed)


# --- registries ---------------------------------------------------------------------------


def pull(
    store: Store,
    reference: str,
    *,
    platform: str | None = None,
    all_platforms: bool = False,
    insecure: bool = False,
    cert_dir: str | Path | None = None,
    progress: Callback | None = None,
) -> PullResult:
    """Pull `reference` (`busybox`, `localhost:5000/app:1`, `name@sha256:…`) into `store`.

    `platform` (`linux/arm64`) picks one image of an index (default: this host's);
    `all_platforms` keeps the whole index. Raises InvalidReference, InvalidPlatform,
    RegistryError (AuthError, NotFound, TooManyRequests, RegistryUnavailable), DigestMismatch,
    SpecError. Nothing is named unless every blob arrived and verified."""
    from imgtool.puller import PullOptions
    from imgtool.puller import pull as do_pull

    opts = PullOptions(
        platform=_platform(platform),
        all_platforms=_exclusive_platforms(all_platforms, platform),
        transport=_transport(insecure, cert_dir, progress),
        progress=progress or ignore,
    )
    return do_pull(reference, store, opts)


def push(
    store: Store,
    name: str,
    destination: str | None = None,
    *,
    insecure: bool = False,
    cert_dir: str | Path | None = None,
    progress: Callback | None = None,
) -> PushResult:
    """Push the image `name` of `store` to `destination` (default: its own name).

    Raises ImageNotFound, InvalidReference, RegistryError and its kinds, SpecError."""
    from imgtool.pusher import PushOptions
    from imgtool.pusher import push as do_push

    opts = PushOptions(
        transport=_transport(insecure, cert_dir, progress), progress=progress or ignore
    )
    return do_push(name, store, destination, opts)


def _transport(
    insecure: bool, cert_dir: str | Path | None, progress: Callback | None
) -> TransportOptions:
    from imgtool.registry.options import TransportOptions

    report = progress or ignore
    if cert_dir is not None and not Path(cert_dir).is_dir():
        raise InvalidArgument("cert_dir", str(cert_dir), f"{cert_dir} is not a directory")
    return TransportOptions(
        insecure=insecure,
        cert_dir=Path(cert_dir) if cert_dir is not None else None,
        notice=lambda text: report(Event("info", message=f"warning: {text}")),
    )


def _platform(text: str | None) -> oci.Platform | None:
    from imgtool import oci

    return oci.Platform.parse(text) if text is not None else None  # raises InvalidPlatform


def _exclusive_platforms(all_platforms: bool, platform: str | None) -> bool:
    if all_platforms and platform is not None:
        raise InvalidArgument("platform", platform, "all_platforms keeps every platform: not both")
    return all_platforms


# --- build --------------------------------------------------------------------------------


def build(
    store: Store,
    context: str | Path = ".",
    *,
    containerfile: str | Path | None = None,
    tags: Sequence[str] = (),
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    no_cache: bool = False,
    pull: bool = False,
    compression: Compression = "gzip",
    progress: Callback | None = None,
) -> BuildResult:
    """Build the Containerfile (default: `context`/Containerfile or Dockerfile) and name the
    image `tags`. Each step's line, and each line RUN steps write, goes to `progress` as
    Event("info", message=…). Nothing is printed: without a callback, a failed RUN step's last
    4000 bytes of output are on the error, as RunStepFailed.output_tail.

    Raises ContainerfileError (file, line, column), RunStepFailed (stage, instruction,
    status, output_tail), BuildError, and what pulling a base image raises."""
    from imgtool.builder import BuildOptions
    from imgtool.builder import build as do_build

    root = Path(context)
    if not root.is_dir():
        raise InvalidArgument("context", str(context), f"{context} is not a directory")
    if compression not in COMPRESSIONS:
        raise InvalidArgument("compression", compression, "expected gzip or zstd")
    report = progress

    opts = BuildOptions(
        context=root,
        file=Path(containerfile) if containerfile is not None else None,
        tags=list(tags),
        target=target,
        build_args=dict(build_args or {}),
        labels=dict(labels or {}),
        no_cache=no_cache,
        pull=pull,
        compression=compression,
        quiet=report is None,
        output=(lambda line: report(Event("info", message=line))) if report else _drop,
    )
    return do_build(store, opts)


def _drop(_: str) -> None:
    pass


# --- run ----------------------------------------------------------------------------------


def run(
    store: Store,
    image: str,
    command: Sequence[str] = (),
    *,
    network: Network = "bridge",
    memory: str | int | None = None,
    cpus: str | float | None = None,
    pids_limit: int | None = None,
    env: Sequence[str] = (),
    workdir: str | None = None,
    user: str | None = None,
    volumes: Sequence[str] = (),
    entrypoint: str | None = None,
    name: str = "",
    rm: bool = False,
    read_only: bool = False,
    platform: str | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
) -> RunResult:
    """Run `command` (default: the image's Entrypoint and Cmd) in a new container from
    `image`, in the foreground, and return how it ended. The container's stdin is this
    process's; its stdout and stderr too, unless `stdout`/`stderr` give an open file
    descriptor to write to instead (a pipe's write end, a file's: the caller keeps and closes
    it; stderr=stdout puts both in one).

    `memory` as docker's -m ("64m", "1g", or bytes; 0: none), `cpus` as --cpus, `env` items
    NAME=value, `volumes` /host:/container[:ro]. Raises InvalidArgument (before anything is
    created), ImageNotFound, and the runner's RunError (a SandboxError's step, path, errno in
    its message; `status` 125, or 126/127 when the command cannot be executed)."""
    from imgtool.runner import RunOptions, execute, parse_limits, prepare

    if network not in NETWORKS:
        raise InvalidArgument("network", network, "expected bridge, none or host")
    _check_descriptor("stdout", stdout)
    _check_descriptor("stderr", stderr)
    opts = RunOptions(
        command=list(command),
        entrypoint=entrypoint,
        env=list(env),
        workdir=workdir,
        user=user,
        volumes=list(volumes),
        name=name,
        network=network,
        limits=parse_limits(memory, cpus, pids_limit),
        rm=rm,
        read_only=read_only,
        platform=_platform(platform),
        stdout=stdout,
        stderr=stderr,
    )
    rec, spec = prepare(store, image, opts)
    outcome = execute(store, rec, spec)
    return RunResult(rec.id, rec.name, outcome.status, outcome.oom_killed)


def _check_descriptor(name: str, fd: int | None) -> None:
    if fd is None:
        return
    import os

    if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
        raise InvalidArgument(name, fd, f"{fd!r} is not a file descriptor")
    try:
        os.fstat(fd)
    except OSError:
        raise InvalidArgument(name, fd, f"file descriptor {fd} is not open") from None


# --- layers and size gates ----------------------------------------------------------------


def layers(
    store: Store,
    image: str,
    *,
    platform: str | None = None,
    remote: bool = False,
    insecure: bool = False,
) -> Report:
    """Per-layer sizes, file counts, history and wasted space of `image`: a name in the store,
    `oci:DIR[:REF]`, `docker-archive:FILE[:REF]`, `oci-archive:FILE[:REF]`, or (with
    `remote`) a registry reference, read from its manifest and config only.

    Raises ImageNotFound, InvalidPlatform, SpecError, RegistryError."""
    from imgtool.analyze import report
    from imgtool.layer.index import writable
    from imgtool.sources import open_source

    source = open_source(image, store, remote, _platform(platform), insecure)
    cache = store.root / "index" if writable(store.root) else None
    return report(source, cache)


def check(report: Report, rules: Rules, baseline: Report | None = None) -> list[RuleResult]:
    """Each rule's result (status pass, fail, warn or skip; a message) for `report`; growth
    rules compare with `baseline`. A failed rule is a result, not an error."""
    from imgtool.analyze import check as do_check

    return do_check(report, rules, baseline)


# --- the store ----------------------------------------------------------------------------


def images(store: Store) -> list[ImageRow]:
    """The named images of `store`: name, digest, image id, created, size."""
    from imgtool.inspect import list_images

    return list_images(store)


def inspect_image(store: Store, name: str, *, platform: str | None = None) -> dict[str, Any]:
    """The image's name, digest, platform, manifest and config, as `imgtool inspect` shows."""
    from imgtool.inspect import inspect_image as do_inspect

    return do_inspect(store, name, _platform(platform))


def tag(store: Store, source: str, target: str) -> str:
    """Give the image `source` the name `target`; returns the name as normalized."""
    new = str(store.resolve(target))  # raises InvalidReference before the store is touched
    with store.writing():
        _, desc = store.find(source)
        store.set_ref(new, desc)
    return new


def rmi(store: Store, name: str) -> str:
    """Remove the name `name` (its blobs go with the next gc); returns the name removed."""
    found, _ = store.find(name)
    store.remove_ref(found)
    return found
