"""Naming an image what it is already named rewrites nothing (issue 13: a pull of an image
already in the store is one manifest HEAD, not an index.json rewrite and its fsyncs)."""

from __future__ import annotations

from pathlib import Path

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.store import INDEX_DIGEST_ANNOTATION, Store


def image(store: Store, arch: str) -> oci.Descriptor:
    cfg = store.write_blob(
        b'{"architecture":"%s","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        % arch.encode()
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg, "size": store.blob_size(cfg)},
        "layers": [],
    }
    raw = oci.canonical_json(doc)
    return oci.Descriptor(mt.OCI_MANIFEST, store.write_blob(raw), len(raw))


def test_same_name_same_image_leaves_index_json_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    desc = image(store, "amd64")
    store.set_ref("docker.io/library/a:latest", desc)
    before = (store.root / "index.json").stat()
    store.set_ref("docker.io/library/a:latest", desc)
    after = (store.root / "index.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_moved_name_or_new_annotation_is_still_written(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    amd, arm = image(store, "amd64"), image(store, "arm64")
    store.set_ref("docker.io/library/a:latest", amd)
    store.set_ref("docker.io/library/a:latest", arm)
    assert store.find("a")[1].digest == arm.digest
    marked = arm.with_annotations({INDEX_DIGEST_ANNOTATION: amd.digest})
    store.set_ref("docker.io/library/a:latest", marked)
    assert store.find("a")[1].annotations[INDEX_DIGEST_ANNOTATION] == amd.digest
    assert [d.ref_name for d in store.entries()] == ["docker.io/library/a:latest"]


def test_stored_image_digest_is_the_manifests_own(tmp_path: Path) -> None:
    """Named directly, the name's descriptor says it; through an index, the platform's entry."""
    store = Store(tmp_path / "s").init()
    amd, arm = image(store, "amd64"), image(store, "arm64")
    entries = [
        {**d.to_dict(), "platform": {"os": "linux", "architecture": a}}
        for d, a in ((amd, "amd64"), (arm, "arm64"))
    ]
    raw = oci.canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    store.set_ref("multi", oci.Descriptor(mt.OCI_INDEX, store.write_blob(raw), len(raw)))
    store.set_ref("single", arm)
    picked = store.image("multi", oci.Platform.parse("linux/arm64"))
    assert picked.digest == arm.digest == picked.manifest.digest
    assert store.image("multi", oci.Platform.parse("linux/amd64")).digest == amd.digest
    assert store.image("single").digest == arm.digest
