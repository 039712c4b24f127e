"""Reading docker-archives (both forms) and oci-archives in place (see the package)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from imgtool import compression, oci
from imgtool import mediatypes as mt
from imgtool import reference as refs
from imgtool.archive.common import (
    CONTAINERD_NAME,
    LAYER_TYPES,
    MAX_DOCUMENT,
    manifest_bytes,
    member_digest,
    normalize_name,
)
from imgtool.digest import Digest, sha256
from imgtool.errors import DigestMismatch, InvalidReference, SpecError
from imgtool.tarball import TarReader, clean_name, copy_stream


@dataclass(frozen=True)
class ArchiveImage:
    """One image of an archive: its top manifest (or index), the references the archive
    names it by (normalized) and the names as written, for picking it by either."""

    top: oci.Manifest | oci.Index
    names: tuple[str, ...] = ()
    written: tuple[str, ...] = ()


@dataclass
class ImageArchive:
    """An opened archive: its images and their blobs by digest. Close it when done."""

    reader: TarReader
    kind: str  # "docker-archive" or "oci-archive"
    label: str
    images: list[ArchiveImage] = field(default_factory=list)
    _members: dict[str, str] = field(default_factory=dict)  # digest -> member name
    _made: dict[str, bytes] = field(default_factory=dict)  # manifests made for old archives

    def has_blob(self, digest: str) -> bool:
        return digest in self._made or digest in self._members

    def _member_of(self, digest: str) -> str:
        name = self._members.get(digest)
        if name is None:
            raise SpecError(f"{self.label}: blob {digest} is named but not in the archive")
        return name

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob's bytes as stored, not yet verified: the reader verifies."""
        if digest in self._made:
            return io.BytesIO(self._made[digest])
        return self.reader.open(self._member_of(digest), digest)  # type: ignore[return-value]

    def read_blob(self, digest: str, what: str = "document") -> bytes:
        """A document (manifest, index, config) whole and verified."""
        if digest in self._made:
            return self._made[digest]
        raw = self.reader.read(self._member_of(digest), MAX_DOCUMENT, what)
        actual = str(Digest.of(raw))
        if actual != digest:
            raise DigestMismatch(f"{what} in {self.label}", digest, actual, len(raw))
        return raw

    def document(self, desc: oci.Descriptor) -> oci.Manifest | oci.Index:
        raw = self.read_blob(desc.digest, "manifest")
        if len(raw) != desc.size:
            raise SpecError(f"{self.label}: manifest {desc.digest} is not {desc.size} bytes")
        return oci.parse_manifest_or_index(raw, desc.media_type)

    def select(self, ref: str = "") -> ArchiveImage:
        """The image named `ref` (as written, or normalized), `@N` for the N-th, or the only
        one when `ref` is empty."""
        if not ref:
            if len(self.images) != 1:
                shown = ", ".join(n for i in self.images for n in i.written[:1]) or "unnamed"
                raise SpecError(
                    f"{self.label} holds {len(self.images)} images ({shown}): say which, "
                    f"as {self.kind}:FILE:NAME or :@N"
                )
            return self.images[0]
        if ref.startswith("@") and ref[1:].isdigit():
            i = int(ref[1:])
            if i >= len(self.images):
                raise SpecError(f"{self.label} holds {len(self.images)} images, no {ref}")
            return self.images[i]
        wanted = {ref}
        with contextlib.suppress(InvalidReference):
            wanted.add(str(refs.parse(ref)))
        for image in self.images:
            if wanted & (set(image.names) | set(image.written)):
                return image
        shown = ", ".join(n for i in self.images for n in i.written) or "no names"
        raise SpecError(f"{self.label} has no image named {ref} (it has {shown})")

    def close(self) -> None:
        self.reader.close()


def open_archive(path: Path | str, kind: str | None = None, shown: str = "") -> ImageArchive:
    """Open a docker-archive or oci-archive (`kind` None: whichever it is) and read its index
    and documents; blobs are read later, by digest. `shown` names it in errors (default the
    path)."""
    shown = shown or str(path)
    label = f"{kind}:{shown}" if kind else shown
    reader = TarReader(path, label)
    try:
        if kind is None:  # a link by either name is refused when read, not taken for absent
            if "manifest.json" in reader.members:
                kind = "docker-archive"
            elif "index.json" in reader.members:
                kind = "oci-archive"
            else:
                raise SpecError(f"{shown}: neither a docker-archive nor an oci-archive")
        label = f"{kind}:{shown}"
        reader.label = label
        archive = ImageArchive(reader, kind, label)
        archive._members = _content_members(reader)
        if kind == "docker-archive":
            _read_docker(archive)
        else:
            _read_layout(archive)
        if not archive.images:
            raise SpecError(f"{label} holds no image")
        return archive
    except BaseException:
        reader.close()
        raise


def _content_members(reader: TarReader) -> dict[str, str]:
    out = {}
    for name, m in reader.members.items():
        digest = member_digest(name)
        if digest and m.kind != "dir":
            out[digest] = name
    return out


def _read_layout(archive: ImageArchive) -> None:
    reader = archive.reader
    oci.validate_layout_header(reader.read("oci-layout", 4096, "layout header"))
    index = oci.Index.from_json(reader.read("index.json", MAX_DOCUMENT, "index"))
    for desc in index.manifests:
        if desc.media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
            continue  # an artifact of another kind: not an image
        written = tuple(
            n for n in (desc.annotations.get(CONTAINERD_NAME), desc.ref_name) if n is not None
        )
        archive.images.append(ArchiveImage(archive.document(desc), _layout_names(desc), written))


