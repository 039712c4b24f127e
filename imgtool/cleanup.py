"""`imgtool gc`: blobs no name reaches, and unpacked layers no image or container uses."""

from __future__ import annotations

from dataclasses import dataclass

from imgtool.containers import Containers
from imgtool.errors import ImgtoolError
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store


@dataclass(frozen=True)
class GcResult:
    blobs: list[tuple[str, int]]
    layers: list[str]


def used_diff_ids(store: Store) -> set[str]:
    keep: set[str] = set()
    for d in store.entries():
        try:
            top = store.manifest(d)
        except ImgtoolError:
            continue
        for m in store.platform_manifests(top):
            try:
                keep.update(store.config(m).diff_ids)
            except ImgtoolError:
                continue
    for rec in Containers(store.root).list():
        keep.update(rec.extra.get("layers", []))
    return keep


def gc(store: Store, dry_run: bool = False) -> GcResult:
    blobs = store.gc(dry_run=dry_run)
    layers = LayerStore(store)
    keep = used_diff_ids(store)
    if dry_run:
        base = layers.root / "sha256"
        gone = [f"sha256:{d.name}" for d in base.iterdir()] if base.is_dir() else []
        return GcResult(blobs, [d for d in gone if d not in keep])
    return GcResult(blobs, layers.remove_unused(keep))
