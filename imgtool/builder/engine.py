"""`imgtool build`: Containerfile stages -> image, with RUN in the sandbox and a build cache.

A stage is a FROM and what follows. Only the stages the target needs are built. Each RUN runs
in the runtime's sandbox over an overlay of the stage's layers (host network unless
`--network=none`), in its own cgroup under the host-wide liveness lock as a container is, with
copies of /etc/hosts and /etc/resolv.conf; its upper dir becomes the layer. COPY and ADD stage
their files in a directory that becomes the layer the same way. Every path a build reads from
the context, a stage or an image is resolved inside that tree (sourcetree, layered): a symlink
never leads to the host. The Containerfile and .dockerignore found in the context are read
inside it too; a Containerfile given with -f is read where the user's path leads. Every step
that makes a layer is cached under a key of its parent chain, its expanded instruction, the
build args it sees and the content of what it copies; `--explain-cache` says which input
changed when a step misses.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool import reference as refs
from imgtool.builder import workspace
from imgtool.builder.cache import CacheSteps, _key
from imgtool.builder.common import (
    BuildOptions,
    BuildResult,
    ImageState,
    Layer,
    Stage,
    _duration_ns,
    _source_date_epoch,
    _StageContext,
    _timestamp,
    _valid_port,
    _valid_signal,
    decode_text,
    read_containerfile,
    read_in_context,
)
from imgtool.builder.copy_step import CopySteps
from imgtool.builder.run_step import RunSteps
from imgtool.builder.sourcetree import Root
from imgtool.builder.stdincontext import read_stdin_context
from imgtool.containerfile import dockerignore, shell
from imgtool.containerfile.parser import Containerfile, Instruction, parse
from imgtool.errors import (
    BuildError,
    ContainerfileError,
    ImageNotFound,
    ImgtoolError,
    RunStepFailed,
)
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store

# BuildKit's rule for `FROM … AS name`; a name also names files of the build cache
STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")


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


class Builder(RunSteps, CopySteps, CacheSteps):
    def __init__(self, store: Store, opts: BuildOptions) -> None:
        self.store = store.init()
        self.opts = opts
        self.layers = LayerStore(store)
        self.cache_dir = store.root / "buildcache"
        self.epoch = _source_date_epoch()
        self.results: dict[int, ImageState] = {}
        self.steps = self.cached = 0
        self.unpacked: dict[tuple[str, ...], list[str]] = {}  # diff_ids -> unpacked keys
        self.file_label = ""
        self.ignore = dockerignore.PatternMatcher([])
        self.stdin_containerfile: bytes | None = None
        # locked while the build runs, gc removes only the ones nobody holds; released by
        # run(), or here when the context cannot be had
        self.work, self._work_lock = workspace.hold_new(self.store.root / "build")
        try:
            # every tree COPY reads, held open for the build: the context, flattened stages
            self.context = self._open_context()
        except BaseException:
            workspace.release(self.work, self._work_lock)
            raise
        self.roots: dict[str, Root] = {"context": self.context}

    def _file_in_stdin_context(self, name: str) -> tuple[str, str]:
        """-f with a context tar on stdin names a file in that context, as with Docker."""
        raw = read_in_context(self.context, name, "")
        if raw is None:
            raise BuildError(f"-f {name!r}: no such file in the context read from stdin")
        return name, decode_text(raw, name)

    def _open_context(self) -> Root:
        """The context directory; for `build -`, a directory in the work dir that stdin's tar
        is extracted into, or that stays empty when stdin is the Containerfile."""
        if self.opts.stdin is None:
            return Root(self.opts.context, "the build context")
        where = self.work / "context"
        where.mkdir()
        self.stdin_containerfile = read_stdin_context(self.opts.stdin, where)
        if self.stdin_containerfile is not None and self.opts.file is not None:
            raise BuildError("-f cannot name a Containerfile when stdin is the Containerfile")
        return Root(where, "the build context (stdin)")

    def say(self, text: str) -> None:
        if not self.opts.quiet:
            self.opts.output(text)

    def run(self) -> BuildResult:
        try:
            if self.stdin_containerfile is not None:
                self.file_label = "<stdin>"
                text = decode_text(self.stdin_containerfile, self.file_label)
            elif self.opts.stdin is not None and self.opts.file is not None:
                self.file_label, text = self._file_in_stdin_context(str(self.opts.file))
            else:
                self.file_label, text = read_containerfile(self.opts, self.context)
            ignore = read_in_context(self.context, ".dockerignore")
            if ignore is not None:
                patterns = dockerignore.read_ignore_file(decode_text(ignore, ".dockerignore"))
                self.ignore = dockerignore.PatternMatcher(patterns)
            cf = parse(text, self.file_label, self.opts.output)
            meta_args, stages = self._stages(cf)
            target = self._target(stages)
            needed = self._needed(stages, target)
            self._validate(stages, needed)
            with self.store.writing():
                for st in stages:
                    if st.index in needed:
                        self.results[st.index] = self._build_stage(st, stages, meta_args)
                final = self.results[target.index]
                return self._commit(final)
        finally:
            for root in self.roots.values():
                root.close()
            workspace.release(self.work, self._work_lock)

    def _stages(self, cf: Containerfile) -> tuple[dict[str, str], list[Stage]]:
        meta: dict[str, str] = platform_args(oci.Platform.host())
        stages: list[Stage] = []
        for inst in cf.instructions:
            if inst.keyword == "from":
                base = inst.args[0]
                name = inst.args[2].lower() if len(inst.args) == 3 else str(len(stages))
                if len(inst.args) == 3 and not STAGE_NAME.fullmatch(name):
                    raise ContainerfileError(
                        f"invalid stage name {inst.args[2]!r}: a letter, then letters, digits,"
                        " '-', '_' or '.'",
                        file=self.file_label,
                        line=inst.line,
                    )
                stages.append(Stage(len(stages), name, base, [], inst.line))
                continue
            if not stages:
                if inst.keyword != "arg":
                    raise ContainerfileError(
                        f"{inst.keyword.upper()} before the first FROM",
                        file=self.file_label,
                        line=inst.line,
                    )
                for word in inst.args:
                    k, eq, v = word.partition("=")
                    if k in self.opts.build_args:
                        meta[k] = self.opts.build_args[k]
                    elif eq:
                        meta[k] = shell.process_word(v, meta)
                    # else declared but unset: FROM ${NAME:-default} sees it unset
                continue
            stages[-1].instructions.append(inst)
        if not stages:
            raise ContainerfileError("no FROM instruction", file=self.file_label, line=1)
        return meta, stages

    def _target(self, stages: list[Stage]) -> Stage:
        if not self.opts.target:
            return stages[-1]
        for st in stages:
            if st.name == self.opts.target.lower():
                return st
        raise BuildError(
            f"target stage {self.opts.target!r} not found "
            f"(stages: {', '.join(s.name for s in stages)})"
        )

    def _stage_ref(self, stages: list[Stage], name: str, before: int) -> Stage | None:
        for st in stages[:before]:
            if st.name == name.lower():
                return st
        return None

    def _needed(self, stages: list[Stage], target: Stage) -> set[int]:
        needed: set[int] = set()
        todo = [target]
        while todo:
            st = todo.pop()
            if st.index in needed:
                continue
            needed.add(st.index)
            deps = [st.base]
            for inst in st.instructions:
                deps += inst.flag_values("from")
                for m in inst.flag_values("mount"):
                    opts = dict(p.partition("=")[::2] for p in m.split(","))
                    if "from" in opts:
                        deps.append(opts["from"])
            for dep in deps:
                ref = self._stage_ref(stages, dep, st.index)
                if ref is not None:
                    todo.append(ref)
        return needed

    def _validate(self, stages: list[Stage], needed: set[int]) -> None:
        """Errors that can be known before anything runs: bad flags, missing stages, sources
        outside the context."""
        for st in stages:
            if st.index not in needed:
                continue
            for inst in st.instructions:
                allowed = {
                    "run": {"mount", "network", "security"},
                    "copy": {"from", "chown", "chmod", "link", "exclude", "parents"},
                    "add": {"chown", "chmod", "checksum", "link", "keep-git-dir", "exclude"},
                    "healthcheck": {
                        "interval",
                        "timeout",
                        "start-period",
                        "retries",
                        "start-interval",
                    },
                }.get(inst.keyword, set())
                for f in inst.flags:
                    name = f[2:].split("=", 1)[0]
                    if name not in allowed:
                        raise ContainerfileError(
                            f"unknown flag --{name} for {inst.keyword.upper()}",
                            file=self.file_label,
                            line=inst.line,
                        )
                self._check_no_cycle(stages, st, inst)
                src = inst.flag("from")
                if inst.keyword == "copy" and src is not None and src == "true":
                    raise ContainerfileError(
                        "--from needs a value (--from=stage)", file=self.file_label, line=inst.line
                    )
                if inst.keyword in ("copy", "add") and src is None:
                    for s in inst.args[:-1]:
                        if s.startswith("<<") or "://" in s:
                            continue
                        clean = os.path.normpath(s)
                        if clean == ".." or clean.startswith("../"):
                            raise ContainerfileError(
                                f"{inst.keyword.upper()} source {s!r} is outside the build context",
                                file=self.file_label,
                                line=inst.line,
                            )

    def _check_no_cycle(self, stages: list[Stage], st: Stage, inst: Instruction) -> None:
        """A stage reads only earlier stages: itself or a later one is a cycle (BuildKit's
        error), never an image of that name to pull."""
        names = list(inst.flag_values("from"))
        for m in inst.flag_values("mount"):
            opts = dict(p.partition("=")[::2] for p in m.split(","))
            if "from" in opts:
                names.append(opts["from"])
        for name in names:
            for other in stages[st.index :]:
                if name.lower() == other.name or name == str(other.index):
                    raise ContainerfileError(
                        f"circular dependency: stage {st.name!r} reads stage {other.name!r}"
                        f" ({'itself' if other is st else 'a later stage'})",
                        file=self.file_label,
                        line=inst.line,
                    )

    def _base(self, st: Stage, stages: list[Stage], meta: dict[str, str]) -> ImageState:
        base = shell.process_word(st.base, meta)
        ref = self._stage_ref(stages, base, st.index)
        if ref is not None:
            prev = self.results[ref.index]
            return ImageState(json.loads(json.dumps(prev.config)), list(prev.layers), prev.key)
        if base == "scratch":
            cfg = {
                "architecture": oci.Platform.host().architecture,
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }
            return ImageState(cfg, [], _key("scratch"))
        img = self._image(base)
        cfg = json.loads(img.config.raw)
        cfg.setdefault("config", {})
        layers = [
            Layer(d.digest, d.size, d.media_type, diff)
            for d, diff in zip(img.manifest.layers, img.config.diff_ids, strict=True)
        ]
        return ImageState(cfg, layers, _key("image", img.manifest.digest))

    def _image(self, name: str) -> Any:
        try:
            if self.opts.pull:
                raise ImageNotFound(name)
            return self.store.image(name)
        except ImageNotFound:
            from imgtool.puller import PullOptions, pull  # the registry only when needed

            self.say(f"pulling {name}")
            result = pull(name, self.store, PullOptions())
            return self.store.image(result.name)

    def _build_stage(self, st: Stage, stages: list[Stage], meta: dict[str, str]) -> ImageState:
        state = self._base(st, stages, meta)
        self.say(f"[{st.name}] FROM {st.base}")
        ctx = _StageContext(st, stages, dict(meta), {})
        triggers = state.config["config"].pop("OnBuild", None) or []
        insts = []
        for text in triggers:
            insts += parse(text, f"ONBUILD of {st.base}", self.opts.output).instructions
        for inst in insts + st.instructions:
            t0 = time.monotonic()
            try:
                cached = self._step(state, inst, ctx)
            except (RunStepFailed, ContainerfileError):
                raise
            except ImgtoolError as e:  # name the line that failed
                raise BuildError(
                    f"{self.file_label}:{inst.line}: {inst.original.splitlines()[0][:80]}: {e}"
                ) from None
            if inst.keyword in ("run", "copy", "add"):
                self.steps += 1
                self.cached += int(cached)
                took = time.monotonic() - t0
                what = "CACHED" if cached else f"{took:.2f}s"
                self.say(f"[{st.name}] {inst.original.splitlines()[0][:70]}  {what}")
        return state

    def _env_for_expansion(self, state: ImageState, ctx: _StageContext) -> Mapping[str, str]:
        # a view, not a copy: a step's cost must not grow with the size of the environment
        return ChainMap(state.env, ctx.args)

    def _step(self, state: ImageState, inst: Instruction, ctx: _StageContext) -> bool:
        kw = inst.keyword
        env = self._env_for_expansion(state, ctx)
        cfg = state.config["config"]
        line = inst.line
        try:
            if kw == "arg":
                for word in inst.args:
                    k, eq, v = word.partition("=")
                    if k in self.opts.build_args:
                        ctx.args[k] = self.opts.build_args[k]
                    elif eq:
                        ctx.args[k] = shell.process_word(v, env)
                    elif k in ctx.meta:
                        ctx.args[k] = ctx.meta[k]
                    if k in ctx.args:  # else declared but unset, as BuildKit leaves it
                        ctx.used_args[k] = ctx.args[k]
                state.key = _key(state.key, "ARG", sorted(ctx.args.items()))
                return False
            if kw == "env":
                # every value sees the environment as it was before this instruction
                pairs = [
                    (k, shell.process_word(v, env))
                    for k, v in zip(inst.args[::2], inst.args[1::2], strict=True)
                ]
                for k, v in pairs:
                    state.set_env(k, v)
                self._history(state, f"ENV {' '.join(f'{k}={v}' for k, v in pairs)}")
                # the chain key holds every earlier ENV: this step adds only its own pairs
                state.key = _key(state.key, "ENV", pairs)
                return False
            if kw == "label":
                labels = cfg.setdefault("Labels", {}) or {}
                for k, v in zip(inst.args[::2], inst.args[1::2], strict=True):
                    labels[shell.process_word(k, env)] = shell.process_word(v, env)
                cfg["Labels"] = labels
                pairs = zip(inst.args[::2], inst.args[1::2], strict=True)
                self._history(state, f"LABEL {' '.join(f'{k}={v}' for k, v in pairs)}")
                return False
            if kw in ("cmd", "entrypoint"):
                value = (
                    inst.args if inst.json else (ctx.shell(cfg) + inst.args if inst.args else [])
                )
                key = "Cmd" if kw == "cmd" else "Entrypoint"
                cfg[key] = value
                if kw == "entrypoint" and not ctx.cmd_set:
                    cfg.pop("Cmd", None)  # docker: a new ENTRYPOINT drops the base's CMD
                ctx.cmd_set = ctx.cmd_set or kw == "cmd"
                self._history(state, f"{kw.upper()} {json.dumps(value)}")
                state.key = _key(state.key, kw, value)
                return False
            if kw == "workdir":
                path = shell.process_word(inst.args[0], env)
                cur = cfg.get("WorkingDir") or "/"
                wd = os.path.normpath(os.path.join(cur, path))
                if path.endswith("/") and wd != "/":
                    wd += "/"  # kept, as Docker keeps it
                cfg["WorkingDir"] = wd
                return self._workdir(state, wd)
            if kw == "user":
                cfg["User"] = shell.process_word(inst.args[0], env)
                self._history(state, f"USER {cfg['User']}")
                state.key = _key(state.key, "USER", cfg["User"])
                return False
            if kw == "expose":
                ports = cfg.get("ExposedPorts") or {}
                for w in inst.args:
                    p = shell.process_word(w, env)
                    if not _valid_port(p):
                        raise ContainerfileError(
                            f"EXPOSE: invalid port {p!r} (PORT[-PORT][/tcp|/udp|/sctp])",
                            file=self.file_label,
                            line=line,
                        )
                    ports[p if "/" in p else f"{p}/tcp"] = {}
                cfg["ExposedPorts"] = ports
                self._history(state, f"EXPOSE {' '.join(ports)}")
                return False
            if kw == "volume":
                vols = cfg.get("Volumes") or {}
                for w in inst.args:
                    vols[shell.process_word(w, env)] = {}
                cfg["Volumes"] = vols
                self._history(state, f"VOLUME {list(vols)}")
                return False
            if kw == "shell":
                if not inst.json:
                    raise ContainerfileError(
                        "SHELL needs the JSON form", file=self.file_label, line=line
                    )
                cfg["Shell"] = inst.args
                self._history(state, f"SHELL {json.dumps(inst.args)}")
                state.key = _key(state.key, "SHELL", inst.args)
                return False
            if kw == "stopsignal":
                cfg["StopSignal"] = shell.process_word(inst.args[0], env)
                if not _valid_signal(cfg["StopSignal"]):
                    raise ContainerfileError(
                        f"STOPSIGNAL: invalid signal {cfg['StopSignal']!r}",
                        file=self.file_label,
                        line=line,
                    )
                self._history(state, f"STOPSIGNAL {cfg['StopSignal']}")
                return False
            if kw == "maintainer":
                state.config["author"] = inst.args[0] if inst.args else ""
                self._history(state, f"MAINTAINER {state.config['author']}")
                return False
            if kw == "onbuild":
                cfg.setdefault("OnBuild", [])
                cfg["OnBuild"] = (cfg["OnBuild"] or []) + [inst.args[0]]
                self._history(state, f"ONBUILD {inst.args[0]}")
                return False
            if kw == "healthcheck":
                cfg["Healthcheck"] = self._healthcheck(inst, cfg, ctx)
                self._history(state, f"HEALTHCHECK {inst.args[0] if inst.args else ''}")
                return False
            if kw == "run":
                return self._run(state, inst, ctx, env)
            if kw in ("copy", "add"):
                return self._copy(state, inst, ctx, env)
        except shell.ShellError as e:
            raise ContainerfileError(str(e), file=self.file_label, line=line) from None
        raise ContainerfileError(f"{kw.upper()} is not supported", file=self.file_label, line=line)

    def _healthcheck(self, inst: Instruction, cfg: dict, ctx: _StageContext) -> dict:
        text = inst.args[0] if inst.args else ""
        if text.strip().upper() == "NONE":
            return {"Test": ["NONE"]}
        head, _, rest = text.strip().partition(" ")
        if head.upper() != "CMD":
            raise ContainerfileError(
                "HEALTHCHECK needs CMD or NONE", file=self.file_label, line=inst.line
            )
        rest = rest.strip()

        def bad(what: str) -> ContainerfileError:
            return ContainerfileError(f"HEALTHCHECK: {what}", file=self.file_label, line=inst.line)

        try:
            test = ["CMD", *json.loads(rest)] if rest.startswith("[") else ["CMD-SHELL", rest]
        except ValueError:
            raise bad(f"CMD is not a valid JSON array: {rest}") from None
        out: dict[str, Any] = {"Test": test}
        for name, key in (
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start-period", "StartPeriod"),
            ("start-interval", "StartInterval"),
        ):
            v = inst.flag(name)
            if v:
                try:
                    out[key] = _duration_ns(v)
                except ValueError:
                    raise bad(f"--{name}={v} is not a duration (e.g. 30s, 1m30s)") from None
        retries = inst.flag("retries")
        if retries:
            if not retries.isdigit():
                raise bad(f"--retries={retries} is not a whole number")
            out["Retries"] = int(retries)
        return out

    def _history(
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

    def _add_layer(self, state: ImageState, layer: Layer, created_by: str, key: str) -> None:
        state.layers.append(layer)
        self._history(
            state, created_by, empty=False, created=layer.created or _timestamp(self.epoch)
        )
        state.key = key

    def _commit(self, state: ImageState) -> BuildResult:
        cfg = state.config
        if self.opts.labels:
            cfg["config"]["Labels"] = {**(cfg["config"].get("Labels") or {}), **self.opts.labels}
        if self.epoch is not None or not cfg.get("created"):
            cfg["created"] = _timestamp(self.epoch)
        cfg["rootfs"] = {"type": "layers", "diff_ids": [x.diff_id for x in state.layers]}
        cfg.pop("container_config", None)
        cfg.pop("container", None)
        if not cfg["config"]:
            cfg["config"] = {}
        config_raw = oci.canonical_json(cfg)
        oci.ImageConfig.from_json(config_raw)  # what we write must read back
        config_digest = self.store.write_blob(config_raw)
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
        digest = self.store.write_blob(raw)
        desc = oci.Descriptor(mt.OCI_MANIFEST, digest, len(raw))
        names = [str(refs.parse(t)) for t in self.opts.tags]
        for name in names:
            self.store.set_ref(name, desc)
        if not names:
            self.store.add_unnamed(desc)
        return BuildResult(config_digest, digest, names, self.steps, self.cached)


def build(store: Store, opts: BuildOptions) -> BuildResult:
    return Builder(store, opts).run()
