"""The overlay format shows the tree the plain format makes: every case of
../shared/conformance/layer-tar (and a few of our own) applied both ways, the overlay-format
layers stacked with a real overlay mount, compared file for file (type, mode, owner, content,
link target, device, xattrs, and the mtime of non-directories)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from imgtool.errors import LayerError
from imgtool.layer.apply import apply_layer
from tests.support.corpus import load_cases, load_json, section
from tests.support.gates import NEEDS_OVERLAYFS, needs_root
from tests.unit.test_layer_apply import make_tar

pytestmark = [needs_root("overlay format and mounts"), NEEDS_OVERLAYFS]

UMOCI_FILE = "layer-tar/umoci_whiteout_cases.json"
UMOCI = load_json(UMOCI_FILE)


def tree(root: Path) -> dict[str, tuple]:
    """Every path below `root` with what it is (no recursion: trees can be deep)."""
    out: dict[str, tuple] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        for name in sorted(os.listdir(root / rel) if rel else os.listdir(root)):
            p = f"{rel}/{name}" if rel else name
            full = root / p
            st = os.lstat(full)
            what: object = ""
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(full.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = (os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISDIR(st.st_mode):
                todo.append(p)
            xattrs = sorted(
                (k, os.getxattr(full, k, follow_symlinks=False))
                for k in os.listxattr(full, follow_symlinks=False)
            )
            mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[p] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid)
            out[p] += (what, tuple(xattrs), mtime)
    return out


def _raw(entries: list[dict]) -> bytes:
    return make_tar(entries).getvalue()


def flattened(layers: list[bytes], out: Path) -> dict[str, tuple]:
    out.mkdir()
    for raw in layers:
        apply_layer(io.BytesIO(raw), out)
    return tree(out)


def stacked(layers: list[bytes], base: Path) -> dict[str, tuple]:
    """Each layer in overlay format over the ones below it, mounted, read."""
    dirs: list[Path] = []
    for i, raw in enumerate(layers):
        d = base / f"layer{i}"
        d.mkdir(parents=True)
        apply_layer(io.BytesIO(raw), d, "overlay", list(reversed(dirs)))
        dirs.append(d)
    if len(dirs) == 1:
        dirs.insert(0, base / "empty")  # overlay wants two lower dirs when there is no upper
        dirs[0].mkdir()
    mnt = base / "mnt"
    mnt.mkdir()
    lower = ":".join(str(d) for d in reversed(dirs))
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(mnt)], check=True
    )
    try:
        return tree(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def assert_same(layers: list[bytes], tmp_path: Path) -> dict[str, tuple]:
    flat = flattened(layers, tmp_path / "flat")
    over = stacked(layers, tmp_path / "overlay")
    diff = [f"only flattened: {p} {flat[p]}" for p in sorted(set(flat) - set(over))]
    diff += [f"only in overlay: {p} {over[p]}" for p in sorted(set(over) - set(flat))]
    diff += [
        f"{p}: {flat[p]} != {over[p]}" for p in sorted(set(flat) & set(over)) if flat[p] != over[p]
    ]
    assert diff == []
    return flat


def _ops(ops: list[dict]) -> list[dict]:
    """containerd's `base_fs`/`lower` operations as the layer that makes them."""
    out = []
    for op in ops:
        path = op["path"].lstrip("/")
        if op["op"] == "mkdir":
            out.append({"type": "dir", "path": path, "mode": op.get("mode", "0755")})
        elif op["op"] == "write_file":
            out.append({"type": "file", "path": path, "content": op["content"], "mode": op["mode"]})
        elif op["op"] in ("symlink", "hardlink"):
            out.append({"type": op["op"], "path": path, "linkname": op["target"]})
        else:
            raise AssertionError(f"unknown op {op['op']}")
    return out


# --- containerd --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", load_cases("layer-tar/containerd_apply_cases.json"), ids=lambda c: c["name"]
)
def test_containerd_apply_cases(case: dict, tmp_path: Path) -> None:
    text = json.dumps(case).replace("<tname>", uuid.uuid4().hex)
    case = json.loads(text.replace("<HOSTDIR>", str(tmp_path / "host")))
    layers = [_raw(_ops(case["base_fs"]))] if case["base_fs"] else []
    layers.append(_raw(case["tar_entries"]))
    if case["expect_error"]:
        with pytest.raises(LayerError, match="invalid archive"):
            flattened(layers, tmp_path / "flat")
        with pytest.raises(LayerError, match="invalid archive"):
            stacked(layers, tmp_path / "overlay")
        return
    assert_same(layers, tmp_path)
    assert not (tmp_path / "host").exists()


@pytest.mark.parametrize(
    "case", load_cases("layer-tar/containerd_diff_cases.json"), ids=lambda c: c["name"]
)
def test_containerd_diff_cases(case: dict, tmp_path: Path) -> None:
    """A diff case's expected layer, over its lower."""
    upper = [
        {"type": "file", "path": e["name"]} if e["type"] == "whiteout" else e
        for e in case["expected_entries"]
    ]
    assert_same([_raw(_ops(case["lower"])), _raw(upper)], tmp_path)


