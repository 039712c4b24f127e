"""Writing docker-archives (as Docker 25) and oci-archives (as skopeo), streaming."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import BinaryIO

from imgtool import compression, oci
from imgtool import mediatypes as mt
from imgtool import reference as refs
from imgtool.archive.common import (
    CONTAINERD_NAME,
    LAYOUT_HEADER,
    MAX_DOCUMENT,
    BlobOpener,
    blob_member,
    manifest_bytes,
)
from imgtool.digest import Digest, sha256
from imgtool.errors import DigestMismatch, ImgtoolError, SpecError
from imgtool.tarball import CHUNK, TarWriter, copy_stream
from imgtool.verify import VerifyingReader


def _verified_copy(
    desc: oci.Descriptor, open_blob: BlobOpener, what: str
) -> Callable[[Callable[[bytes], None]], None]:
    def fill(write: Callable[[bytes], None]) -> None:
        with open_blob(desc) as f:
            copy_stream(VerifyingReader(f, desc.digest, desc.size, what), write)  # type: ignore[arg-type]

    return fill


class OciArchiveWriter:
    """Blobs first, then `oci-layout` and `index.json`, as skopeo's oci-archive."""

    def __init__(self, tar: TarWriter) -> None:
        self._tar = tar
        self._written: set[str] = set()
        self._entries: list[oci.Descriptor] = []
        tar.add_dir("blobs")
        tar.add_dir("blobs/sha256")

    def _blob(self, desc: oci.Descriptor, open_blob: BlobOpener) -> None:
        if desc.digest not in self._written:
            fill = _verified_copy(desc, open_blob, f"blob {desc.digest}")
            self._tar.add_stream(blob_member(desc.digest), desc.size, fill)
            self._written.add(desc.digest)

    def _document(self, doc: oci.Manifest | oci.Index) -> None:
        if doc.digest not in self._written:
            self._tar.add_bytes(blob_member(doc.digest), doc.raw)
            self._written.add(doc.digest)

    def add(
        self,
        top: oci.Manifest | oci.Index,
        manifests: Sequence[oci.Manifest],
        open_blob: BlobOpener,
        names: Sequence[str],
    ) -> str:
        """An image: its manifests' blobs, the manifests, the top; one index.json entry per
        name (its ref name; containerd's name too when it is a full reference)."""
        for m in manifests:
            for d in m.blobs():
                self._blob(d, open_blob)
            self._document(m)
        self._document(top)
        base = top.descriptor()
        if not names:
            self._entries.append(base)
        for name in names:
            annotations = {oci.REF_NAME: name}
            if "/" in name:
                annotations[CONTAINERD_NAME] = name
            self._entries.append(base.with_annotations(annotations))
        return top.digest

    def finish(self) -> None:
        index = oci.Index.build(self._entries)
        self._tar.add_bytes("oci-layout", LAYOUT_HEADER)
        self._tar.add_bytes("index.json", index.raw)


