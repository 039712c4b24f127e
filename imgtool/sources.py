"""Where an image to analyse comes from: the store, a registry (manifest and config only), an
OCI layout directory (`oci:DIR[:REF]`), a `docker save` archive (`docker-archive:FILE[:REF]`,
both the old layout and the OCI-style one of Docker 25 and later) or an OCI layout in a tar
(`oci-archive:FILE[:REF]`). Archives are read through `imgtool.archive`, in place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from imgtool import oci
from imgtool.archive import open_archive
from imgtool.errors import ImageNotFound, ImgtoolError, SpecError
from imgtool.store import Store


@dataclass(frozen=True)
class LayerRef:
    digest: str  # the blob as stored or transferred (may be the diff_id for a plain tar)
    diff_id: str
    size: int  # bytes as stored or transferred (compressed)
    media_type: str


@dataclass
class Source:
    name: str
    config: oci.ImageConfig
    layers: list[LayerRef]
    manifest_digest: str = ""
    remote: bool = False  # layers cannot be read: sizes and history only
    _opener: object = field(default=None, repr=False)

    @contextlib.contextmanager
    def open_layer(self, i: int) -> Iterator[BinaryIO]:
        if self._opener is None:
            raise ImgtoolError(f"{self.name}: layers of a remote image are not read")
        with self._opener(i) as f:  # type: ignore[operator]
            yield f


def _from_store(store: Store, name: str, label: str) -> Source:
    img = store.image(name)
    layers = [
        LayerRef(d.digest, diff, d.size, d.media_type)
        for d, diff in zip(img.manifest.layers, img.config.diff_ids, strict=True)
    ]
    return Source(
        label or img.name,
        img.config,
        layers,
        img.manifest.digest,
        _opener=lambda i: store.open_blob(layers[i].digest),
    )


def _from_layout(spec: str) -> Source:
    path, _, ref = spec.partition(":")
    store = Store(Path(path))
    if not (Path(path) / "oci-layout").exists():
        raise ImageNotFound(f"oci:{path} (no oci-layout file there)")
    if not ref:
        entries = store.entries()
        if len(entries) != 1:
            names = ", ".join(d.ref_name or d.digest for d in entries) or "none"
            raise ImgtoolError(
                f"oci:{path} holds {len(entries)} images ({names}): say which, as oci:{path}:NAME"
            )
        ref = entries[0].ref_name or entries[0].digest
    return _from_store(store, ref, f"oci:{path}:{ref}")


def _from_archive(spec: str, kind: str) -> Source:
    """An image of a docker-archive (either form) or an oci-archive, read in place: the
    archive's own checks (no links followed, names inside it, sizes bounded) hold here too."""
    path, _, ref = spec.partition(":")
    archive = open_archive(path, kind)
    try:
        image = archive.select(ref)
    except BaseException:
        archive.close()
        raise
    top = image.top
    if isinstance(top, oci.Index):
        child = oci.select_platform(top, oci.Platform.host())
        top = archive.document(child)
        if not isinstance(top, oci.Manifest):
            raise SpecError(f"{archive.label}: an index inside an index is not supported")
    config = oci.ImageConfig.from_json(archive.read_blob(top.config.digest, "config"))
    layers = [
        LayerRef(d.digest, diff, d.size, d.media_type)
        for d, diff in zip(top.layers, config.diff_ids, strict=True)
    ]

    @contextlib.contextmanager
    def opener(i: int) -> Iterator[BinaryIO]:
        with archive.open_blob(layers[i].digest) as f:
            yield f

    label = f"{kind}:{path}" + (f":{ref}" if ref else "")
    return Source(label, config, layers, top.digest, _opener=opener)


def _from_registry(text: str, platform: oci.Platform | None, insecure: bool) -> Source:
    from imgtool.puller import resolve_remote  # the registry client only when it is needed

    ref, manifest, config_raw = resolve_remote(text, platform, insecure)
    config = oci.ImageConfig.from_json(config_raw)
    layers = [
        LayerRef(d.digest, diff, d.size, d.media_type)
        for d, diff in zip(manifest.layers, config.diff_ids, strict=True)
    ]
    return Source(str(ref), config, layers, manifest.digest, remote=True)


def open_source(
    text: str,
    store: Store,
    remote: bool = False,
    platform: oci.Platform | None = None,
    insecure: bool = False,
) -> Source:
    if text.startswith("oci:"):
        return _from_layout(text[4:])
    for kind in ("docker-archive", "oci-archive"):
        if text.startswith(kind + ":"):
            return _from_archive(text[len(kind) + 1 :], kind)
    if remote or text.startswith("docker://"):
        return _from_registry(text.removeprefix("docker://"), platform, insecure)
    return _from_store(store, text, "")
