"""Where an image to analyse comes from: the store, a registry (manifest and config only), an
OCI layout directory (`oci:DIR[:REF]`) or a `docker save` archive (`docker-archive:FILE[:REF]`,
both the old layout and the OCI-style one of Docker 25 and later)."""

from __future__ import annotations

import contextlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from imgtool import oci
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


def _from_archive(spec: str) -> Source:
    path, _, ref = spec.partition(":")
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - kept open for the layers
    except (OSError, tarfile.TarError) as e:
        raise ImageNotFound(f"docker-archive:{path} ({e})") from None
    try:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError):
        raise SpecError(f"docker-archive:{path} has no valid manifest.json") from None
    chosen = manifest[0] if manifest else None
    if ref:
        chosen = next((m for m in manifest if ref in (m.get("RepoTags") or [])), None)
        if chosen is None:
            raise ImageNotFound(f"{ref} in docker-archive:{path}")
    if chosen is None:
        raise SpecError(f"docker-archive:{path} holds no image")
    config = oci.ImageConfig.from_json(tar.extractfile(chosen["Config"]).read())  # type: ignore[union-attr]
    members = [tar.getmember(name) for name in chosen["Layers"]]
    layers = []
    for m, diff_id in zip(members, config.diff_ids, strict=True):
        digest = diff_id
        if m.name.startswith("blobs/sha256/"):
            digest = "sha256:" + m.name.rsplit("/", 1)[1]
        layers.append(LayerRef(digest, diff_id, m.size, "application/vnd.oci.image.layer.v1.tar"))

    @contextlib.contextmanager
    def opener(i: int) -> Iterator[BinaryIO]:
        f = tar.extractfile(members[i])
        assert f is not None
        yield f  # type: ignore[misc]

    label = f"docker-archive:{path}" + (f":{ref}" if ref else "")
    return Source(label, config, layers, _opener=opener)


def _from_registry(text: str, platform: oci.Platform | None, insecure: bool) -> Source:
    from imgtool.pull import resolve_remote  # the registry client only when it is needed

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
    if text.startswith("docker-archive:"):
        return _from_archive(text[len("docker-archive:") :])
    if remote or text.startswith("docker://"):
        return _from_registry(text.removeprefix("docker://"), platform, insecure)
    return _from_store(store, text, "")