class DockerArchiveWriter:
    """`docker save` as Docker 25 writes it (see the package's doc)."""

    def __init__(self, tar: TarWriter) -> None:
        self._tar = tar
        self._layer_sizes: dict[str, int] = {}  # diff_id -> size of the tar written
        self._written: set[str] = set()
        self._entries: list[dict] = []
        self._index: list[oci.Descriptor] = []
        self._repositories: dict[str, dict[str, str]] = {}
        tar.add_dir("blobs")
        tar.add_dir("blobs/sha256")

    def add(
        self, manifest: oci.Manifest, open_blob: BlobOpener, tags: Sequence[refs.Reference]
    ) -> str:
        """One image (one platform); returns the digest of the manifest written for it."""
        if manifest.config.size > MAX_DOCUMENT:
            raise SpecError(f"image {manifest.digest}: its config is over the 4 MiB limit")
        with open_blob(manifest.config) as f:
            raw = VerifyingReader(f, manifest.config.digest, manifest.config.size, "config")
            config_raw = raw.read(MAX_DOCUMENT + 1)
            raw.drain()
        config = oci.ImageConfig.from_json(config_raw)
        if len(config.diff_ids) != len(manifest.layers):
            raise SpecError(f"image {manifest.digest}: the config's diff_ids and its layers differ")
        layers = []
        for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            size = self._layer(desc, diff_id, open_blob)
            layers.append(oci.Descriptor(mt.OCI_LAYER, diff_id, size))
        config_desc = oci.Descriptor(mt.OCI_CONFIG, manifest.config.digest, len(config_raw))
        self._bytes(config_desc.digest, config_raw)
        raw_manifest = manifest_bytes(config_desc, layers)
        digest = str(Digest.of(raw_manifest))
        self._bytes(digest, raw_manifest)
        self._record(config, config_desc, layers, digest, len(raw_manifest), tags)
        return digest

    def _bytes(self, digest: str, data: bytes) -> None:
        if digest not in self._written:
            self._tar.add_bytes(blob_member(digest), data)
            self._written.add(digest)

    def _layer(self, desc: oci.Descriptor, diff_id: str, open_blob: BlobOpener) -> int:
        """The layer as an uncompressed tar named by its diff_id, both digests verified."""
        if diff_id in self._layer_sizes:
            return self._layer_sizes[diff_id]
        name = blob_member(diff_id)
        kind = mt.layer_compression(desc.media_type)
        if kind == "none" and desc.digest == diff_id:
            size = desc.size
            self._tar.add_stream(name, size, _verified_copy(desc, open_blob, f"layer {diff_id}"))
        else:
            fill = _decompressing_copy(desc, diff_id, open_blob, kind)
            if self._tar.seekable:
                size = self._tar.add_unsized(name, fill)
            else:  # a pipe: a first pass learns the size for the header
                counted = [0]
                fill(lambda b: counted.__setitem__(0, counted[0] + len(b)))
                size = counted[0]
                self._tar.add_stream(name, size, fill)
        self._layer_sizes[diff_id] = size
        self._written.add(diff_id)
        return size

    def _record(
        self,
        config: oci.ImageConfig,
        config_desc: oci.Descriptor,
        layers: list[oci.Descriptor],
        digest: str,
        size: int,
        tags: Sequence[refs.Reference],
    ) -> None:
        tagged = [t for t in tags if t.tag and not t.digest]
        self._entries.append(
            {
                "Config": blob_member(config_desc.digest),
                "RepoTags": [t.familiar for t in tagged] or None,
                "Layers": [blob_member(d.digest) for d in layers],
            }
        )
        base = oci.Descriptor(mt.OCI_MANIFEST, digest, size, platform=config.platform)
        if not tagged:
            self._index.append(base)
        for t in tagged:
            assert t.tag is not None
            self._index.append(
                base.with_annotations({CONTAINERD_NAME: str(t), oci.REF_NAME: t.tag})
            )
            top = layers[-1].digest.split(":", 1)[1] if layers else ""
            self._repositories.setdefault(t.familiar_name, {})[t.tag] = top

    def finish(self) -> None:
        tar = self._tar
        tar.add_bytes("index.json", oci.Index.build(self._index).raw)
        tar.add_bytes(
            "manifest.json", json.dumps(self._entries, separators=(",", ":")).encode() + b"\n"
        )
        tar.add_bytes("oci-layout", LAYOUT_HEADER)
        if self._repositories:
            repos = json.dumps(self._repositories, separators=(",", ":")).encode() + b"\n"
            tar.add_bytes("repositories", repos)


def _decompressing_copy(
    desc: oci.Descriptor, diff_id: str, open_blob: BlobOpener, kind: str
) -> Callable[[Callable[[bytes], None]], None]:
    def fill(write: Callable[[bytes], None]) -> None:
        h = sha256()
        with open_blob(desc) as f:
            outer = VerifyingReader(f, desc.digest, desc.size, f"layer {desc.digest}")
            known = kind if kind in ("gzip", "zstd", "none") else None
            inner = compression.open_decompressed(outer, known)  # type: ignore[arg-type]
            while chunk := _decompressed(inner, desc.digest):
                h.update(chunk)
                write(chunk)
            outer.drain()  # what the decompressor left (padding) is part of the digest
        actual = "sha256:" + h.hexdigest()
        if actual != diff_id:
            raise DigestMismatch(f"uncompressed layer {desc.digest}", diff_id, actual)

    return fill


def _decompressed(inner: BinaryIO, digest: str) -> bytes:
    try:
        return inner.read(CHUNK)
    except ImgtoolError:
        raise  # the digest or size of the compressed bytes, from the verifying reader
    except Exception as e:  # gzip, zlib and zstd each raise their own kind
        raise SpecError(f"layer {digest} does not decompress: {e}") from None