# --- umoci -------------------------------------------------------------------------------


def _umoci(key: str) -> list[dict]:
    return load_cases(UMOCI_FILE, key)


@pytest.mark.parametrize("case", _umoci("unpack_whiteout"), ids=lambda c: c["name"])
def test_umoci_whiteout_cases(case: dict, tmp_path: Path) -> None:
    target = case["target_path"].rstrip("/")
    lower = []
    if target and not case["target_path"].endswith("/"):
        if case["target_is_dir"]:
            lower += [{"type": "file", "path": f"{target}/{f}"} for f in ("a", "b", ".sub/c")]
        else:
            lower.append({"type": "file", "path": target})
    lower.append({"type": "file", "path": "keep"})
    layers = [_raw(lower), _raw([{"type": "file", "path": case["whiteout_entry"]}])]
    if case["expect_error"]:
        with pytest.raises(LayerError, match="whiteout"):
            stacked(layers, tmp_path / "overlay")
        return
    flat = assert_same(layers, tmp_path)
    assert target not in flat and "keep" in flat


@pytest.mark.parametrize("case", _umoci("unpack_opaque_whiteout"), ids=lambda c: c["name"])
def test_umoci_opaque_cases(case: dict, tmp_path: Path) -> None:
    def under(upper: bool) -> list[dict]:
        return [
            {**e, "path": f"test-subdir/{e['path']}"}
            for e in case["entries"]
            if e["upper"] == upper
        ]

    lower = [{"type": "dir", "path": "test-subdir"}, *under(False)]
    upper = [*under(True), {"type": "file", "path": "test-subdir/.wh..wh..opq"}]
    flat = assert_same([_raw(lower), _raw(upper)], tmp_path)
    for e in case["entries"]:
        if not os.path.basename(e["path"]).startswith(".wh."):
            assert (f"test-subdir/{e['path']}" in flat) == e["should_survive"], e


@pytest.mark.parametrize("case", _umoci("path_scoping"), ids=lambda c: c["name"])
def test_umoci_scoping_cases(case: dict, tmp_path: Path) -> None:
    lower = [
        {"type": "symlink", "path": op["path"], "linkname": op["target"]}
        for op in case.get("rootfs_setup", [])
    ]
    layers = ([_raw(lower)] if lower else []) + [_raw([case["tar_entry"]])]
    flat = assert_same(layers, tmp_path)
    assert flat["file"][4] == hashlib.sha256(b"container content").hexdigest()


@pytest.mark.parametrize("name", ["non_dir_parent", "missing_parent_dirs", "hardlinks"])
def test_umoci_single_layer_cases(name: str, tmp_path: Path) -> None:
    assert_same([_raw(section(UMOCI, name, UMOCI_FILE)["entries"])], tmp_path)


def lower_for(entries: list[dict]) -> list[dict]:
    """Something below every whiteout and opaque marker of `entries`, for them to hide."""
    out = []
    for e in entries:
        parent, base = os.path.split(e["path"])
        if base == ".wh..wh..opq":
            out.append({"type": "file", "path": f"{parent}/lower-file"})
        elif base.startswith(".wh."):
            out.append({"type": "file", "path": f"{os.path.join(parent, base[4:])}/lower-file"})
    return out


# Where the overlay format keeps to the OCI spec and to the flattened apply, and umoci's
# overlay unpacking does not: a whiteout never deletes its own layer's entries; an opaque
# marker on nothing (or on a file of the layer) makes no directory appear; and directories
# only a lower layer had go with it when an opaque marker above hides them.
UMOCI_OVERLAY_DEVIATIONS = {
    ("TestUnpackEntry_OverlayfsRootfs_Whiteout_Nested", "opaque-nested/a/b"): "absent",
    ("TestUnpackEntry_OverlayfsRootfs_Whiteout_Nested", "opaque-nested/a/b/c/d"): "absent",
    ("TestUnpackEntry_OverlayfsRootfs_Whiteout", "file"): "file",
    ("TestUnpackEntry_OverlayfsRootfs_Whiteout_MissingDirs", "opaque-nondir"): "file",
    ("TestUnpackEntry_OverlayfsRootfs_Whiteout_MissingDirs", "opaque-whiteout"): "plain_whiteout",
    (
        "TestUnpackEntry_OverlayfsRootfs_OpaqueWhiteoutConvert",
        "autoconvert-opaquedir/before",
    ): "file",
}


def state(p: Path) -> str:
    st = os.lstat(p) if os.path.lexists(p) else None
    if st is None:
        return "absent"
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return "plain_whiteout"
    if stat.S_ISDIR(st.st_mode):
        try:
            return "opaque_dir" if os.getxattr(p, "trusted.overlay.opaque") == b"y" else "dir"
        except OSError:
            return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


