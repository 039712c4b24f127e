"""The Python API: a store and the verbs over it, as `import imgtool` exports them.

Silent: nothing is printed; what a user would see goes to an optional `progress` callback as
`imgtool.Event` values. Every argument is checked before anything is created, and every
failure is an `imgtool.errors.ImgtoolError` (docs/api.md has the tree). The engines (puller,
pusher, builder, runner, analyze) are imported inside each verb, so that `import imgtool`
and the CLI's start-up pay only for what they use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from imgtool.errors import InvalidArgument
from imgtool.progress import Callback, Event, ignore
from imgtool.store import Store

if TYPE_CHECKING:
    from imgtool import oci
    from imgtool.analyze import Report, RuleResult, Rules
    from imgtool.builder import BuildResult
    from imgtool.inspect import ImageRow
    from imgtool.puller import PullResult
    from imgtool.pusher import PushResult
    from imgtool.registry.client import TransportOptions
    from imgtool.sandbox.cgroups import Limits

Network = Literal["bridge", "none", "host"]
Compression = Literal["gzip", "zstd"]
NETWORKS: tuple[Network, ...] = ("bridge", "none", "host")
COMPRESSIONS: tuple[Compression, ...] = ("gzip", "zstd")
_T = TypeVar("_T")


@dataclass(frozen=True)
class RunResult:
    """How a container ended: `status` as docker reports it (the exit code, 128+N for signal
    N, 137 for an OOM kill); `container_id` names its record (gone when `rm=True`)."""

    container_id: str
    name: str
    status: int
    oom_killed: bool


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
    from imgtool.registry.client import TransportOptions

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
    image `tags`. Each step's line goes to `progress` as Event("info", message=…); without a
    callback, RUN steps' output is held back too (shown on stderr only when a step fails).

    Raises ContainerfileError (file, line, column), RunStepFailed (stage, instruction,
    status), BuildError, and what pulling a base image raises."""
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
) -> RunResult:
    """Run `command` (default: the image's Entrypoint and Cmd) in a new container from
    `image`, in the foreground, and return how it ended. The container's stdin, stdout and
    stderr are this process's.

    `memory` as docker's -m ("64m", "1g", or bytes; 0: none), `cpus` as --cpus, `env` items
    NAME=value, `volumes` /host:/container[:ro]. Raises InvalidArgument (before anything is
    created), ImageNotFound, and the runner's RunError (a SandboxError's step, path, errno in
    its message; `status` 125, or 126/127 when the command cannot be executed)."""
    from imgtool.runner import RunOptions, execute, prepare

    if network not in NETWORKS:
        raise InvalidArgument("network", network, "expected bridge, none or host")
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
    )
    rec, spec = prepare(store, image, opts)
    outcome = execute(store, rec, spec)
    return RunResult(rec.id, rec.name, outcome.status, outcome.oom_killed)


def parse_limits(memory: str | int | None, cpus: str | float | None, pids: int | None) -> Limits:
    """Docker's -m, --cpus and --pids-limit, checked: a bad value is an InvalidArgument naming
    it (the CLI's `run` uses this too)."""
    from imgtool.sandbox import cgroups

    return cgroups.Limits(
        _parsed("memory", memory, cgroups.parse_memory),
        _parsed("cpus", cpus, cgroups.parse_cpus),
        cgroups.parse_pids(pids),
    )


def _parsed(name: str, value: object, parse: Callable[[str], _T]) -> _T | None:
    if value is None:
        return None
    try:
        return parse(str(value))
    except ValueError as e:
        raise InvalidArgument(name, value, str(e)) from None


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
