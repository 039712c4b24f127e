"""Values and small helpers shared by the build steps."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from imgtool import oci
from imgtool.builder import sourcetree
from imgtool.builder.sourcetree import Comps, Root
from imgtool.containerfile.parser import Instruction
from imgtool.containerfile.plan import Plan, StagePlan
from imgtool.errors import BuildError

if TYPE_CHECKING:
    from imgtool.builder.cache import CacheEntry, CacheSource

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STUB_PATHS = ("proc", "sys", "dev", "etc/hosts", "etc/hostname", "etc/resolv.conf")


@dataclass
class BuildOptions:
    context: Path
    file: Path | None = None
    tags: list[str] = field(default_factory=list)
    target: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    pull: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    compression: str = "gzip"
    secrets: dict[str, Path] = field(default_factory=dict)
    ssh: dict[str, Path] = field(default_factory=dict)  # --ssh id=socket, for RUN ssh mounts
    explain_cache: bool = False
    quiet: bool = False
    # the build's lines; the library itself prints nothing
    output: Callable[[str], None] = lambda _line: None
    # RUN steps' output straight to our stdout/stderr as it comes (the CLI, not quiet); else
    # held, and given to `output` line by line (or, quiet, kept for RunStepFailed.output_tail)
    live_output: bool = False
    # `imgtool build -`: the context as a tar, or the Containerfile (the context then empty)
    stdin: BinaryIO | None = None
    # remote caches, read in order after the local cache misses (see builder.cache)
    cache_from: tuple[CacheSource, ...] = ()


def foreign_platform(config: dict[str, Any]) -> oci.Platform | None:
    """The platform of a stage's config when it is not the host's (no step can run there:
    there is no emulation here), else None."""
    platform = oci.Platform(
        config.get("os") or "linux", config.get("architecture") or "", config.get("variant") or ""
    )
    host = oci.Platform.host()
    any_variant = oci.Platform(host.os, host.architecture)
    if not platform.architecture or platform.serves(any_variant):
        return None
    return platform.normalized()


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    media_type: str
    diff_id: str
    created: str = ""  # when the step that made it ran: a cached rebuild keeps it


@dataclass
class ImageState:
    config: dict[str, Any]
    layers: list[Layer]
    key: str  # the cache chain key of everything so far
    # config.Env as a dict, and where each name sits in the list: read once per stage, then
    # kept in step, so that an ENV costs the same after 10 ENVs as after 10,000
    _env: dict[str, str] | None = field(default=None, repr=False)
    _env_at: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The image's environment (read only: change it with set_env)."""
        if self._env is None:
            self._env, self._env_at = {}, {}
            items = self.config.setdefault("config", {}).get("Env") or []
            for i, item in enumerate(items):
                k, _, v = item.partition("=")
                self._env[k] = v
                self._env_at[k] = i
        return self._env

    def set_env(self, name: str, value: str) -> None:
        env = self.env
        items = self.config["config"].get("Env") or []
        self.config["config"]["Env"] = items
        if name in env:
            items[self._env_at[name]] = f"{name}={value}"
        else:
            self._env_at[name] = len(items)
            items.append(f"{name}={value}")
        env[name] = value


@dataclass(frozen=True)
class BuildResult:
    image_id: str  # the config digest
    manifest_digest: str
    tags: list[str]
    steps: int
    cached: int
    # every layer-making step of every stage built, hits included, in build order
    cache_entries: tuple[CacheEntry, ...] = ()
    # the ids of the RUN --mount=type=cache the build used (what mounts=true exports)
    cache_mounts: tuple[str, ...] = ()


@dataclass
class _Mount:
    kind: str
    target: str
    source: str
    readonly: bool
    key: str
    copy_of: tuple[Root, Comps] | None = None  # rw binds get a copy: their writes are dropped
    size: int = 0  # a tmpfs's size in bytes; 0: the kernel's default
    # a bind of a stage or an image: (from, source, readwrite), made into a tree only when the
    # step runs (its key says what the stage or image is: a cache hit flattens nothing)
    deferred: tuple[str, str, bool] | None = None


@dataclass
class _StageContext:
    """One stage as it builds: what its steps see and what they made."""

    stage: StagePlan
    plan: Plan
    meta: dict[str, str]
    args: dict[str, str]
    used_args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False
    made: list[tuple[str, Layer]] = field(default_factory=list)  # (cache key, layer) per step
    steps: int = 0  # layer-making steps (RUN, COPY, ADD) run
    hits: int = 0  # of which found in a cache
    prefix: str = ""  # what starts each output line: "[stage] "

    def shell(self, cfg: dict) -> list[str]:
        return list(cfg.get("Shell") or DEFAULT_SHELL)


@contextlib.contextmanager
def _redirect(fileobj: Any) -> Any:
    if fileobj is None:
        yield
        return
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(fileobj.fileno(), 1)
        os.dup2(fileobj.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def read_in_context(context: Root, name: str, advice: str = "") -> bytes | None:
    """A build file found in the context (Containerfile, .dockerignore), resolved and read
    inside it; None when there is none. A symlink that leads out of the context is an error
    naming it: the context's files are a stranger's, the host's are not theirs to name."""
    try:
        comps = sourcetree.resolve(context.fd, name)
    except (FileNotFoundError, NotADirectoryError):
        link = sourcetree.escaping_link(context.fd, name)
        if link is None:
            return None
        raise BuildError(
            f"{name!r} is a symlink to {link[1]!r}, outside the build context{advice}"
        ) from None
    try:
        return sourcetree.read_bytes(context.fd, comps)
    except OSError as e:
        raise BuildError(f"cannot read {name!r} in the build context: {e.strerror}") from None


def decode_text(raw: bytes, label: str) -> str:
    """A build file's text: UTF-8 (a leading byte-order mark dropped, as Docker does)."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise BuildError(
            f"{label}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})"
        ) from None


def read_containerfile(opts: BuildOptions, context: Root | None = None) -> tuple[str, str]:
    """(file name, text) of the Containerfile: the one `-f` names, read where the user's path
    leads (their own choice), or else Containerfile or Dockerfile found inside the context."""
    if opts.file is not None:
        try:
            raw = opts.file.read_bytes()
        except OSError as e:
            raise BuildError(f"cannot read {opts.file}: {e.strerror}") from None
        return opts.file.name, decode_text(raw, str(opts.file))
    root = context or Root(opts.context, "the build context")
    try:
        for name in ("Containerfile", "Dockerfile"):
            found = read_in_context(root, name, " (give it with -f to use it)")
            if found is not None:
                return name, decode_text(found, str(opts.context / name))
    finally:
        if context is None:
            root.close()
    raise BuildError(f"no Containerfile or Dockerfile in {opts.context} (use -f)")


def _heredoc_script(script: str, inst: Instruction) -> str:
    """`RUN <<EOF` alone runs the heredoc as a script; otherwise the shell gets the command
    line and the heredoc bodies, as it would read them from a terminal."""
    if script.strip().startswith("<<") and len(script.split()) == 1:
        return inst.heredocs[0].content
    parts = [script]
    for h in inst.heredocs:
        parts.append(h.content.rstrip("\n"))
        parts.append(h.name)
    return "\n".join(parts) + "\n"


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds") from None


def _timestamp(epoch: int | None) -> str:
    when = dt.datetime.fromtimestamp(epoch if epoch is not None else time.time(), dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (
        "Z" if epoch is not None else f".{when.microsecond:06d}Z"
    )
