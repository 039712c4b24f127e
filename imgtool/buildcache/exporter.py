"""`--cache-to`: the steps a build made (or found) written as a cache artifact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imgtool import oci
from imgtool.buildcache import artifact, mounts
from imgtool.buildcache.importer import ImportedCache, place_of
from imgtool.buildcache.places import (
    LayoutPlace,
    LayoutTarget,
    RegistryPlace,
    RegistryTarget,
    Target,
)
from imgtool.buildcache.spec import CacheSpec
from imgtool.builder import CacheEntry
from imgtool.digest import Digest
from imgtool.errors import StoreError
from imgtool.progress import Callback, ignore
from imgtool.registry.client import TransportOptions
from imgtool.store import Store


@dataclass(frozen=True)
class ExportResult:
    location: str  # the spec, as shown
    digest: str  # of the cache manifest written
    entries: int
    layers: int
    mounts: tuple[str, ...]
    uploaded: int  # blobs sent (or copied into the directory)
    mounted: int  # blobs mounted from another repository of the registry
    skipped: int  # blobs the destination already had


def export(
    store: Store,
    entries: Sequence[CacheEntry],
    spec: CacheSpec,
    *,
    mount_ids: Sequence[str] = (),
    sources: Sequence[ImportedCache] = (),
    transport: TransportOptions | None = None,
    progress: Callback = ignore,
) -> ExportResult:
    """Write the cache: mode=min the target stage's entries, max every stage's; with
    mounts=true also the cache mounts `mount_ids` the build used. Blobs first, the manifest
    last: a concurrent export of the same ref leaves one or the other, whole."""
    chosen = artifact.select(entries, spec.mode)
    with store.writing():
        packed = _packed_mounts(store, mount_ids) if spec.mounts else {}
        art = artifact.build(chosen, packed)
        store.write_blob(art.config_raw)
        config = oci.Descriptor(
            artifact.CACHE_CONFIG, str(Digest.of(art.config_raw)), len(art.config_raw)
        )
        for desc in art.blobs:
            if not store.has_blob(desc.digest):
                raise StoreError(f"cache export: layer {desc.digest} is not in the store")
        target = _target(store, spec, sources, transport, progress)
        target.put_blobs([*art.blobs, config])
        digest = target.put_manifest(art.manifest_raw)
    layers = len(art.blobs) - len(packed)
    return ExportResult(
        str(spec), digest, len(chosen), layers, tuple(sorted(packed)), *target.counts()
    )


def _packed_mounts(store: Store, mount_ids: Sequence[str]) -> dict[str, oci.Descriptor]:
    packed = {}
    for mount_id in dict.fromkeys(mount_ids):
        desc = mounts.pack(store, mount_id)
        if desc is not None:
            packed[mount_id] = desc
    return packed


def _target(
    store: Store,
    spec: CacheSpec,
    sources: Sequence[ImportedCache],
    transport: TransportOptions | None,
    progress: Callback,
) -> Target:
    place = place_of(spec, transport)
    if isinstance(place, LayoutPlace):
        return LayoutTarget(store, place)
    return RegistryTarget(store, place, _mount_from(place, sources), progress)


def _mount_from(place: RegistryPlace, sources: Sequence[ImportedCache]) -> dict[str, list[str]]:
    """digest -> repositories of the same registry whose caches list it (a mount, not an
    upload, when exporting to a sibling repository)."""
    out: dict[str, list[str]] = {}
    for src in sources:
        origin = src.origin
        if isinstance(origin, RegistryPlace) and origin.ref.registry == place.ref.registry:
            for digest in src.digests():
                out.setdefault(digest, []).append(origin.ref.repository)
    return out
