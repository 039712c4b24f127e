"""A copy into a layout makes durable what a crash could otherwise leave half-there, each
once: every blob's bytes before its rename into blobs/, the renames (one fsync of blobs/sha256
for all of them) before index.json names the image, and index.json itself."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool import oci
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


def test_naming_a_blob_another_process_renamed_syncs_its_rename_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob found in blobs/ may be a rename whose directory fsync is still to come (a copy
    commits all its blobs, then syncs blobs/ once): index.json names it only after that
    directory is synced, whoever renamed it."""
    renamer = Store(tmp_path / "s").init()
    with renamer.ingest(_digest(b"layer"), 5) as ing:
        ing.write(b"layer")
        ing.commit(sync_dir=False)  # another process, before its sync_blobs()
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(f"rename {os.path.basename(dst)}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    namer = Store(tmp_path / "s")
    desc = oci.Descriptor("application/octet-stream", _digest(b"layer"), 5)
    namer.set_ref("a:1", desc)
    namer.add_unnamed(desc)
    blobs = f"fsync {tmp_path}/s/blobs/sha256"
    renames = [i for i, e in enumerate(events) if e == "rename index.json"]
    assert len(renames) == 2
    assert all(blobs in events[:i] for i in renames)
    assert events.count(blobs) == 2  # once per index.json written, not per blob


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
