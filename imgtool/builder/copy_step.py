"""COPY and ADD: files staged in a directory that becomes the layer.

Sources are resolved inside their own root (the context, a stage's or an image's tree; see
sourcetree), the destination inside the image the step builds on (see layered): a symlink
means what it means in its own tree, never a path of the host. A source path that resolves to
nothing there is an error naming the symlink that pointed out, as BuildKit fails on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imgtool import inroot
from imgtool.builder import sourcetree
from imgtool.builder.cache import _key
from imgtool.builder.common import ImageState, Layer, _StageContext
from imgtool.builder.copier import Ownership, copy_entry, copy_tree, write_data
from imgtool.builder.filemode import ModeChange, parse_mode
from imgtool.builder.sourcetree import Comps, Entry, Root
from imgtool.containerfile import dockerignore, shell
from imgtool.containerfile.parser import Instruction
from imgtool.errors import BuildError, ContainerfileError


@dataclass(frozen=True)
class _Source:
    name: str  # the name a copy into a directory takes: the source's as written (with
    # --parents, its path from the context or from the `/./` pivot: "." puts it in dest)
    root: Root | None  # None: `data` is the content (a heredoc)
    comps: Comps = ()  # where the source resolved to inside its root
    data: bytes = b""
    exclude: dockerignore.PatternMatcher | None = None  # --exclude, inside a directory source
    parents: bool = False  # --parents: a directory's contents go to dest/name, not to dest


class CopySteps:
    """COPY and ADD for the Builder (a mixin)."""

    def _source_root(self, frm: str, ctx: _StageContext) -> Root:
        """A stage's or an image's filesystem, flattened once per build into the work dir."""
        ref = self._stage_ref(ctx.stages, frm, ctx.stage.index)
        if ref is None and frm.isdigit() and int(frm) < ctx.stage.index:
            ref = ctx.stages[int(frm)]
        key = f"stage:{ref.index}" if ref is not None else f"image:{frm}"
        if key in self.roots:
            return self.roots[key]
        path = Path(tempfile.mkdtemp(prefix="from.", dir=self.work))
        if ref is not None:
            for x in self.results[ref.index].layers:
                self.layers._apply_blob(x.digest, x.size, x.media_type, x.diff_id, path, "plain")
            label = f"stage {ref.name!r}"
        else:
            self.layers.export_rootfs(self._image(frm), path)
            label = f"image {frm!r}"
        self.roots[key] = Root(path, label)
        return self.roots[key]

    def _destination(self, state: ImageState, dest: str, workdir: str) -> str:
        """Where COPY writes, resolved inside the image (a symlinked directory is written
        through, as BuildKit does); ends in / when the sources go into it."""
        path = os.path.normpath(os.path.join(workdir, dest))
        found = self._stack(state).lookup(path)
        into_dir = (
            dest.endswith(("/", "/.", "/.."))
            or dest in (".", "..")
            or not found.comps
            or (found.st is not None and stat.S_ISDIR(found.st.st_mode))
        )
        resolved = "/" + "/".join(found.comps)
        return resolved.rstrip("/") + "/" if into_dir else resolved

    def _copy(
        self, state: ImageState, inst: Instruction, ctx: _StageContext, env: dict[str, str]
    ) -> bool:
        cfg = state.config["config"]
        words = [w if w.startswith("<<") else shell.process_word(w, env) for w in inst.args]
        *sources, dest = words
        frm = inst.flag("from")
        workdir = cfg.get("WorkingDir") or "/"
        dest_abs = self._destination(state, dest, workdir)
        if inst.keyword == "copy" and _parents_flag(inst, self.file_label):
            dest_abs = dest_abs.rstrip("/") + "/"  # sources keep their paths below it
        chown = inst.flag("chown")
        owner: tuple[int | None, int | None] = (0, 0)  # the context's files: root's
        if chown:
            owner = self._owner(state, shell.process_word(chown, env))
        elif frm:
            owner = (None, None)  # a stage's or an image's files keep their owners
        how = Ownership(*owner, self._chmod(inst, env))
        created_by = f"{inst.keyword.upper()} {' '.join(words)}"
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
                items = self._resolve_sources(inst, sources, self._source_root(frm, ctx), env)
                self._check_many(inst, items, dest_abs)
                hit = self._stage_copy(state, inst, items, dest_abs, how)
                self._cache_put(key, hit)
            self._add_layer(state, hit, created_by, key)
            return cached
        items = self._resolve_sources(inst, sources, self.context, env)
        self._check_many(inst, items, dest_abs)
        files = [(s.name, self._digest(s)) for s in items]
        key = _key(state.key, inst.keyword, words, inst.flags, files, workdir)
        self._explain(
            ctx, inst, {"parent": state.key, "instruction": words, "files": dict(files)}, key
        )
        hit = self._cache_get(key)
        cached = hit is not None
        if hit is None:
            hit = self._stage_copy(state, inst, items, dest_abs, how)
            self._cache_put(key, hit)
        self._add_layer(state, hit, created_by, key)
        return cached

    def _chmod(self, inst: Instruction, env: Mapping[str, str]) -> ModeChange | None:
        chmod = inst.flag("chmod")
        if chmod is None:
            return None
        try:
            return parse_mode(shell.process_word(chmod, env))
        except ValueError as e:
            raise ContainerfileError(str(e), file=self.file_label, line=inst.line) from None

    def _digest(self, source: _Source) -> str:
        if source.root is None:
            return hashlib.sha256(source.data).hexdigest()
        return sourcetree.tree_digest(source.root.fd, source.comps, self._skip_for(source))

    def _skip_of(self, root: Root) -> sourcetree.Skip | None:
        """.dockerignore applies to the context, matched on where a file really is."""
        return self._ignored if root is self.context else None

    def _skip_for(self, source: _Source) -> sourcetree.Skip | None:
        """.dockerignore, and --exclude matched on the path inside the source directory."""
        ignored, exclude, top = self._skip_of(source.root), source.exclude, len(source.comps)
        if exclude is None:
            return ignored

        def skip(comps: Comps) -> bool:
            if ignored is not None and ignored(comps):
                return True
            return exclude.matches_or_parent_matches("/".join(comps[top:]))

        return skip

    def _check_many(self, inst: Instruction, items: list, dest_abs: str) -> None:
        if len(items) > 1 and not dest_abs.endswith("/"):
            raise ContainerfileError(
                f"{inst.keyword.upper()} with more than one source needs a destination ending in /",
                file=self.file_label,
                line=inst.line,
            )

    def _stage_copy(
        self, state: ImageState, inst: Instruction, items: list[_Source], dest: str, how: Ownership
    ) -> Layer:
        stage_dir = Path(tempfile.mkdtemp(prefix="copy.", dir=self.work))
        try:
            with inroot.opened(inroot.open_root(str(stage_dir))) as stage:
                for item in items:
                    self._stage_item(stage, item, dest, inst.keyword == "add", how)
                self._parents_like_lowers(state, stage, dest)
            return self._layer_from_dir(stage_dir)
        finally:
            with contextlib.suppress(OSError):  # a tree a container wrote: any depth
                inroot.remove_tree(stage_dir)

    def _source_identity(self, frm: str, ctx: _StageContext) -> str:
        ref = self._stage_ref(ctx.stages, frm, ctx.stage.index)
        if ref is None and frm.isdigit() and int(frm) < ctx.stage.index:
            ref = ctx.stages[int(frm)]
        if ref is not None:
            return "stage:" + self.results[ref.index].key
        return "image:" + self._image(frm).manifest.digest

    def _exclusions(
        self, inst: Instruction, env: Mapping[str, str]
    ) -> dockerignore.PatternMatcher | None:
        patterns = [shell.process_word(x, env) for x in inst.flag_values("exclude")]
        if not patterns:
            return None
        try:
            return dockerignore.PatternMatcher(dockerignore.read_ignore_file("\n".join(patterns)))
        except dockerignore.PatternError as e:
            raise ContainerfileError(
                f"--exclude: {e}", file=self.file_label, line=inst.line
            ) from None

    def _resolve_sources(
        self, inst: Instruction, sources: list[str], root: Root, env: Mapping[str, str]
    ) -> list[_Source]:
        """Every source resolved inside its root, globs expanded, ignored and --exclude'd files
        left out (a source itself by its path or its name, what is in a directory by its path
        inside it)."""
        out: list[_Source] = []
        heredocs = {h.name: h for h in inst.heredocs}
        exclude = self._exclusions(inst, env)
        parents = inst.keyword == "copy" and _parents_flag(inst, self.file_label)
        for src in sources:
            if src.startswith("<<"):
                name = src.lstrip("<-").strip("'\"")
                h = heredocs.get(name)
                if h is None:
                    raise ContainerfileError(
                        f"no heredoc {name}", file=self.file_label, line=inst.line
                    )
                content = shell.expand_heredoc(h.content, env) if h.expand else h.content
                out.append(_Source(name, None, data=content.encode()))
                continue
            if inst.keyword == "add" and src.startswith(("http://", "https://")):
                out.append(self._download(src, inst))
                continue
            rel = os.path.normpath(src.lstrip("/"))
            if rel.startswith(".."):
                raise ContainerfileError(
                    f"source {src!r} is outside the build context",
                    file=self.file_label,
                    line=inst.line,
                )
            pivot = _pivot(src) if parents else ""
            visible = 0  # matches .dockerignore leaves: none is "not found", as before
            for match in sourcetree.glob(root.fd, rel):
                comps = self._resolve_source(inst, src, match, root)
                if root is self.context and self._ignored(comps):
                    continue
                visible += 1
                if exclude is not None and (
                    exclude.matches_or_parent_matches(match)
                    or exclude.matches_or_parent_matches(os.path.basename(match))
                ):
                    continue
                if parents:
                    name = os.path.relpath(match, pivot) if pivot else os.path.normpath(match)
                else:
                    name = os.path.basename(match) or "."
                out.append(_Source(name, root, comps, exclude=exclude, parents=parents))
            if not visible:
                raise self._not_found(inst, src, rel, root)
        return out

    def _resolve_source(self, inst: Instruction, src: str, match: str, root: Root) -> Comps:
        try:
            return sourcetree.resolve(root.fd, match)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(inst, src, match, root) from None
        except OSError as e:
            raise ContainerfileError(
                f"{inst.keyword.upper()} failed: {src!r} in {root.label}: {e.strerror}",
                file=self.file_label,
                line=inst.line,
            ) from None

    def _not_found(self, inst: Instruction, src: str, path: str, root: Root) -> ContainerfileError:
        why = ""
        link = sourcetree.escaping_link(root.fd, path)
        if link is not None:
            why = (
                f": the symlink {link[0]!r} points to {link[1]!r}, which is resolved inside"
                f" {root.label}"
            )
        return ContainerfileError(
            f"{inst.keyword.upper()} failed: {src!r} not found in {root.label}{why}",
            file=self.file_label,
            line=inst.line,
        )

    def _ignored(self, comps: Comps) -> bool:
        return bool(comps) and self.ignore.matches_or_parent_matches("/".join(comps))

    def _download(self, url: str, inst: Instruction) -> _Source:
        import urllib.request

        where = Path(tempfile.mkdtemp(prefix="add.", dir=self.work))
        name = os.path.basename(url.split("?")[0])
        if name in ("", ".", ".."):
            name = "download"
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(where / name, "wb") as f:
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
        root = self.roots[f"download:{where}"] = Root(where, "the download")
        return _Source(name, root, (name,))

    def _stage_item(
        self, stage: int, item: _Source, dest: str, is_add: bool, how: Ownership
    ) -> None:
        target = dest + item.name if dest.endswith("/") else dest
        if item.root is None:
            write_data(stage, target, item.data, how)
            return
        with sourcetree.entry_of(item.root.fd, item.comps) as src:
            if stat.S_ISDIR(src.st.st_mode):  # a directory: its contents go into dest
                into = dest + item.name if item.parents and item.name != "." else dest
                copy_tree(item.root.fd, src, stage, into, how, self._skip_for(item))
            elif not (is_add and stat.S_ISREG(src.st.st_mode) and _extracted(src, stage, dest)):
                copy_entry(src, stage, target, how)

    def _parents_like_lowers(self, state: ImageState, stage: int, dest: str) -> None:
        """The parent directories a COPY creates carry the metadata they already have below,
        so that a COPY does not change /usr/local/bin's mode or time."""
        parts = sourcetree.split(dest)
        if not dest.endswith("/"):
            parts = parts[:-1]
        stack = self._stack(state)
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            below = stack.lookup(rel, follow_last=False)
            if below.st is None or not stat.S_ISDIR(below.st.st_mode):
                continue
            with inroot.opened(inroot.walk(stage, rel, follow_last=False)) as fd:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    continue
                here = inroot.fd_path(fd)
                os.chown(here, below.st.st_uid, below.st.st_gid)
                os.chmod(here, stat.S_IMODE(below.st.st_mode))
                os.utime(here, ns=(below.st.st_atime_ns, below.st.st_mtime_ns))

    def _workdir(self, state: ImageState, wd: str) -> bool:
        """WORKDIR: the directory is made (with its missing parents, owned by the USER) in a
        layer of its own when the image lacks it, as BuildKit does; else only history."""
        stack = self._stack(state)
        found = stack.lookup(wd)
        if found.st is not None:
            if not stat.S_ISDIR(found.st.st_mode):
                raise BuildError(f"WORKDIR {wd}: not a directory in the image")
            self._history(state, f"WORKDIR {wd}")
            state.key = _key(state.key, "WORKDIR", wd)
            return False
        user = state.config["config"].get("User") or ""
        uid, gid = self._owner(state, user, "USER") if user else (0, 0)
        key = _key(state.key, "WORKDIR", wd, "/".join(found.comps), uid, gid)
        hit = self._cache_get(key)
        cached = hit is not None
        if hit is None:
            hit = self._workdir_layer(state, found.comps, uid, gid)
            self._cache_put(key, hit)
        self._add_layer(state, hit, f"WORKDIR {wd}", key)
        return cached

    def _workdir_layer(self, state: ImageState, comps: Comps, uid: int, gid: int) -> Layer:
        stack = self._stack(state)
        stage_dir = Path(tempfile.mkdtemp(prefix="workdir.", dir=self.work))
        try:
            with inroot.opened(inroot.open_root(str(stage_dir))) as stage:
                os.close(inroot.mkdirs(stage, "/".join(comps)))
                for i in range(1, len(comps) + 1):
                    rel = "/".join(comps[:i])
                    if stack.lookup(rel, follow_last=False).st is None:  # made here: the user's
                        with inroot.opened(inroot.walk(stage, rel, follow_last=False)) as fd:
                            os.chown(inroot.fd_path(fd), uid, gid)
                self._parents_like_lowers(state, stage, "/".join(comps) + "/")
            return self._layer_from_dir(stage_dir)
        finally:
            with contextlib.suppress(OSError):
                inroot.remove_tree(stage_dir)

    def _owner(self, state: ImageState, spec: str, what: str = "--chown") -> tuple[int, int]:
        user, _, group = spec.partition(":")
        stack = self._stack(state)

        def lookup(db: str, name: str, field_: int) -> int:
            if name.isdigit():
                return int(name)
            text = (stack.read(f"/etc/{db}") or b"").decode(errors="replace")
            for line in text.splitlines():
                parts = line.split(":")
                if parts and parts[0] == name and len(parts) > field_ and parts[field_].isdigit():
                    return int(parts[field_])
            raise BuildError(
                f"{what}: no {'user' if db == 'passwd' else 'group'} {name!r} "
                f"in the image's /etc/{db}"
            )

        uid = lookup("passwd", user, 2)
        gid = (
            lookup("group", group, 2)
            if group
            else (int(user) if user.isdigit() else lookup("passwd", user, 3))
        )
        return uid, gid


