"""The build cache: step keys, the local cache, remote cache sources, and why a step missed.

A layer-making step (RUN, COPY, ADD, a WORKDIR that makes its directory) is looked up by its
key in the local cache (store/buildcache/KEY.json), then in each `CacheSource` in turn; a
remote hit is recorded locally too. Every such step of every stage built, hit or not, is
listed as a `CacheEntry` in the build's result, which is what a cache export writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from imgtool.builder.common import Layer
from imgtool.digest import Digest

CACHE_VERSION = "imgtool-build-cache-1"
LOCAL = "local"  # the name --explain-cache gives the store's own cache


def _key(*parts: object) -> str:
    raw = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return Digest.of(raw.encode()).encoded


@dataclass(frozen=True)
class CacheEntry:
    key: str  # the step's cache key (hex), as used for the local cache file
    layer: Layer  # the layer the step made (or found)
    stage: str  # the stage's name (or its index as a string)
    final: bool  # True for steps of the target stage (mode=min exports only these)


@runtime_checkable
class CacheSource(Protocol):
    """A cache a build reads after the local one misses (a registry, a directory…)."""

    name: str  # for messages, e.g. "registry localhost:5000/app/cache"

    def lookup(self, key: str) -> Layer | None:
        """The layer recorded for `key`; on a hit its blob is in the store."""
        ...


def cache_mount_dir(store_cache_dir: Path, id: str) -> Path:
    """Where `RUN --mount=type=cache,id=ID` keeps its files (the id names no path: hashed)."""
    return store_cache_dir / "mounts" / _key(id)[:16]


@dataclass(frozen=True)
class Lookup:
    layer: Layer | None
    where: str  # LOCAL, a source's name, or "" on a miss


class StepCache:
    """The local cache of a store, then the given sources; `has_blob` says whether a layer
    the local cache names is still in the store (gc may have taken it)."""

    def __init__(
        self,
        cache_dir: Path,
        has_blob: Callable[[str], bool],
        sources: tuple[CacheSource, ...] = (),
        disabled: bool = False,
    ) -> None:
        self.dir = cache_dir
        self.has_blob = has_blob
        self.sources = sources
        self.disabled = disabled  # --no-cache: nothing is read, everything is written

    def local(self, key: str) -> Layer | None:
        try:
            doc = json.loads((self.dir / f"{key}.json").read_text())
            layer = Layer(**doc)
        except (OSError, ValueError, TypeError):
            return None
        return layer if self.has_blob(layer.digest) else None

    def lookup(self, key: str) -> Lookup:
        if self.disabled:
            return Lookup(None, "")
        layer = self.local(key)
        if layer is not None:
            return Lookup(layer, LOCAL)
        for source in self.sources:
            layer = source.lookup(key)
            if layer is not None:
                self.put(key, layer)  # the next build finds it here
                return Lookup(layer, source.name)
        return Lookup(None, "")

    def put(self, key: str, layer: Layer) -> None:
        from imgtool.atomic import atomic_write

        self.dir.mkdir(parents=True, exist_ok=True)
        raw = json.dumps(dataclasses.asdict(layer)).encode()
        atomic_write(self.dir / f"{key}.json", raw, durable=False)

    def searched(self) -> str:
        """The caches a miss was looked for in, for --explain-cache."""
        return ", ".join([LOCAL, *(s.name for s in self.sources)])


class Explainer:
    """Remembers each step's inputs (per context, Containerfile, stage and line) so that a
    later miss can say which input changed."""

    def __init__(self, cache_dir: Path, context: Path, file_label: str) -> None:
        self.dir = cache_dir / "explain" / _key(str(context.resolve()), file_label)[:16]

    def record_of(self, stage: str, line: int) -> Path:
        return self.dir / f"{_key(stage)[:16]}.{line}.json"  # never a path from the build

    def explain(
        self,
        stage: str,
        line: int,
        inputs: dict[str, Any],
        found: Lookup,
        searched: str,
        say: bool = True,
    ) -> str:
        """The line to show for this step (empty unless `say`: why a step missed is worked
        out only for --explain-cache), and its inputs remembered for the next build."""
        self.dir.mkdir(parents=True, exist_ok=True)
        record = self.record_of(stage, line)
        if not say:
            text = ""
        elif found.layer is not None:
            text = f"  cache hit at line {line}: {found.where}"
        else:
            reason = "no earlier build of this step"
            with contextlib.suppress(OSError, ValueError):
                reason = _why(json.loads(record.read_text()), inputs)
            text = f"  cache miss at line {line}: {reason} (not in: {searched})"
        record.write_text(json.dumps(inputs, default=str))
        return text


def _why(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("instruction") != new.get("instruction"):
        return "the instruction changed"
    for k, v in (new.get("args") or {}).items():
        if (old.get("args") or {}).get(k) != v:
            return f"build arg {k} changed ({(old.get('args') or {}).get(k)!r} -> {v!r})"
    of, nf = old.get("files") or {}, new.get("files") or {}
    changed = sorted(p for p in set(of) | set(nf) if of.get(p) != nf.get(p))
    if changed:
        return "files changed: " + ", ".join(changed[:10])
    if old.get("parent") != new.get("parent"):
        return "an earlier step (or the base image) changed"
    return "the cache entry is gone (gc, or --no-cache)"
