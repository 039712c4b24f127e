"""`imgtool gc`: blobs no name reaches, and unpacked layers no image or container uses."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from imgtool import inroot
from imgtool.builder import workspace
from imgtool.containers import Containers
from imgtool.errors import ImgtoolError
from imgtool.layer.unpacked import LayerStore, chain_ids
from imgtool.store import Store


@dataclass(frozen=True)
class GcResult:
    blobs: list[tuple[str, int]]
    layers: list[str]
    cache_entries: int = 0
    work_dirs: tuple[str, ...] = ()  # of builds that died before they cleaned up


def used_diff_ids(store: Store) -> set[str]:
    """The keys (ChainIDs) of the unpacked layers that images and containers stand on."""
    keep: set[str] = set()
    for d in store.entries():
        try:
            top = store.manifest(d)
        except ImgtoolError:
            continue
        for m in store.platform_manifests(top):
            try:
                keep.update(chain_ids(store.config(m).diff_ids))
            except ImgtoolError:
                continue
    for rec in Containers(store.root).list():
        keep.update(rec.extra.get("layers", []))
    return keep


def trim_build_cache(store: Store, everything: bool = False) -> int:
    """Drop build-cache entries whose layer blob is gone (or all of them, and the cache
    mounts' contents, with `everything`). Returns how many entries went."""
    import json

    d = store.root / "buildcache"
    if not d.is_dir():
        return 0
    gone = 0
    for record in d.glob("*.json"):
        try:
            digest = json.loads(record.read_text())["digest"]
        except (OSError, ValueError, KeyError):
            digest = ""
        if everything or not digest or not store.has_blob(digest):
            record.unlink(missing_ok=True)
            gone += 1
    if everything:  # cache mounts hold what RUN steps wrote: any depth (no shutil.rmtree)
        for sub in ("mounts", "explain"):
            with contextlib.suppress(OSError):
                inroot.remove_tree(d / sub)
    return gone


def gc(store: Store, dry_run: bool = False, build_cache: bool = False) -> GcResult:
    work_dirs = tuple(workspace.remove_abandoned(store.root / "build", dry_run=dry_run))
    if build_cache and not dry_run:
        trim_build_cache(store, everything=True)  # its layers are then unreferenced blobs
    blobs = store.gc(dry_run=dry_run)
    layers = LayerStore(store)
    keep = used_diff_ids(store)
    if dry_run:
        base = layers.root / "sha256"
        gone = [f"sha256:{d.name}" for d in base.iterdir()] if base.is_dir() else []
        return GcResult(blobs, [d for d in gone if d not in keep], work_dirs=work_dirs)
    removed_layers = layers.remove_unused(keep)
    return GcResult(blobs, removed_layers, trim_build_cache(store), work_dirs)
