"""The store against go-containerregistry's layouts (../shared/conformance/oci-layout) and its own
promises: atomic, verified, idempotent writes; names; gc removing exactly the unreferenced blobs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.errors import DigestMismatch, ImageNotFound, SizeMismatch, SpecError, StoreError
from imgtool.store import Store
from tests.support.corpus import corpus, load_json, section


def _copy_layout(name: str, tmp_path: Path) -> Store:
    src = corpus(f"oci-layout/gcr-layout-testdata/{name}")
    dst = tmp_path / name
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return Store(dst)


def _expectations() -> dict:
    what = "oci-layout/expectations.json"
    return section(load_json(what), "layouts", what)


def test_index_layout_lookups(tmp_path: Path) -> None:
    store = _copy_layout("test_index", tmp_path)
    refs = _expectations()["test_index"]["refs"]
    for name, want in refs.items():
        _, desc = store.find(name)
        assert (desc.digest, desc.media_type, desc.size) == (
            want["digest"],
            want["mediaType"],
            want["size"],
        )
    img = store.image("1")
    assert img.manifest.config.digest == (
        "sha256:6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e"
    )
    assert img.manifest.layers[0].media_type == mt.DOCKER_LAYER_GZIP
    assert img.manifest.layers[0].size == 167
    assert store.has_blob(img.manifest.layers[0].digest)
    nested = store.manifest(refs["4"] and store.find("4")[1])
    assert isinstance(nested, oci.Index) and nested.media_type == mt.DOCKER_LIST


def test_index_layout_negative_lookups(tmp_path: Path) -> None:
    store = _copy_layout("test_index", tmp_path)
    with pytest.raises(ImageNotFound):
        store.find("sha256:" + "deadbeef" * 8)
    # a descriptor with a non-manifest media type is not an image
    with pytest.raises(SpecError):
        store.image("2")
    with pytest.raises(StoreError):
        store.open_blob("sha256:" + "deadbeef" * 8)


def test_single_untagged_image_and_custom_media_types(tmp_path: Path) -> None:
    store = _copy_layout("test_index_one_image", tmp_path)
    (desc,) = store.entries()
    assert (
        desc.digest
        == _expectations()["test_index_one_image"]["refs"]["(no ref.name annotation)"]["digest"]
    )
    assert store.gc() == []
    store = _copy_layout("test_index_media_type", tmp_path)
    (desc,) = store.entries()
    m = store.manifest(desc)
    assert isinstance(m, oci.Manifest)
    assert m.config.media_type == "application/vnd.cncf.helm.config.v1+json"
    assert m.layers[0].media_type == "application/tar+gzip"
    assert store.gc() == []


def test_gc_removes_exactly_the_unreferenced_blob(tmp_path: Path) -> None:
    store = _copy_layout("test_gc_index", tmp_path)
    before = {p.name for p in (store.root / "blobs/sha256").iterdir()}
    removed = store.gc()
    gone = "492b89b9dd3cda4596f94916d17f6901455fb8bd7f4c5a2a90df8d39c90f48a0"
    assert [d for d, _ in removed] == [f"sha256:{gone}"]
    assert {p.name for p in (store.root / "blobs/sha256").iterdir()} == before - {gone}
    assert store.gc() == []


def test_gc_refuses_unknown_media_type(tmp_path: Path) -> None:
    store = _copy_layout("test_gc_image_unknown_mediatype", tmp_path)
    with pytest.raises(
        StoreError, match="gc: unknown media type: application/vnd.oci.descriptor.v1"
    ):
        store.gc()


def test_missing_and_bogus_layouts_fail(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        Store(tmp_path / "does_not_exist").find("x")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(SpecError):
        Store(bad).init()


def test_blob_writes_are_verified_and_idempotent(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    data = b"hello"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.write_blob(data) == digest
    assert store.write_blob(data, digest) == digest
    with pytest.raises(DigestMismatch):
        store.write_blob(b"other", digest)
    ing = store.ingest("sha256:" + "0" * 64, 3)
    with pytest.raises(SizeMismatch):
        ing.write(b"four")
    ing.close()
    assert sorted(p.name for p in (store.root / "blobs/sha256").iterdir()) == [digest[7:]]


def test_interrupted_ingest_resumes_from_the_partial(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    data = bytes(range(256)) * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.ingest(digest, len(data)) as ing:
        ing.write(data[:1000])  # then the process "dies": no commit
    assert not store.has_blob(digest)
    with store.ingest(digest, len(data)) as ing:
        assert ing.offset == 1000
        ing.write(data[1000:])
        ing.commit()
    assert store.read_blob(digest) == data
    assert list((store.root / "ingest").iterdir()) == []


def test_an_ingest_that_got_nothing_leaves_nothing(tmp_path: Path) -> None:
    """A 404 or a refused connection: no empty partial file stays behind."""
    store = Store(tmp_path / "s").init()
    digest = "sha256:" + hashlib.sha256(b"never came").hexdigest()
    with pytest.raises(ConnectionError), store.ingest(digest, 10):
        raise ConnectionError("refused")
    assert list((store.root / "ingest").iterdir()) == []
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    with store.ingest(empty, 0) as ing:  # the empty blob: committed, then nothing to clear
        ing.commit()
    assert store.read_blob(empty) == b""


def test_corrupt_ingest_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    digest = "sha256:" + hashlib.sha256(b"right").hexdigest()
    with store.ingest(digest, 5) as ing, pytest.raises(DigestMismatch):
        ing.write(b"wrong")
        ing.commit()
    assert not store.has_blob(digest)
    assert list((store.root / "ingest").iterdir()) == []


def test_names_tag_and_remove(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    cfg = store.write_blob(
        b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg, "size": store.blob_size(cfg)},
        "layers": [],
    }
    raw = oci.canonical_json(doc)
    digest = store.write_blob(raw)
    desc = oci.Descriptor(mt.OCI_MANIFEST, digest, len(raw))
    store.set_ref("docker.io/library/a:latest", desc)
    store.set_ref("docker.io/library/a:latest", desc)
    store.set_ref("localhost:5000/b:1", desc)
    assert [d.ref_name for d in store.entries()] == [
        "docker.io/library/a:latest",
        "localhost:5000/b:1",
    ]
    assert store.find("a")[0] == "docker.io/library/a:latest"
    assert store.find(cfg[7:19])[1].digest == digest  # the image id, as docker shows it
    store.remove_ref("docker.io/library/a:latest")
    assert store.gc() == []
    store.remove_ref("localhost:5000/b:1")
    assert {d for d, _ in store.gc()} == {cfg, digest}
    with pytest.raises(ImageNotFound, match="docker.io/library/a:latest"):
        store.find("a")
