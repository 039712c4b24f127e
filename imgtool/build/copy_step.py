"""COPY and ADD: files staged in a directory that becomes the layer."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from imgtool.build.cache import _key
from imgtool.build.common import (
    ImageState,
    Layer,
    _glob,
    _is_archive,
    _StageContext,
    _tree_digest,
)
from imgtool.containerfile import shell
from imgtool.containerfile.parser import Instruction
from imgtool.errors import (
    BuildError,
    ContainerfileError,
)


class CopySteps:
    """COPY and ADD for the Builder (a mixin)."""

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