def _parents_flag(inst: Instruction, file: str) -> bool:
    value = inst.flag("parents")
    if value in (None, "false"):
        return False
    if value != "true":
        raise ContainerfileError(
            f"--parents={value}: expected true or false", file=file, line=inst.line
        )
    return True


def _pivot(src: str) -> str:
    """--parents keeps a source's path from the context, or from its `/./` (the pivot):
    `./x/./y/*.txt` copies to dest/y/…. Returns the part before the pivot ("" when none)."""
    path = src.lstrip("/")
    while path.startswith("./"):
        path = path[2:].lstrip("/")
    at = path.find("/./")
    return os.path.normpath(path[:at]) if at >= 0 else ""


def _is_archive(f: BinaryIO) -> bool:
    head = f.read(512 + 8)
    f.seek(0)
    if head[:2] == b"\x1f\x8b" or head[:4] == b"\x28\xb5\x2f\xfd":
        return True
    if len(head) >= 262 and head[257:262] == b"ustar":
        return True
    try:
        return tarfile.is_tarfile(f)  # type: ignore[arg-type]
    finally:
        f.seek(0)


def _extracted(src: Entry, stage: int, dest: str) -> bool:
    """ADD's local archive: unpacked into dest (False when the file is no archive)."""
    from imgtool import compression
    from imgtool.layer.apply import apply_layer

    with os.fdopen(sourcetree.open_entry(src), "rb") as f:
        if not _is_archive(f):
            return False
        with inroot.opened(inroot.mkdirs(stage, dest)) as target:
            apply_layer(compression.open_decompressed(f), inroot.fd_path(target), "plain")
    return True
