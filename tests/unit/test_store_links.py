"""A store or OCI layout a stranger made (`copy oci:DIR …`, `load`) is read without following a
symlink below its root: a blob or index.json that links to a host file is refused, never read
(and so never sent to a registry), and a FIFO never blocks a read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgtool.digest import Digest
from imgtool.errors import StoreError
from imgtool.store import Store


@pytest.fixture
def layout(tmp_path: Path) -> Store:
    return Store(tmp_path / "layout").init()


def test_a_blob_that_links_to_a_host_file_is_refused(layout: Store, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"host secret\n")
    digest = str(Digest.of(b"host secret\n"))
    os.symlink(secret, layout.blob_path(digest))
    with pytest.raises(StoreError, match="symlink"):
        layout.open_blob(digest)


def test_a_linked_blobs_directory_is_refused(layout: Store, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "sha256"
    elsewhere.mkdir(parents=True)
    digest = str(Digest.of(b"x"))
    (elsewhere / digest.split(":")[1]).write_bytes(b"x")
    blobs = layout.root / "blobs"
    (blobs / "sha256").rmdir()
    blobs.rmdir()
    os.symlink(elsewhere.parent, blobs)
    with pytest.raises(StoreError, match="symlink"):
        layout.open_blob(digest)


def test_a_fifo_blob_is_refused_not_waited_on(layout: Store) -> None:
    digest = str(Digest.of(b"y"))
    os.mkfifo(layout.blob_path(digest))
    with pytest.raises(StoreError, match="not a regular file"):
        layout.open_blob(digest)


def test_a_linked_index_is_refused(layout: Store, tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"schemaVersion": 2, "manifests": []}')
    (layout.root / "index.json").unlink()
    os.symlink(tmp_path / "other.json", layout.root / "index.json")
    with pytest.raises(StoreError, match="symlink"):
        layout.entries()


def test_a_plain_blob_reads(layout: Store) -> None:
    digest = layout.write_blob(b"plain")
    with layout.open_blob(digest) as f:
        assert f.read() == b"plain"


def test_a_linked_blob_is_not_a_blob_the_store_has(tmp_path: Path) -> None:
    """A copy into a layout a stranger made skips the blobs it has: a link in blobs/ must
    not count as one, or the image would be named without its blob."""
    store = Store(tmp_path / "layout")
    digest = store.write_blob(b"layer bytes")
    target = tmp_path / "elsewhere"
    target.write_bytes(b"layer bytes")
    blob = Path(store.blob_path_str(digest))
    blob.unlink()
    blob.symlink_to(target)
    assert not store.has_blob(digest)
    assert not store.has_blob("sha256:" + "0" * 64)
