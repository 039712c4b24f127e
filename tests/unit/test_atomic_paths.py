"""atomic.py, the store and the container records take str paths as well as Paths (the hot
paths use strings, to do without pathlib); Store.root and friends stay Paths for callers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgtool import atomic
from imgtool.containers import Containers
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store


@pytest.mark.parametrize(
    "text",
    ["/a", "/a/b/", "b", "/", "a//b", "./x", "../y/z", "a/b//", "//a"]
    + ["", ".", "/.", "a/.", "a/./", "a/b/.", "///", "///a", "a/..", "..", "a/./b"],
)
def test_split_is_paths_parent_and_name(text: str) -> None:
    assert atomic._split(text) == (str(Path(text).parent), Path(text).name)


def test_writes_by_str_and_relative_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "w"
    where.mkdir()
    atomic.atomic_write(str(where / "x.json"), b"1")
    assert (where / "x.json").read_bytes() == b"1"
    monkeypatch.chdir(where)
    atomic.atomic_write("y.json", b"2")  # its directory is the current one
    assert (where / "y.json").read_bytes() == b"2"
    assert sorted(os.listdir(where)) == ["x.json", "y.json"]  # no temporary file left


def test_private_cache_by_str(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    cache = str(tmp_path / "cache" / "sub")
    atomic.write_private(cache, "f", b"data")
    assert atomic.read_private(cache, "f", 100) == b"data"
    assert (tmp_path / "cache" / "sub").stat().st_mode & 0o777 == 0o700
    os.symlink(tmp_path / "cache" / "sub", tmp_path / "link")
    assert atomic.read_private(str(tmp_path / "link"), "f", 100) is None  # not through a link


def test_store_paths_for_callers_strings_inside(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s")).init()
    assert store.root == tmp_path / "s" and isinstance(store.root, Path)
    assert store.root_str == str(tmp_path / "s")
    digest = store.write_blob(b"x")
    assert store.blob_path(digest) == tmp_path / "s" / "blobs" / "sha256" / digest[7:]
    assert store.blob_path_str(digest) == str(store.blob_path(digest))
    layers = LayerStore(store)
    assert layers.root == tmp_path / "s" / "layers"
    assert str(layers.diff_dir(digest)) == layers.diff_dir_str(digest)
    containers = Containers(store.root)
    assert containers.dir("abc") == tmp_path / "s" / "containers" / "abc"
    assert Containers(store.root_str).dir_str("abc") == str(containers.dir("abc"))
