"""Differential checks: the filesystem imgtool makes of an image equals the one `umoci unpack`
makes of the same image (paths, types, modes, owners, sizes, contents, link targets, device
numbers, xattrs, mtimes of non-directories), both flattened and as imgtool's overlay mounts."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store
from tests.conftest import imgtool

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(not shutil.which("umoci"), reason="umoci is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and xattrs need root"),
]

IGNORED_XATTRS = ("trusted.overlay.",)


def tree(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            else:
                what = ""
            xattrs = {}
            for k in os.listxattr(p, follow_symlinks=False):
                if not k.startswith(IGNORED_XATTRS):
                    xattrs[k] = os.getxattr(p, k, follow_symlinks=False)
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[os.path.relpath(p, root)] = (
                kind,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_size if kind != stat.S_IFDIR else 0,
                what,
                tuple(sorted(xattrs.items())),
                mtime,
            )
    return out


def _diff(a: dict, b: dict) -> list[str]:
    out = [f"only in imgtool: {p}" for p in sorted(set(a) - set(b))]
    out += [f"only in umoci: {p}" for p in sorted(set(b) - set(a))]
    out += [f"differs: {p}: {a[p]} != {b[p]}" for p in sorted(set(a) & set(b)) if a[p] != b[p]]
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not make_images.BUSYBOX.exists():
        pytest.skip("busybox-static is not installed")
    base = tmp_path_factory.mktemp("peer-images")
    return {
        "busybox": make_images.make_busybox(base / "busybox"),
        "layered": make_images.make_layered(base / "layered"),
    }


def _umoci(layout: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    r = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return bundle / "rootfs"


@pytest.mark.parametrize("name", ["busybox", "layered"])
def test_flattened_tree_equals_umoci(name: str, layouts: dict[str, Path], tmp_path: Path) -> None:
    theirs = tree(_umoci(layouts[name], tmp_path))
    store = Store(layouts[name])
    out = tmp_path / "mine"
    r = imgtool("--root", str(layouts[name]), "unpack", "latest", str(out))
    assert r.code == 0, r.err
    assert _diff(tree(out), theirs) == []
    assert store.find("latest")


def test_unpack_to_an_impossible_place_is_one_line(layouts: dict[str, Path]) -> None:
    r = imgtool("--root", str(layouts["busybox"]), "unpack", "latest", "/proc/imgtool-nope/x")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("imgtool: /proc/imgtool-nope") and r.err.count("\n") == 1
    assert "No such file or directory" in r.err


@pytest.mark.parametrize("name", ["busybox", "layered"])
def test_overlay_view_equals_umoci(name: str, layouts: dict[str, Path], tmp_path: Path) -> None:
    theirs = tree(_umoci(layouts[name], tmp_path))
    root = tmp_path / "store"
    shutil.copytree(layouts[name], root)
    store = Store(root)
    layers = LayerStore(store)
    keys = layers.unpack(store.image("latest"))  # each layer's ChainID
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lower = ":".join(str(layers.diff_dir(k)) for k in reversed(keys))
    opts = f"lowerdir={lower}" if len(keys) > 1 else f"lowerdir={lower}:{tmp_path / 'e'}"
    (tmp_path / "e").mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(mnt)], check=True)
    try:
        mine = tree(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert _diff(mine, theirs) == []
