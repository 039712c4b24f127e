"""`imgtool build`: Containerfile stages -> image, with RUN in the sandbox and a build cache.

A stage is a FROM and what follows. Only the stages the target needs are built. Each RUN runs
in the runtime's sandbox over an overlay of the stage's layers (host network unless
`--network=none`); its upper dir becomes the layer. COPY and ADD stage their files in a
directory that becomes the layer the same way. Every step that makes a layer is cached under a
key of its parent chain, its expanded instruction, the build args it sees and the content of
what it copies; `--explain-cache` says which input changed when a step misses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool import reference as refs
from imgtool.containerfile import dockerignore, shell
from imgtool.containerfile.parser import Containerfile, Instruction, parse
from imgtool.errors import (
    BuildError,
    ContainerfileError,
    ImageNotFound,
    ImgtoolError,
    RunStepFailed,
)
from imgtool.layer.diff import write_layer
from imgtool.layer.unpacked import LayerStore
from imgtool.sandbox import runner
from imgtool.sandbox.spec import BindMount, SandboxSpec
from imgtool.store import Store

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
    explain_cache: bool = False
    quiet: bool = False
    output: Callable[[str], None] = print


@dataclass
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

    @property
    def env(self) -> dict[str, str]:
        out = {}
        for item in self.config.setdefault("config", {}).get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def set_env(self, env: dict[str, str]) -> None:
        self.config["config"]["Env"] = [f"{k}={v}" for k, v in env.items()]


@dataclass
class Stage:
    index: int
    name: str
    base: str
    instructions: list[Instruction]
    line: int


@dataclass(frozen=True)
class BuildResult:
    image_id: str  # the config digest
    manifest_digest: str
    tags: list[str]
    steps: int
    cached: int


CACHE_VERSION = "imgtool-build-cache-1"


def _key(*parts: object) -> str:
    raw = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class Builder:
    def __init__(self, store: Store, opts: BuildOptions) -> None:
        self.store = store.init()
        self.opts = opts
        self.layers = LayerStore(store)
        self.cache_dir = store.root / "buildcache"
        self.work = Path(tempfile.mkdtemp(prefix="build.", dir=self._tmp_root()))
        self.epoch = _source_date_epoch()
        self.results: dict[int, ImageState] = {}
        self.rootfs_cache: dict[str, Path] = {}
        self.steps = self.cached = 0
        self.file_label = ""
        ignore = opts.context / ".dockerignore"
        patterns = dockerignore.read_ignore_file(ignore.read_text()) if ignore.exists() else []
        self.ignore = dockerignore.PatternMatcher(patterns)

    def _tmp_root(self) -> Path:
        d = self.store.root / "build"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def say(self, text: str) -> None:
        if not self.opts.quiet:
            self.opts.output(text)

    # --- the whole build ----------------------------------------------------------------------

    def run(self) -> BuildResult:
        path = self.opts.file or _default_file(self.opts.context)
        self.file_label = path.name
        try:
            text = path.read_text()
        except OSError as e:
            raise BuildError(f"cannot read {path}: {e.strerror}") from None
        cf = parse(text, path.name)
        meta_args, stages = self._stages(cf)
        target = self._target(stages)
        needed = self._needed(stages, target)
        self._validate(stages, needed)
        try:
            with self.store.writing():
                for st in stages:
                    if st.index in needed:
                        self.results[st.index] = self._build_stage(st, stages, meta_args)
                final = self.results[target.index]
                return self._commit(final)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def _stages(self, cf: Containerfile) -> tuple[dict[str, str], list[Stage]]:
        meta: dict[str, str] = {}
        stages: list[Stage] = []
        for inst in cf.instructions:
            if inst.keyword == "from":
                base = inst.args[0]
                name = inst.args[2].lower() if len(inst.args) == 3 else str(len(stages))
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
                    value = self.opts.build_args.get(k, shell.process_word(v, meta) if eq else "")
                    meta[k] = value
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

    # --- one stage ----------------------------------------------------------------------------

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
            from imgtool.pull import PullOptions, pull  # the registry only when needed

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
            insts += parse(text, f"ONBUILD of {st.base}").instructions
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

    def _env_for_expansion(self, state: ImageState, ctx: _StageContext) -> dict[str, str]:
        return {**ctx.args, **state.env}

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
                    else:
                        ctx.args.setdefault(k, "")
                    ctx.used_args[k] = ctx.args[k]
                state.key = _key(state.key, "ARG", sorted(ctx.args.items()))
                return False
            if kw == "env":
                new = state.env
                pairs = inst.args
                for k, v in zip(pairs[::2], pairs[1::2], strict=True):
                    new[k] = shell.process_word(v, {**env, **new})
                state.set_env(new)
                self._history(state, f"ENV {' '.join(f'{k}={new[k]}' for k in pairs[::2])}")
                state.key = _key(state.key, "ENV", sorted(new.items()))
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
                cfg["WorkingDir"] = os.path.normpath(os.path.join(cur, path))
                self._history(state, f"WORKDIR {cfg['WorkingDir']}")
                state.key = _key(state.key, "WORKDIR", cfg["WorkingDir"])
                return False
            if kw == "user":
                cfg["User"] = shell.process_word(inst.args[0], env)
                self._history(state, f"USER {cfg['User']}")
                state.key = _key(state.key, "USER", cfg["User"])
                return False
            if kw == "expose":
                ports = cfg.get("ExposedPorts") or {}
                for w in inst.args:
                    p = shell.process_word(w, env)
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
        test = ["CMD", *json.loads(rest)] if rest.startswith("[") else ["CMD-SHELL", rest]
        out: dict[str, Any] = {"Test": test}
        for name, key in (
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start-period", "StartPeriod"),
            ("start-interval", "StartInterval"),
        ):
            v = inst.flag(name)
            if v:
                out[key] = _duration_ns(v)
        if inst.flag("retries"):
            out["Retries"] = int(inst.flag("retries") or 0)
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

    # --- RUN ----------------------------------------------------------------------------------

    def _run(
        self, state: ImageState, inst: Instruction, ctx: _StageContext, env: dict[str, str]
    ) -> bool:
        cfg = state.config["config"]
        if inst.json:
            argv = list(inst.args)
        else:
            script = inst.args[0] if inst.args else ""
            if inst.heredocs:
                script = _heredoc_script(script, inst)
            argv = ctx.shell(cfg) + [script]
        run_env = {**{k: v for k, v in ctx.args.items()}, **state.env}
        run_env.setdefault("PATH", DEFAULT_PATH)
        network = inst.flag("network") or "host"
        if network == "default":
            network = "host"
        mounts = [self._mount(m, ctx) for m in inst.flag_values("mount")]
        key = _key(
            state.key,
            "RUN",
            argv,
            sorted(run_env.items()),
            network,
            [(m.kind, m.target, m.key) for m in mounts],
            cfg.get("User"),
            cfg.get("WorkingDir"),
        )
        self._explain(
            ctx, inst, {"parent": state.key, "instruction": argv, "args": dict(ctx.used_args)}, key
        )
        hit = self._cache_get(key)
        cached = hit is not None
        if hit is None:
            hit = self._execute_run(state, inst, ctx, argv, run_env, network, mounts)
            self._cache_put(key, hit)
        created_by = f"RUN {' '.join(argv) if not inst.json else json.dumps(argv)}"
        self._add_layer(state, hit, created_by, key)
        return cached

    def _cache_get(self, key: str) -> Layer | None:
        if self.opts.no_cache:
            return None
        try:
            doc = json.loads((self.cache_dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        layer = Layer(**doc)
        if not self.store.has_blob(layer.digest):
            return None  # gc took the blob: build again
        return layer

    def _cache_put(self, key: str, layer: Layer) -> None:
        from imgtool.atomic import atomic_write

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.cache_dir / f"{key}.json", json.dumps(layer.__dict__).encode(), durable=False
        )

    def _add_layer(self, state: ImageState, layer: Layer, created_by: str, key: str) -> None:
        state.layers.append(layer)
        self._history(
            state, created_by, empty=False, created=layer.created or _timestamp(self.epoch)
        )
        state.key = key

    def _mount(self, spec: str, ctx: _StageContext) -> _Mount:
        opts: dict[str, str] = {}
        for part in spec.split(","):
            k, eq, v = part.partition("=")
            opts[k] = v if eq else "true"
        kind = opts.get("type", "bind")
        target = opts.get("target") or opts.get("dst") or opts.get("destination") or ""
        if kind == "cache":
            if not target:
                raise BuildError("--mount=type=cache needs a target")
            cid = opts.get("id") or target
            d = self.cache_dir / "mounts" / _key(cid)[:16]
            d.mkdir(parents=True, exist_ok=True)
            return _Mount("cache", target, str(d), False, cid)
        if kind == "secret":
            sid = opts.get("id") or os.path.basename(target)
            src = self.opts.secrets.get(sid)
            if src is None:
                if opts.get("required") == "true":
                    raise BuildError(f"secret {sid!r} is required: give --secret id={sid},src=…")
                return _Mount("none", "", "", True, "")
            return _Mount(
                "secret",
                target or f"/run/secrets/{sid}",
                str(src),
                True,
                hashlib.sha256(sid.encode()).hexdigest(),
            )  # never the content
        if kind == "bind":
            source = opts.get("source") or opts.get("src") or "."
            frm = opts.get("from")
            root = self._source_root(frm, ctx) if frm else self.opts.context
            path = (root / source.lstrip("/")).resolve()
            if not str(path).startswith(str(root.resolve())):
                raise BuildError(f"--mount source {source!r} is outside its root")
            rw = opts.get("rw") == "true" or opts.get("readwrite") == "true"
            return _Mount("bind", target, str(path), not rw, _tree_digest(path))
        raise BuildError(f"unsupported --mount type {kind!r}")

    def _lower_names(self, state: ImageState) -> list[str]:
        self.layers.unpack_layers(
            [(x.digest, x.size, x.media_type, x.diff_id) for x in state.layers]
        )
        return [f"l/{self.layers.short_name(x.diff_id)}" for x in state.layers]

    def _execute_run(
        self,
        state: ImageState,
        inst: Instruction,
        ctx: _StageContext,
        argv: list[str],
        env: dict[str, str],
        network: str,
        mounts: list[_Mount],
    ) -> Layer:
        cfg = state.config["config"]
        lowers = self._lower_names(state)
        step = Path(tempfile.mkdtemp(prefix="run.", dir=self.work))
        for d in ("upper", "work", "rootfs"):
            (step / d).mkdir()
        existing = {
            p
            for p in STUB_PATHS + tuple(m.target.lstrip("/") for m in mounts)
            if p and self._in_lowers(state, p)
        }
        etc = {}
        if network == "host":
            for name in ("hosts", "resolv.conf"):
                if Path(f"/etc/{name}").exists():
                    etc[f"/etc/{name}"] = f"/etc/{name}"
        spec = SandboxSpec(
            argv=argv,
            lower_dirs=lowers,
            layers_dir=str(self.layers.root),
            upper_dir=str(step / "upper"),
            work_dir=str(step / "work"),
            rootfs=str(step / "rootfs"),
            env=env,
            cwd=cfg.get("WorkingDir") or "/",
            user=cfg.get("User") or "",
            hostname="imgtool-build",
            network=network,
            mounts=[BindMount(m.source, m.target, m.readonly) for m in mounts if m.source],
            etc_files=etc,
            stdin=False,
        )
        out_fd = None
        if self.opts.quiet:
            out_fd = tempfile.TemporaryFile(dir=self.work)  # noqa: SIM115 - closed below
        try:
            with _redirect(out_fd):
                try:
                    outcome = runner.run(spec, f"build-{os.getpid()}")
                except Exception as e:  # noqa: BLE001 - SandboxError and the like, with the step
                    raise BuildError(
                        f"{ctx.stage.name}: {inst.original.splitlines()[0]}: {e}"
                    ) from None
            if outcome.status != 0:
                if out_fd is not None:
                    out_fd.seek(0)
                    os.write(2, out_fd.read()[-4000:])
                raise RunStepFailed(
                    ctx.stage.name, inst.original.splitlines()[0][:200], outcome.status
                )
            created = {m.target.lstrip("/") for m in mounts if m.target} | set(STUB_PATHS)
            created -= existing

            def skip(rel: str) -> bool:
                return rel in created or any(
                    rel.startswith(c + "/") for c in created if c in ("proc", "sys", "dev")
                )

            return self._layer_from_dir(step / "upper", skip)
        finally:
            if out_fd is not None:
                out_fd.close()
            shutil.rmtree(step, ignore_errors=True)

    def _in_lowers(self, state: ImageState, rel: str, want_dir: bool = False) -> bool:
        if not rel:
            return True
        self._lower_names(state)
        for x in reversed(state.layers):
            p = self.layers.diff_dir(x.diff_id) / rel
            if os.path.lexists(p):
                st = os.lstat(p)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return False
                return stat.S_ISDIR(st.st_mode) if want_dir else True
        return False

    def _layer_from_dir(self, root: Path, skip: Callable[[str], bool] | None = None) -> Layer:
        from imgtool import compression

        tar_path = self.work / f"layer.{os.getpid()}.{time.monotonic_ns()}.tar"
        with open(tar_path, "wb") as f:
            lt = write_layer(root, f, self.epoch, skip)
        packed = tar_path.with_suffix(".packed")
        with open(tar_path, "rb") as src, open(packed, "wb") as dst:
            w = compression.compressing_writer(dst, self.opts.compression)  # type: ignore[arg-type]
            while chunk := src.read(1 << 20):
                w.write(chunk)
            w.close()
        with open(packed, "rb") as f:
            digest, size = self.store.write_blob_from(f)
        tar_path.unlink()
        packed.unlink()
        media = mt.OCI_LAYER_ZSTD if self.opts.compression == "zstd" else mt.OCI_LAYER_GZIP
        return Layer(digest, size, media, lt.diff_id, _timestamp(self.epoch))

    # --- COPY and ADD -------------------------------------------------------------------------

    def _source_root(self, frm: str, ctx: _StageContext) -> Path:
        ref = self._stage_ref(ctx.stages, frm, ctx.stage.index)
        if ref is None and frm.isdigit() and int(frm) < ctx.stage.index:
            ref = ctx.stages[int(frm)]
        key = f"stage:{ref.index}" if ref is not None else f"image:{frm}"
        if key in self.rootfs_cache:
            return self.rootfs_cache[key]
        root = Path(tempfile.mkdtemp(prefix="from.", dir=self.work))
        if ref is not None:
            state = self.results[ref.index]
            for x in state.layers:
                self.layers._apply_blob(x.digest, x.size, x.media_type, x.diff_id, root, "plain")
        else:
            img = self._image(frm)
            self.layers.export_rootfs(img, root)
        self.rootfs_cache[key] = root
        return root

    def _copy(
        self, state: ImageState, inst: Instruction, ctx: _StageContext, env: dict[str, str]
    ) -> bool:
        cfg = state.config["config"]
        words = [w if w.startswith("<<") else shell.process_word(w, env) for w in inst.args]
        *sources, dest = words
        frm = inst.flag("from")
        stage_dir = Path(tempfile.mkdtemp(prefix="copy.", dir=self.work))
        workdir = cfg.get("WorkingDir") or "/"
        dest_abs = os.path.normpath(dest if dest.startswith("/") else os.path.join(workdir, dest))
        into_dir = (
            dest.endswith("/")
            or dest in (".", "..")
            or dest.endswith(("/.", "/.."))
            or self._in_lowers(state, dest_abs.lstrip("/"), want_dir=True)
        )
        if into_dir and not dest_abs.endswith("/"):
            dest_abs += "/"
        chown = inst.flag("chown")
        uid, gid = self._owner(state, shell.process_word(chown, env)) if chown else (0, 0)
        chmod = inst.flag("chmod")
        mode = int(chmod, 8) if chmod else None
        if frm:
            # a stage's (or an image's) content is named by its cache chain (or digest): a
            # cached COPY --from needs no export of the source's filesystem
            identity = self._source_identity(frm, ctx)
            key = _key(state.key, inst.keyword, words, inst.flags, identity, workdir)
            self._explain(
                ctx, inst, {"parent": state.key, "instruction": words, "source": identity}, key
            )
            hit = self._cache_get(key)
            cached = hit is not None
            if hit is None:
                root = self._source_root(frm, ctx)
                items = self._resolve_sources(inst, sources, root, False, env)
                self._check_many(inst, items, dest_abs)
                hit = self._stage_copy(state, inst, items, stage_dir, dest_abs, uid, gid, mode)
                self._cache_put(key, hit)
            shutil.rmtree(stage_dir, ignore_errors=True)
            self._add_layer(state, hit, f"{inst.keyword.upper()} {' '.join(words)}", key)
            return cached
        items = self._resolve_sources(inst, sources, self.opts.context, True, env)
        self._check_many(inst, items, dest_abs)
        files = [
            (n, _tree_digest(p) if p else hashlib.sha256(data).hexdigest()) for n, p, data in items
        ]
        key = _key(state.key, inst.keyword, words, inst.flags, files, workdir)
        self._explain(
            ctx, inst, {"parent": state.key, "instruction": words, "files": dict(files)}, key
        )
        hit = self._cache_get(key)
        cached = hit is not None
        if hit is None:
            hit = self._stage_copy(state, inst, items, stage_dir, dest_abs, uid, gid, mode)
            self._cache_put(key, hit)
        shutil.rmtree(stage_dir, ignore_errors=True)
        self._add_layer(state, hit, f"{inst.keyword.upper()} {' '.join(words)}", key)
        return cached

    def _check_many(self, inst: Instruction, items: list, dest_abs: str) -> None:
        if len(items) > 1 and not dest_abs.endswith("/"):
            raise ContainerfileError(
                f"{inst.keyword.upper()} with more than one source needs a destination ending in /",
                file=self.file_label,
                line=inst.line,
            )

    def _stage_copy(
        self,
        state: ImageState,
        inst: Instruction,
        items: list,
        stage_dir: Path,
        dest_abs: str,
        uid: int,
        gid: int,
        mode: int | None,
    ) -> Layer:
        for name, path, data in items:
            self._stage_item(
                stage_dir, state, name, path, data, dest_abs, inst.keyword == "add", uid, gid, mode
            )
        self._parents_like_lowers(state, stage_dir, dest_abs)
        return self._layer_from_dir(stage_dir)

    def _source_identity(self, frm: str, ctx: _StageContext) -> str:
        ref = self._stage_ref(ctx.stages, frm, ctx.stage.index)
        if ref is None and frm.isdigit() and int(frm) < ctx.stage.index:
            ref = ctx.stages[int(frm)]
        if ref is not None:
            return "stage:" + self.results[ref.index].key
        return "image:" + self._image(frm).manifest.digest

    def _resolve_sources(
        self,
        inst: Instruction,
        sources: list[str],
        root: Path,
        from_context: bool,
        env: dict[str, str],
    ) -> list[tuple[str, Path | None, bytes]]:
        """(name, path or None, heredoc data) for every source, globs expanded."""
        out: list[tuple[str, Path | None, bytes]] = []
        heredocs = {h.name: h for h in inst.heredocs}
        for src in sources:
            if src.startswith("<<"):
                name = src.lstrip("<-").strip("'\"")
                h = heredocs.get(name)
                if h is None:
                    raise ContainerfileError(
                        f"no heredoc {name}", file=self.file_label, line=inst.line
                    )
                content = shell.expand_heredoc(h.content, env) if h.expand else h.content
                out.append((name, None, content.encode()))
                continue
            if inst.keyword == "add" and src.startswith(("http://", "https://")):
                out.append((src, self._download(src, inst), b""))
                continue
            rel = os.path.normpath(src.lstrip("/"))
            if rel.startswith(".."):
                raise ContainerfileError(
                    f"source {src!r} is outside the build context",
                    file=self.file_label,
                    line=inst.line,
                )
            matches = _glob(root, rel)
            if from_context:
                matches = [m for m in matches if not self._ignored(root, m)]
            if not matches:
                where = "build context" if from_context else "source stage"
                raise ContainerfileError(
                    f"{inst.keyword.upper()} failed: {src!r} not found in the {where}",
                    file=self.file_label,
                    line=inst.line,
                )
            out += [
                (os.path.basename(m) or ".", root / m if m != "." else root, b"") for m in matches
            ]
        return out

    def _ignored(self, root: Path, rel: str) -> bool:
        return rel not in (".", "") and self.ignore.matches_or_parent_matches(rel)

    def _download(self, url: str, inst: Instruction) -> Path:
        import urllib.request

        target = Path(tempfile.mkdtemp(prefix="add.", dir=self.work)) / (
            os.path.basename(url.split("?")[0]) or "download"
        )
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(target, "wb") as f:
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
        except OSError as e:
            raise BuildError(f"ADD {url}: {e}") from None
        want = inst.flag("checksum")
        if want and want != "sha256:" + h.hexdigest():
            raise BuildError(
                f"ADD {url}: checksum mismatch (expected {want}, got sha256:{h.hexdigest()})"
            )
        return target

    def _stage_item(
        self,
        stage_dir: Path,
        state: ImageState,
        name: str,
        src: Path | None,
        data: bytes,
        dest: str,
        is_add: bool,
        uid: int,
        gid: int,
        mode: int | None,
    ) -> None:
        if src is None or src.is_file() and not src.is_symlink() or src.is_symlink():
            if is_add and src is not None and src.is_file() and _is_archive(src):
                target_dir = stage_dir / dest.lstrip("/")
                target_dir.mkdir(parents=True, exist_ok=True)
                from imgtool import compression
                from imgtool.layer.apply import apply_layer

                with open(src, "rb") as f:
                    apply_layer(compression.open_decompressed(f), target_dir, "plain")
                return
            target = stage_dir / (
                dest.lstrip("/") + name if dest.endswith("/") else dest.lstrip("/")
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            if src is None:
                target.write_bytes(data)
                os.chmod(target, mode if mode is not None else 0o644)
            else:
                shutil.copy2(src, target, follow_symlinks=False)
                if mode is not None and not target.is_symlink():
                    os.chmod(target, mode)
            os.lchown(target, uid, gid)
            return
        # a directory: its contents go into dest
        target = stage_dir / dest.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(src):
            rel = os.path.relpath(dirpath, src)
            if self._ignored(self.opts.context, os.path.relpath(dirpath, self.opts.context)):
                dirnames[:] = []
                continue
            out_dir = target / rel if rel != "." else target
            out_dir.mkdir(parents=True, exist_ok=True)
            for name_ in filenames + [
                d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
            ]:
                s = Path(dirpath) / name_
                if self._ignored(self.opts.context, os.path.relpath(s, self.opts.context)):
                    continue
                t = out_dir / name_
                shutil.copy2(s, t, follow_symlinks=False)
                if mode is not None and not t.is_symlink():
                    os.chmod(t, mode)
                os.lchown(t, uid, gid)
            shutil.copystat(dirpath, out_dir)
            if mode is not None:
                os.chmod(out_dir, mode)
            os.lchown(out_dir, uid, gid)

    def _parents_like_lowers(self, state: ImageState, stage_dir: Path, dest: str) -> None:
        """The parent directories a COPY creates carry the metadata they already have below,
        so that a COPY does not change /usr/local/bin's mode or time."""
        parts = (
            [p for p in dest.strip("/").split("/") if p][:-1]
            if not dest.endswith("/")
            else [p for p in dest.strip("/").split("/") if p]
        )
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            here = stage_dir / rel
            if not here.is_dir():
                continue
            for x in reversed(state.layers):
                below = self.layers.diff_dir(x.diff_id) / rel
                if below.is_dir() and not below.is_symlink() and self.layers.has(x.diff_id):
                    st = os.stat(below)
                    os.chmod(here, stat.S_IMODE(st.st_mode))
                    os.chown(here, st.st_uid, st.st_gid)
                    os.utime(here, ns=(st.st_atime_ns, st.st_mtime_ns))
                    break

    def _owner(self, state: ImageState, spec: str) -> tuple[int, int]:
        user, _, group = spec.partition(":")

        def lookup(db: str, name: str, field_: int) -> int:
            if name.isdigit():
                return int(name)
            self._lower_names(state)
            for x in reversed(state.layers):
                p = self.layers.diff_dir(x.diff_id) / "etc" / db
                if p.is_file():
                    for line in p.read_text().splitlines():
                        parts = line.split(":")
                        if parts and parts[0] == name and len(parts) > field_:
                            return int(parts[field_])
                    break
            raise BuildError(
                f"--chown: no {'user' if db == 'passwd' else 'group'} {name!r} "
                f"in the image's /etc/{db}"
            )

        uid = lookup("passwd", user, 2)
        gid = (
            lookup("group", group, 2)
            if group
            else (int(user) if user.isdigit() else lookup("passwd", user, 3))
        )
        return uid, gid

    # --- cache explanations -------------------------------------------------------------------

    def _explain(
        self, ctx: _StageContext, inst: Instruction, inputs: dict[str, Any], key: str
    ) -> None:
        """Remember this step's inputs; with --explain-cache, say which one changed."""
        d = (
            self.cache_dir
            / "explain"
            / _key(str(self.opts.context.resolve()), self.file_label)[:16]
        )
        d.mkdir(parents=True, exist_ok=True)
        record = d / f"{ctx.stage.name}.{inst.line}.json"
        hit = (self.cache_dir / f"{key}.json").exists() and not self.opts.no_cache
        if not hit and self.opts.explain_cache:
            reason = "no earlier build of this step"
            with contextlib.suppress(OSError, ValueError):
                old = json.loads(record.read_text())
                reason = _why(old, inputs)
            self.say(f"  cache miss at line {inst.line}: {reason}")
        record.write_text(json.dumps(inputs, default=str))

    # --- the image ----------------------------------------------------------------------------

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


