"""A copy into a layout makes durable what a crash could otherwise leave half-there, each
once: every blob's bytes before its rename into blobs/, the renames (one fsync of blobs/sha256
for all of them) before index.json names the image, and index.json itself."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool.copy import copy
from imgtool.store import Store


def test_a_copy_syncs_each_blob_and_the_blob_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_images.make_busybox(tmp_path / "src")
    out = tmp_path / "out"
    Store(out).init()  # the new layout's own files are not what is counted here
    synced: Counter[str] = Counter()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced[os.readlink(f"/proc/self/fd/{fd}")] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    copy(f"oci:{source}:latest", f"oci:{out}:latest", Store(tmp_path / "store"))
    blobs = sorted(p.name for p in (out / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3  # config, layer, manifest
    staged = {f"{out}/ingest/{b}.partial": 1 for b in blobs}
    assert synced == {**staged, f"{out}/blobs/sha256": 1, str(out): 1, **_index_tmp(synced)}


def _index_tmp(synced: Counter[str]) -> dict[str, int]:
    """index.json's temporary file, whose name has the process id in it."""
    return {path: 1 for path in synced if os.path.basename(path).startswith(".index.json.")}