@pytest.mark.parametrize("case", _umoci("overlayfs_unpack"), ids=lambda c: c["test"])
def test_umoci_overlay_cases(case: dict, tmp_path: Path) -> None:
    layers = [_raw(lower_for(case["entries"])), _raw(case["entries"])]
    assert_same(layers, tmp_path)
    top = tmp_path / "overlay" / "layer1"
    for want in case["expect"]:
        expected = UMOCI_OVERLAY_DEVIATIONS.get((case["test"], want["path"]), want["state"])
        assert state(top / want["path"]) == expected, want


# --- go-containerregistry ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["whiteout_image.tar", "whiteout_dir.tar", "overwritten_file.tar"])
def test_gcr_images(name: str, tmp_path: Path) -> None:
    from tests.unit.test_layer_apply import _gcr_layers

    assert_same(_gcr_layers(name), tmp_path)


# --- ours --------------------------------------------------------------------------------

D, F, L, H = "dir", "file", "symlink", "hardlink"
OURS = {
    # a parent the layer leaves out keeps the lower directory's owner and mode
    "implicit parent keeps 1777": [
        [{"type": D, "path": "tmp", "mode": "1777", "uid": 0, "gid": 0}],
        [{"type": F, "path": "tmp/x"}],
    ],
    # a whiteout reached through a lower layer's symlink deletes the file it names
    "whiteout through a lower symlink": [
        [{"type": D, "path": "etc"}, {"type": F, "path": "etc/secret"}],
        [{"type": L, "path": "e", "linkname": "/etc"}],
        [{"type": F, "path": "e/.wh.secret"}, {"type": F, "path": "e/new"}],
    ],
    # the same layer's entry stays, whatever the order
    "whiteout keeps its own layer's entries": [
        [{"type": F, "path": "a"}, {"type": F, "path": "d/lower"}],
        [
            {"type": F, "path": "a"},
            {"type": F, "path": ".wh.a"},
            {"type": F, "path": "d/mine"},
            {"type": F, "path": ".wh.d"},
            {"type": F, "path": ".wh.b"},
            {"type": F, "path": "b"},
        ],
    ],
    # a hard link to a lower file, through a lower symlink
    "hard link to a lower file": [
        [{"type": D, "path": "usr/lib"}, {"type": F, "path": "usr/lib/f", "content": "x"}],
        [{"type": L, "path": "lib", "linkname": "usr/lib"}],
        [{"type": H, "path": "g", "linkname": "lib/f"}],
    ],
    # a layer's file becomes a directory again: nothing of the lower directory shows through
    "file then directory hides the lower directory": [
        [{"type": F, "path": "d/lower"}],
        [{"type": F, "path": "d"}, {"type": D, "path": "d"}, {"type": F, "path": "d/mine"}],
    ],
    # opaque directories below an opaque marker, copies of lower directories on the way
    "opaque over a copied-up directory": [
        [
            {"type": F, "path": "d/sub/x"},
            {"type": F, "path": "d/sub/y"},
            {"type": F, "path": "d/z"},
        ],
        [{"type": F, "path": "d/sub/.wh.x"}, {"type": F, "path": "d/.wh..wh..opq"}],
    ],
    # an opaque marker at the top: overlayfs ignores opaque on a layer's root
    "opaque root": [
        [{"type": F, "path": "a"}, {"type": D, "path": "b"}],
        [{"type": F, "path": "c"}, {"type": F, "path": ".wh..wh..opq"}],
    ],
    # overlayfs's own xattrs in a tar are not image content: dropped in both formats
    "overlay xattrs are dropped": [
        [{"type": F, "path": "d/lower"}],
        [
            {"type": D, "path": "d", "xattrs": {"trusted.overlay.opaque": "y"}},
            {"type": F, "path": "f", "xattrs": {"user.overlay.whiteout": "y", "user.k": "v"}},
        ],
    ],
}


@pytest.mark.parametrize("name", list(OURS))
def test_our_cases(name: str, tmp_path: Path) -> None:
    flat = assert_same([_raw(layer) for layer in OURS[name]], tmp_path)
    if name == "implicit parent keeps 1777":
        assert flat["tmp"][1] == 0o1777
    elif name == "whiteout through a lower symlink":
        assert "etc/secret" not in flat and "etc/new" in flat
    elif name == "whiteout keeps its own layer's entries":
        assert {"a", "b", "d/mine"} <= set(flat) and "d/lower" not in flat
    elif name == "overlay xattrs are dropped":
        assert "d/lower" in flat and flat["f"][5] == (("user.k", b"v"),)


def test_tarfile_writes_what_the_cases_say() -> None:
    """The cases' xattrs reach the tar (a case that silently lost them would test nothing)."""
    raw = _raw(OURS["overlay xattrs are dropped"][1])
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        assert t.getmember("d").pax_headers["SCHILY.xattr.trusted.overlay.opaque"] == "y"
