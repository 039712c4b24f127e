"""Cache mounts (`RUN --mount=type=cache`) as blobs: a directory packed as tar+zstd, and
restored by the layer applier, which keeps every path inside the mount's directory (a cache
blob is a stranger's layer)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from imgtool import compression, oci
from imgtool.buildcache.artifact import MOUNT_MEDIA_TYPE
from imgtool.builder import cache_mount_dir
from imgtool.layer.apply import apply_layer
from imgtool.layer.diff import write_layer
from imgtool.store import Store


def mount_dir(store: Store, mount_id: str) -> Path:
    """The directory the builder gives `RUN --mount=type=cache,id=mount_id` in this store."""
    return cache_mount_dir(store.root / "buildcache", mount_id)


def pack(store: Store, mount_id: str) -> oci.Descriptor | None:
    """The mount's directory as a blob in the store; None when the build never made it."""
    where = mount_dir(store, mount_id)
    if not where.is_dir():
        return None
    with tempfile.TemporaryFile(dir=store.init().root / "ingest") as packed:
        writer = compression.compressing_writer(packed, "zstd")
        write_layer(where, writer)  # type: ignore[arg-type]
        writer.close()
        packed.seek(0)
        digest, size = store.write_blob_from(packed)
    return oci.Descriptor(MOUNT_MEDIA_TYPE, digest, size)


def restore(store: Store, mount_id: str, desc: oci.Descriptor) -> None:
    """Apply the mount's blob (already in the store, verified) over its directory."""
    where = mount_dir(store, mount_id)
    where.mkdir(parents=True, exist_ok=True)
    with store.open_blob(desc.digest) as raw:
        apply_layer(compression.open_decompressed(raw), where)
