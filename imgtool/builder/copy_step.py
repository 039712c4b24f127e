"""COPY and ADD: files staged in a directory that becomes the layer.

Sources are resolved inside their own root (the context, a stage's or an image's tree; see
sourcetree), the destination inside the image the step builds on (see layered): a symlink
means what it means in its own tree, never a path of the host. A source path that resolves to
nothing there is an error naming the symlink that pointed out, as BuildKit fails on it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from imgtool import inroot
from imgtool.builder import sourcetree
from imgtool.builder.cache import _key
from imgtool.builder.common import ImageState, Layer, _StageContext
from imgtool.builder.copier import Ownership, copy_entry, copy_tree, write_data
from imgtool.builder.layered import owner_in, parents_like_lowers
from imgtool.builder.sourcetree import Comps, Entry, Root
from imgtool.containerfile import dockerignore, shell
from imgtool.containerfile.filemode import ModeChange, parse_mode
from imgtool.containerfile.instructions import Copy
from imgtool.containerfile.parser import Instruction
from imgtool.digest import Digest, sha256
from imgtool.errors import BuildError, ContainerfileError

if TYPE_CHECKING:
    from imgtool.builder.session import BuildSession


@dataclass(frozen=True)
class _Source:
    name: str  # the name a copy into a directory takes: the source's as written (with
    # --parents, its path from the context or from the `/./` pivot: "." puts it in dest)
    root: Root | None  # None: `data` is the content (a heredoc)
    comps: Comps = ()  # where the source resolved to inside its root
    data: bytes = b""
    exclude: dockerignore.PatternMatcher | None = None  # --exclude, inside a directory source
    parents: bool = False  # --parents: a directory's contents go to dest/name, not to dest


class CopyStep:
    """COPY and ADD: the sources staged in a directory that becomes the layer."""

    def __init__(self, session: BuildSession) -> None:
        self.s = session

    def _destination(self, state: ImageState, dest: str, workdir: str, link: bool) -> str:
        """Where COPY writes, resolved inside the image (a symlinked directory is written
        through, as BuildKit does); ends in / when the sources go into it. With --link the
        layer does not depend on the ones below: the path is taken as written."""
        path = os.path.normpath(os.path.join(workdir, dest))
        if link:
            into = dest.endswith(("/", "/.", "/..")) or dest in (".", "..") or path == "/"
            return path.rstrip("/") + "/" if into else path
        found = self.s.stack(state).lookup(path)
        into_dir = (
            dest.endswith(("/", "/.", "/.."))
            or dest in (".", "..")
            or not found.comps
            or (found.st is not None and stat.S_ISDIR(found.st.st_mode))
        )
        resolved = "/" + "/".join(found.comps)
        return resolved.rstrip("/") + "/" if into_dir else resolved

    def __call__(
        self, state: ImageState, step: Copy, ctx: _StageContext, env: Mapping[str, str]
    ) -> bool:
        inst = step.source
        cfg = state.config["config"]
        words = [w if w.startswith("<<") else shell.process_word(w, env) for w in inst.args]
        *sources, dest = words
        frm = step.from_
        workdir = cfg.get("WorkingDir") or "/"
        dest_abs = self._destination(state, dest, workdir, step.link)
        if step.parents:
            dest_abs = dest_abs.rstrip("/") + "/"  # sources keep their paths below it
        owner: tuple[int | None, int | None] = (0, 0)  # the context's files: root's
        if step.chown:
            owner = owner_in(self.s.stack(state), shell.process_word(step.chown, env))
        elif frm:
            owner = (None, None)  # a stage's or an image's files keep their owners
        how = Ownership(*owner, self._chmod(step, env))
        created_by = f"{inst.keyword.upper()} {' '.join(words)}"
        if frm:
            # a stage's (or an image's) content is named by its cache chain (or digest): a
            # cached COPY --from needs no export of the source's filesystem
            identity = self._source_identity(frm, ctx)
            key = _key(state.key, inst.keyword, words, inst.flags, identity, workdir)
            inputs: dict[str, Any] = {"parent": state.key, "instruction": words}
            inputs["source"] = identity
            hit = self.s.cached(ctx, step, inputs, key)
            cached = hit is not None
            if hit is None:
                root = self.s.source_root(ctx, frm)
                items = self._resolve_sources(step, sources, root, env)
                self._check_many(inst, items, dest_abs)
                hit = self._stage_copy(state, step, items, dest_abs, how)
                self.s.cache.put(key, hit)
            self.s.add_layer(state, ctx, hit, created_by, key)
            return cached
        items = self._resolve_sources(step, sources, self.s.context, env)
        self._check_many(inst, items, dest_abs)
        files = [(s.name, self._digest(s)) for s in items]
        key = _key(state.key, inst.keyword, words, inst.flags, files, workdir)
        inputs = {"parent": state.key, "instruction": words, "files": dict(files)}
        hit = self.s.cached(ctx, step, inputs, key)
        cached = hit is not None
        if hit is None:
            hit = self._stage_copy(state, step, items, dest_abs, how)
            self.s.cache.put(key, hit)
        self.s.add_layer(state, ctx, hit, created_by, key)
        return cached

    def _chmod(self, step: Copy, env: Mapping[str, str]) -> ModeChange | None:
        """--chmod, checked before the build when it has no variable, and here expanded."""
        if step.chmod is None:
            return None
        try:
            return parse_mode(shell.process_word(step.chmod, env))
        except ValueError as e:
            line = step.source.line
            raise ContainerfileError(str(e), file=self.s.file_label, line=line) from None

    def _digest(self, source: _Source) -> str:
        if source.root is None:
            return Digest.of(source.data).encoded
        return sourcetree.tree_digest(source.root.fd, source.comps, self._skip_for(source))

    def _skip_for(self, source: _Source) -> sourcetree.Skip | None:
        """.dockerignore, and --exclude matched on the path inside the source directory."""
        ignored, exclude, top = self.s.skip_of(source.root), source.exclude, len(source.comps)
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
                file=self.s.file_label,
                line=inst.line,
            )

    def _stage_copy(
        self, state: ImageState, step: Copy, items: list[_Source], dest: str, how: Ownership
    ) -> Layer:
        stage_dir = Path(tempfile.mkdtemp(prefix="copy.", dir=self.s.work))
        try:
            with inroot.opened(inroot.open_root(str(stage_dir))) as stage:
                for item in items:
                    self._stage_item(stage, item, dest, step.add, how)
                if not step.link:
                    parents_like_lowers(self.s.stack(state), stage, dest)
            return self.s.layer_from_dir(stage_dir)
        finally:
            with contextlib.suppress(OSError):  # a tree a container wrote: any depth
                inroot.remove_tree(stage_dir)

    def _source_identity(self, frm: str, ctx: _StageContext) -> str:
        ref = ctx.plan.stage_named(frm, ctx.stage.index)
        if ref is not None:
            return "stage:" + self.s.results[ref.index].key
        return "image:" + self.s.image(frm).manifest.digest

    def _exclusions(self, step: Copy, env: Mapping[str, str]) -> dockerignore.PatternMatcher | None:
        patterns = [shell.process_word(x, env) for x in step.exclude]
        if not patterns:
            return None
        try:
            return dockerignore.PatternMatcher(dockerignore.read_ignore_file("\n".join(patterns)))
        except dockerignore.PatternError as e:
            raise ContainerfileError(
                f"--exclude: {e}", file=self.s.file_label, line=step.source.line
            ) from None

    def _resolve_sources(
        self, step: Copy, sources: list[str], root: Root, env: Mapping[str, str]
    ) -> list[_Source]:
        """Every source resolved inside its root, globs expanded, ignored and --exclude'd files
        left out (a source itself by its path or its name, what is in a directory by its path
        inside it)."""
        inst = step.source
        out: list[_Source] = []
        heredocs = {h.name: h for h in inst.heredocs}
        exclude = self._exclusions(step, env)
        parents = step.parents
        for src in sources:
            if src.startswith("<<"):
                name = src.lstrip("<-").strip("'\"")
                h = heredocs.get(name)
                if h is None:
                    raise ContainerfileError(
                        f"no heredoc {name}", file=self.s.file_label, line=inst.line
                    )
                content = shell.expand_heredoc(h.content, env) if h.expand else h.content
                out.append(_Source(name, None, data=content.encode()))
                continue
            if inst.keyword == "add" and src.startswith(("http://", "https://")):
                out.append(self._download(src, step.checksum))
                continue
            rel = os.path.normpath(src.lstrip("/"))
            if rel.startswith(".."):
                raise ContainerfileError(
                    f"source {src!r} is outside the build context",
                    file=self.s.file_label,
                    line=inst.line,
                )
            pivot = _pivot(src) if parents else ""
            visible = 0  # matches .dockerignore leaves: none is "not found", as before
            for match in sourcetree.glob(root.fd, rel):
                comps = self._resolve_source(inst, src, match, root)
                if root is self.s.context and self.s.ignored(comps):
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
                file=self.s.file_label,
                line=inst.line,
            ) from None

    def _not_found(self, inst: Instruction, src: str, path: str, root: Root) -> ContainerfileError:
        why = ""
        link = sourcetree.escaping_link(root.fd, path)
        if link is not None:
            why = (
                f": the symlink {link[0]!r} points to {link[1]!r}, outside {root.label}"
                " (a link is followed inside the tree it is in, as BuildKit does)"
            )
        return ContainerfileError(
            f"{inst.keyword.upper()} failed: {src!r} not found in {root.label}{why}",
            file=self.s.file_label,
            line=inst.line,
        )

    def _download(self, url: str, want: str | None) -> _Source:
        import urllib.request

        where = Path(tempfile.mkdtemp(prefix="add.", dir=self.s.work))
        name = os.path.basename(url.split("?")[0])
        if name in ("", ".", ".."):
            name = "download"
        h = sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(where / name, "wb") as f:
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
        except OSError as e:
            raise BuildError(f"ADD {url}: {e}") from None
        if want and want != "sha256:" + h.hexdigest():
            raise BuildError(
                f"ADD {url}: checksum mismatch (expected {want}, got sha256:{h.hexdigest()})"
            )
        root = self.s.roots[f"download:{where}"] = Root(where, "the download")
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


def _pivot(src: str) -> str:
    """--parents keeps a source's path from the context, or from its `/./` (the pivot):
    `./x/./y/*.txt` copies to dest/y/…. Returns the part before the pivot ("" when none)."""
    path = src.lstrip("/")
    while path.startswith("./"):
        path = path[2:].lstrip("/")
    at = path.find("/./")
    return os.path.normpath(path[:at]) if at >= 0 else ""


def _is_archive(f: BinaryIO) -> bool:
    from imgtool import compression
    from imgtool.builder.stdincontext import is_tar

    head = f.read(512 + 8)
    f.seek(0)
    if compression.sniff(head) != "none" or is_tar(head):
        return True
    import tarfile  # ADD of a file that may be an archive: rare, and tarfile is large

    try:
        return tarfile.is_tarfile(f)
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
