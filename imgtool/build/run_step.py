"""RUN: a step in the runtime's sandbox over an overlay of the stage; its upper dir is the layer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imgtool import mediatypes as mt
from imgtool.build.cache import _key
from imgtool.build.common import (
    DEFAULT_PATH,
    STUB_PATHS,
    ImageState,
    Layer,
    _heredoc_script,
    _Mount,
    _redirect,
    _StageContext,
    _timestamp,
    _tree_digest,
)
from imgtool.containerfile.parser import Instruction
from imgtool.errors import (
    BuildError,
    RunStepFailed,
    SandboxError,
)
from imgtool.layer.diff import write_layer
from imgtool.sandbox import runner
from imgtool.sandbox.spec import BindMount, SandboxSpec


class RunSteps:
    """RUN for the Builder (a mixin)."""

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
        # called for every lookup in the lower layers: check each layer on disk once per build
        todo = [x for x in state.layers if x.diff_id not in self.unpacked]
        self.layers.unpack_layers([(x.digest, x.size, x.media_type, x.diff_id) for x in todo])
        self.unpacked.update(x.diff_id for x in todo)
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
                except SandboxError as e:  # the caller names the file, line and step
                    raise BuildError(str(e)) from None
            if outcome.status != 0:
                if out_fd is not None:
                    out_fd.seek(0)
                    os.write(2, out_fd.read()[-4000:])
                raise RunStepFailed(
                    ctx.stage.name,
                    inst.original.splitlines()[0][:200],
                    outcome.status,
                    f"{self.file_label}:{inst.line}",
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
