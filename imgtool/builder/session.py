"""What the steps of one build share: the store, the options, the work directory, the trees
COPY reads, the cache, and the helpers every kind of step uses (the stage's filesystem, a
layer from a directory, history entries). Stages may build in threads at once: what they
share is guarded by one lock.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.builder import workspace
from imgtool.builder.cache import Explainer, StepCache, _key
from imgtool.builder.common import (
    BuildOptions,
    ImageState,
    Layer,
    _source_date_epoch,
    _StageContext,
    _timestamp,
    decode_text,
    read_in_context,
)
from imgtool.builder.sourcetree import Comps, Root
from imgtool.containerfile import dockerignore
from imgtool.containerfile.instructions import Typed
from imgtool.errors import BuildError, ImageNotFound
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store, StoredImage

if TYPE_CHECKING:
    from imgtool.builder.forkserver import ForkServer
    from imgtool.builder.layered import LayerStack


class BuildSession:
    def __init__(self, store: Store, opts: BuildOptions) -> None:
        self.store = store.init()
        self.opts = opts
        self.layers = LayerStore(store)
        self.cache_dir = store.root / "buildcache"
        self.cache = StepCache(self.cache_dir, self.store.has_blob, opts.cache_from, opts.no_cache)
        self.explainer: Explainer | None = None  # once the Containerfile is known
        self.epoch = _source_date_epoch()
        self.results: dict[int, ImageState] = {}
        self.unpacked: dict[tuple[str, ...], list[str]] = {}  # diff_ids -> unpacked keys
        self.file_label = ""
        self.ignore = dockerignore.PatternMatcher([])
        self.stdin_containerfile: bytes | None = None
        self.cache_mounts: list[str] = []  # ids of the RUN --mount=type=cache used, in order
        self.lock = threading.RLock()  # the shared dicts, the output, a fork for a RUN step
        self.children: set[int] = set()  # processes running RUN steps of stages in threads
        self.fork_server: ForkServer | None = None  # while stages build in threads
        self.cancelled = threading.Event()  # a stage failed: the others stop at their next step
        self._seccomp: dict[tuple[str, ...], bytes] = {}  # caps -> compiled default filter
        # locked while the build runs, gc removes only the ones nobody holds; released by
        # close(), or here when the context cannot be had
        self.work, self._work_lock = workspace.hold_new(self.store.root / "build")
        try:
            # every tree COPY reads, held open for the build: the context, flattened stages
            self.context = self._open_context()
        except BaseException:
            workspace.release(self.work, self._work_lock)
            raise
        self.roots: dict[str, Root] = {"context": self.context}

    def _open_context(self) -> Root:
        """The context directory; for `build -`, a directory in the work dir that stdin's tar
        is extracted into, or that stays empty when stdin is the Containerfile."""
        if self.opts.stdin is None:
            return Root(self.opts.context, "the build context")
        from imgtool.builder.stdincontext import read_stdin_context  # `build -` only

        where = self.work / "context"
        where.mkdir()
        self.stdin_containerfile = read_stdin_context(self.opts.stdin, where)
        if self.stdin_containerfile is not None and self.opts.file is not None:
            raise BuildError("-f cannot name a Containerfile when stdin is the Containerfile")
        return Root(where, "the build context (stdin)")

    def default_seccomp(self, caps: tuple[str, ...]) -> bytes:
        """Docker's default seccomp program for RUN steps: from the store's cache that `run`
        uses too (compiling it is most of 10 ms), read once per build."""
        with self.lock:
            if caps not in self._seccomp:
                from imgtool.sandbox import seccomp_cache  # only when a step runs

                where = self.store.root / "cache" / "seccomp"
                self._seccomp[caps] = seccomp_cache.default_filter(caps, where)
            return self._seccomp[caps]

    def close(self) -> None:
        for root in self.roots.values():
            root.close()
        workspace.release(self.work, self._work_lock)

    def say(self, text: str) -> None:
        if not self.opts.quiet:
            with self.lock:
                self.opts.output(text)

    def file_in_stdin_context(self, name: str) -> tuple[str, str]:
        """-f with a context tar on stdin names a file in that context, as with Docker."""
        raw = read_in_context(self.context, name, "")
        if raw is None:
            raise BuildError(f"-f {name!r}: no such file in the context read from stdin")
        return name, decode_text(raw, name)

    # -- the stage's filesystem

    def stack(self, state: ImageState) -> LayerStack:
        """The stage's filesystem so far, for lookups inside it."""
        from imgtool.builder.layered import LayerStack  # when a step runs

        return LayerStack([self.layers.diff_dir(k) for k in self.layer_keys(state)])

    def lower_names(self, state: ImageState) -> list[str]:
        return [self.layers.lower_name(k) for k in self.layer_keys(state)]

    def layer_keys(self, state: ImageState) -> list[str]:
        """The keys (ChainIDs) of the stage's unpacked layers, lowest first, unpacking what is
        missing; asked for every lookup, so each chain is checked on disk once per build."""
        chain = tuple(x.diff_id for x in state.layers)
        with self.lock:
            if chain not in self.unpacked:
                self.unpacked[chain] = self.layers.unpack_layers(
                    [(x.digest, x.size, x.media_type, x.diff_id) for x in state.layers]
                )
            return self.unpacked[chain]

    def image(self, name: str, platform: oci.Platform | None = None) -> StoredImage:
        """A base image (for `platform`, FROM --platform), pulled when the store has none,
        or has it for another platform only."""
        try:
            if self.opts.pull:
                raise ImageNotFound(name)
            found = self.store.image(name, platform)
            if platform is None or found.config.platform.serves(platform):
                return found
        except ImageNotFound:
            pass
        from imgtool.puller import PullOptions, pull  # the registry only when needed

        self.say(f"pulling {name}" + (f" ({platform})" if platform else ""))
        result = pull(name, self.store, PullOptions(platform=platform))
        return self.store.image(result.name, platform)

    def source_key(self, ctx: _StageContext, frm: str) -> str:
        """What a stage's or an image's tree is, as a cache key: its content follows from it
        (a stage's key chains every input of its steps; an image's is its manifest digest)."""
        ref = ctx.plan.stage_named(frm, ctx.stage.index)
        if ref is not None:
            return self.results[ref.index].key
        return _key("image", self.image(frm).manifest.digest)

    def source_root(self, ctx: _StageContext, frm: str) -> Root:
        """A stage's or an image's filesystem, flattened once per build into the work dir."""
        ref = ctx.plan.stage_named(frm, ctx.stage.index)
        key = f"stage:{ref.index}" if ref is not None else f"image:{frm}"
        with self.lock:  # two stages reading the same tree flatten it once
            if key in self.roots:
                return self.roots[key]
            path = Path(tempfile.mkdtemp(prefix="from.", dir=self.work))
            if ref is not None:
                for x in self.results[ref.index].layers:
                    self.layers._apply_blob(
                        x.digest, x.size, x.media_type, x.diff_id, path, "plain"
                    )
                label = f"stage {ref.name!r}"
            else:
                self.layers.export_rootfs(self.image(frm), path)
                label = f"image {frm!r}"
            self.roots[key] = Root(path, label)
            return self.roots[key]

    def skip_of(self, root: Root | None) -> Any:
        """.dockerignore applies to the context, matched on where a file really is."""
        return self.ignored if root is self.context else None

    def ignored(self, comps: Comps) -> bool:
        return bool(comps) and self.ignore.matches_or_parent_matches("/".join(comps))

    # -- layers, the cache and history

    def layer_from_dir(self, root: Path, skip: Any = None) -> Layer:
        from imgtool import compression  # what makes layers: only when a step runs
        from imgtool.layer.diff import write_layer

        # the tar is compressed as it is written: one temporary file, not two
        packed = self.work / f"layer.{threading.get_ident()}.{time.monotonic_ns()}.packed"
        try:
            with open(packed, "wb") as dst:
                w = compression.compressing_writer(dst, self.opts.compression)  # type: ignore[arg-type]
                lt = write_layer(root, w, self.epoch, skip)  # type: ignore[arg-type]
                w.close()
            with open(packed, "rb") as f:
                digest, size = self.store.write_blob_from(f)
        finally:
            packed.unlink(missing_ok=True)
        media = mt.OCI_LAYER_ZSTD if self.opts.compression == "zstd" else mt.OCI_LAYER_GZIP
        return Layer(digest, size, media, lt.diff_id, _timestamp(self.epoch))

    def cached(
        self, ctx: _StageContext, t: Typed, inputs: dict[str, Any], key: str
    ) -> Layer | None:
        """The step's layer from a cache (local, then --cache-from's), or None; with
        --explain-cache, says where it was found or why it missed."""
        found = self.cache.lookup(key)
        assert self.explainer is not None
        line = t.source.line
        say = self.opts.explain_cache
        text = self.explainer.explain(
            ctx.stage.name, line, inputs, found, self.cache.searched(), say
        )
        if say:
            self.say(text)
        return found.layer

    def history(
        self, state: ImageState, created_by: str, empty: bool = True, created: str = ""
    ) -> None:
        # metadata steps take the time of the last layer, so that an unchanged rebuild gives
        # the same config, and so the same image id
        if not created:
            created = state.config.get("created") or _timestamp(self.epoch)
        state.config["created"] = created
        entry: dict[str, Any] = {"created": created, "created_by": created_by, "comment": "imgtool"}
        if empty:
            entry["empty_layer"] = True
        state.config.setdefault("history", []).append(entry)

    def add_layer(
        self, state: ImageState, ctx: _StageContext, layer: Layer, created_by: str, key: str
    ) -> None:
        ctx.made.append((key, layer))
        state.layers.append(layer)
        created = layer.created or _timestamp(self.epoch)
        self.history(state, created_by, empty=False, created=created)
        state.key = key

    def copy_of_config(self, state: ImageState) -> ImageState:
        return ImageState(json.loads(json.dumps(state.config)), list(state.layers), state.key)
