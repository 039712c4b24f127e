"""The cache artifact: one OCI image manifest whose config maps step keys to layers.

    manifest  artifactType CACHE_ARTIFACT; config CACHE_CONFIG; layers: every layer blob the
              entries name, then one tar+zstd blob per exported cache mount
    config    {"version": 1,
               "entries": [{"key", "digest", "diffID", "created", "stage"}],
               "mounts":  [{"id", "digest"}]}

Like BuildKit's cache manifest, the layers ride in the manifest (so a registry keeps them, gc
sees them, and a cross-repository mount finds them) and what a build needs to know (which key
made which layer) is in a small config read before any layer. Unlike BuildKit's, each entry is
a whole step key: imgtool's keys already chain their parents, so there is no graph to rebuild.
Everything read back is checked here: a cache is a stranger's input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.builder import CacheEntry, Layer
from imgtool.digest import Digest
from imgtool.errors import InvalidDigest, SpecError

CACHE_ARTIFACT = "application/vnd.imgtool.buildcache.v1"
CACHE_CONFIG = "application/vnd.imgtool.buildcache.config.v1+json"
MOUNT_MEDIA_TYPE = mt.OCI_LAYER_ZSTD
MOUNT_ANNOTATION = "io.imgtool.buildcache.mount"
VERSION = 1
_KEY = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CacheIndex:
    """A cache artifact read back: key -> (layer, stage); mount id -> its blob."""

    entries: Mapping[str, tuple[Layer, str]]
    mounts: Mapping[str, oci.Descriptor]
    manifest: oci.Manifest


@dataclass(frozen=True)
class Artifact:
    """A cache artifact to write: its manifest and config bytes, and every blob it names."""

    manifest_raw: bytes
    config_raw: bytes
    blobs: tuple[oci.Descriptor, ...]  # layers and mounts, each once


def select(entries: Sequence[CacheEntry], mode: str) -> list[CacheEntry]:
    """mode=min: the target stage's steps; max: every stage's. One entry per key (the last)."""
    chosen = {e.key: e for e in entries if mode == "max" or e.final}
    return list(chosen.values())


def build(entries: Sequence[CacheEntry], mounts: Mapping[str, oci.Descriptor]) -> Artifact:
    layers: dict[str, oci.Descriptor] = {}
    for e in entries:
        layers.setdefault(
            e.layer.digest, oci.Descriptor(e.layer.media_type, e.layer.digest, e.layer.size)
        )
    for mount_id, desc in sorted(mounts.items()):
        layers.setdefault(desc.digest, desc.with_annotations({MOUNT_ANNOTATION: mount_id}))
    config = {
        "version": VERSION,
        "entries": [_entry_doc(e) for e in entries],
        "mounts": [{"id": i, "digest": d.digest} for i, d in sorted(mounts.items())],
    }
    config_raw = oci.canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": CACHE_ARTIFACT,
        "config": {"mediaType": CACHE_CONFIG, "digest": str(Digest.of(config_raw)),
                   "size": len(config_raw)},
        "layers": [d.to_dict() for d in layers.values()],
    }  # fmt: skip
    return Artifact(oci.canonical_json(manifest), config_raw, tuple(layers.values()))


def _entry_doc(e: CacheEntry) -> dict[str, str]:
    return {
        "key": e.key,
        "digest": e.layer.digest,
        "diffID": e.layer.diff_id,
        "created": e.layer.created,
        "stage": e.stage,
    }


def parse_manifest(raw: bytes, what: str) -> oci.Manifest:
    """The cache manifest, refused unless it is one (a plain image is not a cache)."""
    try:
        m = oci.Manifest.from_json(raw)
    except SpecError as e:
        raise SpecError(f"{what}: {e}") from None
    if m.config.media_type != CACHE_CONFIG:
        raise SpecError(f"{what} is not an imgtool build cache (config {m.config.media_type})")
    return m


def parse_config(manifest: oci.Manifest, raw: bytes, what: str) -> CacheIndex:
    """Check the config against its manifest: every digest it names is one of the manifest's
    layers, every key and digest well formed, nothing duplicated."""
    doc = oci.load_json(raw, what)
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise SpecError(f"{what}: not a version {VERSION} imgtool build cache config")
    layers = {d.digest: d for d in manifest.layers}
    entries: dict[str, tuple[Layer, str]] = {}
    for i, item in enumerate(_list(doc, "entries", what)):
        key, layer, stage = _entry(item, layers, f"{what} entries[{i}]")
        if key in entries:
            raise SpecError(f"{what}: key {key[:12]} is listed twice")
        entries[key] = (layer, stage)
    mounts: dict[str, oci.Descriptor] = {}
    for i, item in enumerate(_list(doc, "mounts", what)):
        where = f"{what} mounts[{i}]"
        mount_id = _text(item, "id", where)
        if not mount_id or mount_id in mounts:
            raise SpecError(f"{where}: empty or repeated id")
        mounts[mount_id] = _layer_named(_text(item, "digest", where), layers, where)
    return CacheIndex(entries, mounts, manifest)


def _entry(item: Any, layers: Mapping[str, oci.Descriptor], where: str) -> tuple[str, Layer, str]:
    key = _text(item, "key", where)
    if not _KEY.fullmatch(key):
        raise SpecError(f"{where}: key {key[:80]!r} is not 64 hex digits")
    desc = _layer_named(_text(item, "digest", where), layers, where)
    if desc.media_type not in mt.LAYER_TYPES:
        raise SpecError(f"{where}: {desc.media_type!r} is not a layer media type")
    diff_id = _text(item, "diffID", where)
    _digest(diff_id, where)
    layer = Layer(desc.digest, desc.size, desc.media_type, diff_id, _text(item, "created", where))
    return key, layer, _text(item, "stage", where)


def _layer_named(digest: str, layers: Mapping[str, oci.Descriptor], where: str) -> oci.Descriptor:
    _digest(digest, where)
    desc = layers.get(digest)
    if desc is None:
        raise SpecError(f"{where}: {digest} is not one of the cache manifest's layers")
    return desc


def _digest(text: str, where: str) -> None:
    try:
        Digest.parse_sha256(text)
    except InvalidDigest as e:
        raise SpecError(f"{where}: {e}") from None


def _list(doc: Mapping[str, Any], key: str, what: str) -> list[Any]:
    v = doc.get(key, [])
    if not isinstance(v, list):
        raise SpecError(f"{what}: {key} must be an array")
    return v


def _text(item: Any, key: str, where: str) -> str:
    v = item.get(key) if isinstance(item, dict) else None
    if not isinstance(v, str):
        raise SpecError(f"{where}: {key} must be a string")
    return v