@dataclass
class _Mount:
    kind: str
    target: str
    source: str
    readonly: bool
    key: str


@dataclass
class _StageContext:
    stage: Stage
    stages: list[Stage]
    meta: dict[str, str]
    args: dict[str, str]
    used_args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False

    def shell(self, cfg: dict) -> list[str]:
        return list(cfg.get("Shell") or DEFAULT_SHELL)


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


def _default_file(context: Path) -> Path:
    for name in ("Containerfile", "Dockerfile"):
        if (context / name).exists():
            return context / name
    raise BuildError(f"no Containerfile or Dockerfile in {context} (use -f)")


def _glob(root: Path, rel: str) -> list[str]:
    if rel in (".", ""):
        return ["."]
    if not any(c in rel for c in "*?["):
        return [rel] if os.path.lexists(root / rel) else []
    parts = rel.split("/")
    found = [""]
    for part in parts:
        nxt = []
        for base in found:
            d = root / base if base else root
            if not d.is_dir():
                continue
            for name in sorted(os.listdir(d)):
                if fnmatch.fnmatchcase(name, part):
                    nxt.append(f"{base}/{name}" if base else name)
        found = nxt
    return found


def _tree_digest(path: Path) -> str:
    """Content and metadata of a file or a tree (not mtimes): what a copy depends on."""
    h = hashlib.sha256()
    if path.is_symlink() or path.is_file():
        items = [path]
        base = path.parent
    else:
        items = sorted(p for p in path.rglob("*"))
        base = path
    for p in items:
        st = os.lstat(p)
        h.update(f"{p.relative_to(base)}\0{st.st_mode}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(p).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def _is_archive(path: Path) -> bool:
    import tarfile

    try:
        with open(path, "rb") as f:
            head = f.read(512 + 8)
    except OSError:
        return False
    if head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar" or tarfile.is_tarfile(path)


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


def _duration_ns(text: str) -> int:
    units = {
        "ns": 1,
        "us": 1_000,
        "ms": 1_000_000,
        "s": 1_000_000_000,
        "m": 60_000_000_000,
        "h": 3_600_000_000_000,
    }
    for u in sorted(units, key=len, reverse=True):
        if text.endswith(u):
            return int(float(text[: -len(u)]) * units[u])
    return int(text)


def build(store: Store, opts: BuildOptions) -> BuildResult:
    return Builder(store, opts).run()
