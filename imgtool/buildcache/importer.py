"""`--cache-from`: a cache artifact opened for lookups. Opening reads the manifest and the
config only; a hit fetches that one layer; a miss fetches nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgtool import reference as refs
from imgtool.buildcache import artifact, mounts
from imgtool.buildcache.places import LayoutPlace, Origin, RegistryPlace, fetch
from imgtool.buildcache.spec import CacheSpec
from imgtool.builder import Layer
from imgtool.oci import Descriptor
from imgtool.registry.client import TransportOptions
from imgtool.store import Store


@dataclass
class ImportedCache:
    """A CacheSource (see imgtool.builder.cache). `index` is None when nothing was exported
    there yet: every lookup misses. `repository` and `registry` say where a registry cache
    lives, so that an export to a sibling repository can mount its layers."""

    store: Store
    origin: Origin
    index: artifact.CacheIndex | None
    name: str = ""
    fetched: list[str] = field(default_factory=list)  # layer digests the lookups brought in

    def __post_init__(self) -> None:
        self.name = self.name or self.origin.name

    @property
    def found(self) -> bool:
        return self.index is not None

    def lookup(self, key: str) -> Layer | None:
        if self.index is None or key not in self.index.entries:
            return None
        layer, _stage = self.index.entries[key]
        if not self.store.has_blob(layer.digest):
            self._fetch(Descriptor(layer.media_type, layer.digest, layer.size))
            self.fetched.append(layer.digest)
        return layer

    def _fetch(self, desc: Descriptor) -> None:
        fetch(self.store, desc, lambda sink: self.origin.send(desc, sink))

    def digests(self) -> list[str]:
        """Every layer digest this cache lists."""
        return [] if self.index is None else [d.digest for d in self.index.manifest.layers]

    def restore_mounts(self) -> list[str]:
        """Each exported cache mount's content applied over its directory; returns the ids."""
        if self.index is None:
            return []
        for mount_id, desc in self.index.mounts.items():
            self._fetch(desc)
            mounts.restore(self.store, mount_id, desc)
        return list(self.index.mounts)


def place_of(
    spec: CacheSpec, transport: TransportOptions | None = None
) -> RegistryPlace | LayoutPlace:
    if spec.type == "registry":
        return RegistryPlace(refs.parse(spec.location), transport or TransportOptions())
    return LayoutPlace(Path(spec.location))


def open_source(
    store: Store, spec: CacheSpec, transport: TransportOptions | None = None
) -> ImportedCache:
    """Read the cache's manifest and config (bounded, verified); with mounts=true, restore its
    cache mounts into this store's mount directories before the build runs."""
    origin = place_of(spec, transport)
    raw = origin.manifest()
    if raw is None:
        return ImportedCache(store, origin, None)
    what = f"the cache at {origin.name}"
    manifest = artifact.parse_manifest(raw, what)
    config = origin.config(manifest.config)
    cache = ImportedCache(store, origin, artifact.parse_config(manifest, config, what))
    if spec.mounts:
        cache.restore_mounts()
    return cache
