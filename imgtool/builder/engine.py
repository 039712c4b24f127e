"""`imgtool build`: Containerfile stages -> image, with RUN in the sandbox and a build cache.

The Containerfile is parsed, every instruction typed (flags and values checked) and the stage
plan made (the graph, cycles and unknown stages refused) before any step runs; `--check`
stops there. Then the stages the target needs are built, independent ones at the same time
(see schedule), each instruction by the function or class for its kind: RUN (run_step),
COPY and ADD (copy_step), the rest (config_steps).

Each RUN runs in the runtime's sandbox over an overlay of the stage's layers (host network
unless `--network=none`), in its own cgroup under the host-wide liveness lock as a container
is, with copies of /etc/hosts and /etc/resolv.conf; its upper dir becomes the layer. COPY and
ADD stage their files in a directory that becomes the layer the same way. Every path a build
reads from the context, a stage or an image is resolved inside that tree (sourcetree,
layered): a symlink never leads to the host. The Containerfile and .dockerignore found in the
context are read inside it too; a Containerfile given with -f is read where the user's path
leads. Every step that makes a layer is cached under a key of its parent chain, its expanded
instruction, the build args it sees and the content of what it copies (see cache).
"""

from __future__ import annotations

import json
import time
from collections import ChainMap
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool import reference as refs
from imgtool.builder import config_steps, schedule
from imgtool.builder.cache import CacheEntry, Explainer, _key
from imgtool.builder.common import (
    BuildOptions,
    BuildResult,
    ImageState,
    Layer,
    _StageContext,
    _timestamp,
    decode_text,
    read_containerfile,
    read_in_context,
)
from imgtool.builder.run_step import RunStep
from imgtool.builder.session import BuildSession
from imgtool.containerfile import dockerignore, shell
from imgtool.containerfile import instructions as ins
from imgtool.containerfile.parser import parse
from imgtool.containerfile.plan import Plan, StagePlan, make_plan
from imgtool.errors import BuildError, ContainerfileError, ImgtoolError, RunStepFailed
from imgtool.store import Store

Step = Callable[[ImageState, Any, _StageContext, Mapping[str, str]], bool]


def platform_args(host: oci.Platform) -> dict[str, str]:
    """The ARGs BuildKit defines itself: the target and the build platform are both the host
    here (no cross builds). Seen before the first FROM; in a stage once declared by `ARG`."""
    out: dict[str, str] = {}
    for prefix in ("TARGET", "BUILD"):
        spec = f"{host.os}/{host.architecture}" + (f"/{host.variant}" if host.variant else "")
        out[f"{prefix}PLATFORM"] = spec
        out[f"{prefix}OS"] = host.os
        out[f"{prefix}ARCH"] = host.architecture
        out[f"{prefix}VARIANT"] = host.variant
    return out


def check(text: str, file: str, opts: BuildOptions, warn: Callable[[str], None]) -> Plan:
    """Everything that can be refused before a step runs: parse, type, plan. No I/O."""
    cf = parse(text, file, warn)
    host = platform_args(oci.Platform.host())
    return make_plan(cf.instructions, file, opts.target, opts.build_args, host)