def _layout_names(desc: oci.Descriptor) -> tuple[str, ...]:
    """containerd's full name; else the ref name when it is a full reference (podman and imgtool
    write those); a bare tag (`latest`, `1.0`) names no image by itself."""
    full = desc.annotations.get(CONTAINERD_NAME)
    if full:
        return (normalize_name(full, CONTAINERD_NAME),)
    ref = desc.ref_name or ""
    if ("/" in ref or ":" in ref) and not ref.startswith("sha256:"):
        try:
            return (str(refs.parse(ref)),)
        except InvalidReference:
            return ()
    return ()


def _read_docker(archive: ImageArchive) -> None:
    reader = archive.reader
    doc = oci.load_json(reader.read("manifest.json", MAX_DOCUMENT, "manifest"), "manifest.json")
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise SpecError(f"{archive.label}: manifest.json must be an array of objects")
    in_layout = _layout_manifests(archive) if reader.has("index.json") else {}
    for i, entry in enumerate(doc):
        archive.images.append(_docker_image(archive, entry, f"manifest.json[{i}]", in_layout))


def _strings(entry: dict, key: str, what: str) -> list[str]:
    v = entry.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SpecError(f"{what}.{key} must be an array of strings")
    return v


def _docker_image(
    archive: ImageArchive, entry: dict, what: str, in_layout: dict[str, list[oci.Manifest]]
) -> ArchiveImage:
    reader = archive.reader
    config_path = entry.get("Config")
    if not isinstance(config_path, str):
        raise SpecError(f"{archive.label}: {what}.Config is missing")
    config_name = clean_name(config_path, archive.label)
    raw = reader.read(config_name, MAX_DOCUMENT, "config")
    config_digest = str(Digest.of(raw))
    claimed = member_digest(config_name)
    if claimed and claimed != config_digest:
        raise DigestMismatch(f"config {config_name} in {archive.label}", claimed, config_digest)
    config = oci.ImageConfig.from_json(raw)
    layer_names = [clean_name(n, archive.label) for n in _strings(entry, "Layers", what)]
    if len(layer_names) != len(config.diff_ids):
        raise SpecError(
            f"{archive.label}: {what} names {len(layer_names)} layers, its config "
            f"{len(config.diff_ids)}"
        )
    archive._members[config_digest] = config_name
    layers = [
        _layer(archive, name, diff) for name, diff in zip(layer_names, config.diff_ids, strict=True)
    ]
    config_desc = oci.Descriptor(mt.OCI_CONFIG, config_digest, len(raw))
    manifest = _matching(in_layout.get(config_digest, []), layers) or _make_manifest(
        archive, config_desc, layers
    )
    tags = _strings(entry, "RepoTags", what)
    names = tuple(normalize_name(t, f"{archive.label}: {what}.RepoTags") for t in tags)
    return ArchiveImage(manifest, names, tuple(tags))


def _layer(archive: ImageArchive, name: str, diff_id: str) -> oci.Descriptor:
    """A layer member's descriptor: digest from a content-addressed name, else the diff_id for
    an uncompressed tar, else the hash of what is there (go-containerregistry's `.tar.gz`)."""
    member = archive.reader.member(name, "layer")
    kind = compression.sniff(archive.reader.head(name, 4))
    digest = member_digest(name)
    if digest is None:
        digest = diff_id if kind == "none" else _hash_member(archive.reader, name)
        archive._members.setdefault(digest, name)
    return oci.Descriptor(LAYER_TYPES[kind], digest, member.size)


def _hash_member(reader: TarReader, name: str) -> str:
    h = sha256()
    with reader.open(name) as f:
        copy_stream(f, h.update)  # type: ignore[arg-type]
    return "sha256:" + h.hexdigest()


def _layout_manifests(archive: ImageArchive) -> dict[str, list[oci.Manifest]]:
    """Docker 25's OCI layout inside a docker-archive: its image manifests by config digest.
    Walked with a stack and a seen set, however the indexes nest."""
    index = oci.Index.from_json(archive.reader.read("index.json", MAX_DOCUMENT, "index"))
    out: dict[str, list[oci.Manifest]] = {}
    todo = list(index.manifests)
    seen: set[str] = set()
    while todo:
        desc = todo.pop()
        if desc.digest in seen or not archive.has_blob(desc.digest):
            continue
        seen.add(desc.digest)
        if desc.media_type not in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
            continue
        doc = archive.document(desc)
        if isinstance(doc, oci.Index):
            todo.extend(doc.manifests)
        else:
            out.setdefault(doc.config.digest, []).append(doc)
    return out


def _matching(candidates: list[oci.Manifest], layers: list[oci.Descriptor]) -> oci.Manifest | None:
    want = [d.digest for d in layers]
    return next((m for m in candidates if [d.digest for d in m.layers] == want), None)


def _make_manifest(
    archive: ImageArchive, config: oci.Descriptor, layers: list[oci.Descriptor]
) -> oci.Manifest:
    raw = manifest_bytes(config, layers)
    manifest = oci.Manifest.from_json(raw, mt.OCI_MANIFEST)
    archive._made[manifest.digest] = raw
    return manifest