class Builder:
    def __init__(self, store: Store, opts: BuildOptions) -> None:
        self.s = BuildSession(store, opts)
        self.opts = opts
        run, s = RunStep(self.s), self.s
        self._copy_step: Step | None = None  # made for the first COPY or ADD (see _copy)
        # one function (or callable) per kind of instruction
        self.steps: dict[type, Step] = {
            ins.Run: run,
            ins.Copy: self._copy,
            **{kind: partial(step, s) for kind, step in config_steps.BY_KIND.items()},
        }

    def _copy(self, st: ImageState, t: ins.Copy, c: _StageContext, e: Mapping[str, str]) -> bool:
        """COPY and ADD; their module (and its tar and .dockerignore machinery) is loaded
        only by a build that has one."""
        with self.s.lock:
            if self._copy_step is None:
                from imgtool.builder.copy_step import CopyStep

                self._copy_step = CopyStep(self.s)
        return self._copy_step(st, t, c, e)

    def _containerfile(self) -> tuple[str, str]:
        s = self.s
        if s.stdin_containerfile is not None:
            return "<stdin>", decode_text(s.stdin_containerfile, "<stdin>")
        if self.opts.stdin is not None and self.opts.file is not None:
            return s.file_in_stdin_context(str(self.opts.file))
        return read_containerfile(self.opts, s.context)

    def run(self) -> BuildResult:
        s = self.s
        try:
            s.file_label, text = self._containerfile()
            ignore = read_in_context(s.context, ".dockerignore")
            if ignore is not None:
                patterns = dockerignore.read_ignore_file(decode_text(ignore, ".dockerignore"))
                s.ignore = dockerignore.PatternMatcher(patterns)
            s.explainer = Explainer(s.cache_dir, self.opts.context, s.file_label)
            plan = check(text, s.file_label, self.opts, self.opts.output)
            with s.store.writing():
                return self._build(plan)
        finally:
            s.close()

    def _build(self, plan: Plan) -> BuildResult:
        contexts: dict[int, _StageContext] = {}
        parallel = any(len(wave) > 1 for wave in plan.waves())

        def build_one(index: int) -> None:
            st = plan.stages[index]
            ctx = _StageContext(st, plan, dict(plan.meta), {})
            ctx.prefix = f"[{st.name}] "
            contexts[index] = ctx
            self.s.results[index] = self._build_stage(ctx)

        def stop() -> None:
            from imgtool.builder import sandboxed

            self.s.cancelled.set()
            sandboxed.stop_children(self.s)

        if parallel:
            self.s.say(f"stages built at once: {_waves_text(plan)}")
            from imgtool.builder import sandboxed  # what runs steps: only when a build runs one

            self.s.fork_server = sandboxed.start_fork_server()  # before the first thread
        try:
            schedule.build_stages(plan, build_one, stop)
        finally:
            if self.s.fork_server is not None:
                self.s.fork_server.close()
                self.s.fork_server = None
        made: list[CacheEntry] = []
        for i in plan.needed:  # in stage order, whatever order they finished in
            ctx = contexts[i]
            final = i == plan.target
            made += [CacheEntry(k, x, ctx.stage.name, final) for k, x in ctx.made]
        steps = sum(c.steps for c in contexts.values())
        hits = sum(c.hits for c in contexts.values())
        return self._commit(self.s.results[plan.target], tuple(made), steps, hits)

    def _base(self, st: StagePlan) -> ImageState:
        if st.base_stage is not None:
            return self.s.copy_of_config(self.s.results[st.base_stage])
        platform = oci.Platform.parse(st.platform) if st.platform else None
        if st.base == "scratch":
            return _scratch(platform or oci.Platform.host())
        img = self.s.image(st.base, platform)
        cfg = json.loads(img.config.raw)
        cfg.setdefault("config", {})
        layers = [
            Layer(d.digest, d.size, d.media_type, diff)
            for d, diff in zip(img.manifest.layers, img.config.diff_ids, strict=True)
        ]
        return ImageState(cfg, layers, _key("image", img.manifest.digest))

    def _triggers(self, state: ImageState, st: StagePlan) -> list[ins.Typed]:
        """The base image's ONBUILD instructions, typed (they run first, then are dropped)."""
        triggers = state.config["config"].pop("OnBuild", None) or []
        label = f"ONBUILD of {st.base}"
        out: list[ins.Typed] = []
        for text in triggers:
            out += [ins.typed(i, label) for i in parse(text, label, self.opts.output).instructions]
        return out

    def _build_stage(self, ctx: _StageContext) -> ImageState:
        st = ctx.stage
        state = self._base(st)
        self.s.say(f"[{st.name}] FROM {st.base}")
        for t in self._triggers(state, st) + list(st.instructions):
            if self.s.cancelled.is_set():
                raise BuildError(f"stage {st.name!r} stopped: another stage failed")
            t0 = time.monotonic()
            hit = self._step(state, t, ctx)
            if isinstance(t, ins.Run | ins.Copy):
                ctx.steps += 1
                ctx.hits += int(hit)
                what = "CACHED" if hit else f"{time.monotonic() - t0:.2f}s"
                self.s.say(f"[{st.name}] {t.source.original.splitlines()[0][:70]}  {what}")
        return state

    def _step(self, state: ImageState, t: ins.Typed, ctx: _StageContext) -> bool:
        # a view, not a copy: a step's cost must not grow with the size of the environment
        env = ChainMap(state.env, ctx.args)
        inst = t.source
        try:
            return self.steps[type(t)](state, t, ctx, env)
        except shell.ShellError as e:
            raise ContainerfileError(str(e), file=self.s.file_label, line=inst.line) from None
        except (RunStepFailed, ContainerfileError):
            raise
        except ImgtoolError as e:  # name the line that failed
            first = inst.original.splitlines()[0][:80]
            raise BuildError(f"{self.s.file_label}:{inst.line}: {first}: {e}") from None

    def _commit(
        self, state: ImageState, made: tuple[CacheEntry, ...], steps: int, hits: int
    ) -> BuildResult:
        cfg = state.config
        if self.opts.labels:
            cfg["config"]["Labels"] = {**(cfg["config"].get("Labels") or {}), **self.opts.labels}
        if self.s.epoch is not None or not cfg.get("created"):
            cfg["created"] = _timestamp(self.s.epoch)
        cfg["rootfs"] = {"type": "layers", "diff_ids": [x.diff_id for x in state.layers]}
        cfg.pop("container_config", None)
        cfg.pop("container", None)
        if not cfg["config"]:
            cfg["config"] = {}
        config_raw = oci.canonical_json(cfg)
        oci.ImageConfig.from_json(config_raw)  # what we write must read back
        config_digest = self.s.store.write_blob(config_raw)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": config_digest,
                "size": len(config_raw),
            },
            "layers": [
                {"mediaType": x.media_type, "digest": x.digest, "size": x.size}
                for x in state.layers
            ],
        }
        raw = oci.canonical_json(manifest)
        digest = self.s.store.write_blob(raw)
        desc = oci.Descriptor(mt.OCI_MANIFEST, digest, len(raw))
        names = [str(refs.parse(t)) for t in self.opts.tags]
        for name in names:
            self.s.store.set_ref(name, desc)
        if not names:
            self.s.store.add_unnamed(desc)
        return BuildResult(
            config_digest, digest, names, steps, hits, made, tuple(self.s.cache_mounts)
        )


def _scratch(platform: oci.Platform) -> ImageState:
    cfg: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        cfg["variant"] = platform.variant
    cfg.update({"config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
    key = _key("scratch") if platform == oci.Platform.host() else _key("scratch", str(platform))
    return ImageState(cfg, [], key)


def _waves_text(plan: Plan) -> str:
    names = [", ".join(plan.stages[i].name for i in wave) for wave in plan.waves()]
    return " | ".join(f"({n})" for n in names)


def build(store: Store, opts: BuildOptions) -> BuildResult:
    return Builder(store, opts).run()
