"""Layer application against containerd's breakout cases and umoci's whiteout, opaque, scoping
and hard link cases (../shared/conformance/layer-tar), every case; and go-containerregistry's
whiteout images. (umoci's overlayfs cases, and the overlay format against the flattened one for
every case: test_layer_overlay.py.)"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import uuid
from pathlib import Path

import pytest

from imgtool import inroot
from imgtool.errors import LayerError
from imgtool.layer.apply import apply_layer
from tests.support.corpus import corpus, load_cases, load_json, section

APPLY = load_cases("layer-tar/containerd_apply_cases.json")
UMOCI_FILE = "layer-tar/umoci_whiteout_cases.json"
UMOCI = load_json(UMOCI_FILE)


def umoci_case(name: str) -> dict:
    """One named umoci case."""
    return section(UMOCI, name, UMOCI_FILE)


ROOT = os.geteuid() == 0


def _content(c: object) -> bytes:
    if isinstance(c, dict):
        return bytes(c["bytes"])
    return (c or "").encode()


def make_tar(entries: list[dict]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            kind = e["type"].split()[0]
            ti = tarfile.TarInfo(e.get("name", e.get("path", "")))
            ti.mtime = 1_600_000_000
            ti.mode = int(e.get("mode", "0644"), 8)
            ti.uid, ti.gid = e.get("uid", 0), e.get("gid", 0)
            data = b""
            if kind == "file":
                data = _content(e.get("content", e.get("contents")))
                ti.type = tarfile.AREGTYPE if "TypeRegA" in e["type"] else tarfile.REGTYPE
                ti.size = len(data)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = int(e.get("mode", "0755"), 8)
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, e["linkname"]
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, e["linkname"]
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            if "xattrs" in e:
                ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e["xattrs"].items()}
            tar.addfile(ti, io.BytesIO(data) if data else None)
    buf.seek(0)
    return buf


def _base_fs(root: Path, ops: list[dict]) -> None:
    for op in ops:
        p = root / op["path"].lstrip("/")
        if op["op"] == "mkdir":
            p.mkdir(parents=True, exist_ok=True)
        elif op["op"] == "write_file":
            p.write_bytes(_content(op["content"]))
        elif op["op"] == "symlink":
            os.symlink(op["target"], p)
        elif op["op"] == "hardlink":
            os.link(_in(root, op["target"]), _in(root, op["path"], follow=False))


def _in(root: Path, path: str, follow: bool = True) -> str:
    """The host path of `path` inside `root`, symlinks resolved inside the root (a path that
    does not exist there when nothing is)."""
    rfd = inroot.open_root(str(root))
    try:
        if follow:
            fd = inroot.walk(rfd, path)
            name = ""
        else:
            fd, name = inroot.walk_parent(rfd, path)
        with inroot.opened(fd):
            where = os.readlink(inroot.fd_path(fd))
        return os.path.join(where, name) if name else where
    except (FileNotFoundError, NotADirectoryError):
        return str(root / "nothing-there" / path.strip("/"))
    finally:
        os.close(rfd)


def _subst(obj: object, tname: str, hostdir: str) -> object:
    text = json.dumps(obj).replace("<tname>", tname).replace("<HOSTDIR>", hostdir)
    return json.loads(text)


@pytest.mark.parametrize("case", APPLY, ids=lambda c: c["name"])
def test_containerd_apply(case: dict, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    hostdir = tmp_path / "host"
    hostdir.mkdir()
    perm400 = hostdir / "perm400"
    perm400.write_text("host")
    perm400.chmod(0o400)
    tname = uuid.uuid4().hex
    case = _subst(case, tname, str(hostdir))  # type: ignore[assignment]
    _base_fs(root, case["base_fs"])
    tar = make_tar(case["tar_entries"])
    if case["expect_error"]:
        with pytest.raises(LayerError, match="invalid archive"):
            apply_layer(tar, root)
        return
    apply_layer(tar, root)
    for check in case["checks"]:
        kind, path = check["check"], check["path"]
        if kind == "file_content":
            assert Path(_in(root, path)).read_bytes() == _content(check["content"])
        elif kind == "same_file":
            assert os.stat(_in(root, path)).st_ino == os.stat(_in(root, check["other"])).st_ino
        elif kind == "not_same_file":
            assert os.stat(_in(root, path)).st_ino != os.stat(_in(root, check["other"])).st_ino
        elif kind == "both_symlinks_same_target":
            a, b = _in(root, path, False), _in(root, check["other"], False)
            assert os.readlink(a) == os.readlink(b)
        elif kind == "not_exists":
            assert not os.path.lexists(_in(root, path, False))
        elif kind == "dir_exists":
            assert os.path.isdir(_in(root, path))
        elif kind == "host_file_not_written":
            assert not Path(path).exists() or Path(path).read_bytes() != _content(check["content"])
        elif kind == "host_file_mode_unchanged":
            assert stat.S_IMODE(os.stat(path).st_mode) == int(check["mode"], 8)
        else:
            raise AssertionError(f"unknown check {kind}")


def _umoci(key: str) -> list[dict]:
    return load_cases(UMOCI_FILE, key)


@pytest.mark.parametrize("case", _umoci("unpack_whiteout"), ids=lambda c: c["name"])
def test_umoci_whiteout(case: dict, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    target = root / case["target_path"]
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if case["target_path"] and not case["target_path"].endswith("/"):
        if case["target_is_dir"]:
            (target / ".subdir").mkdir(parents=True)
            for f in ("file1", "file2", ".subdir/file3"):
                (target / f).write_text("x")
        else:
            target.write_text("x")
    os.utime(parent, ns=(789_000_000_111, 123_000_000_456))
    tar = make_tar([{"type": "file", "path": case["whiteout_entry"]}])
    if case["expect_error"]:
        with pytest.raises(LayerError, match="whiteout"):
            apply_layer(tar, root)
        return
    apply_layer(tar, root)
    assert not os.path.lexists(target)
    st = os.stat(parent)
    assert (st.st_atime_ns, st.st_mtime_ns) == (789_000_000_111, 123_000_000_456)


@pytest.mark.parametrize("case", _umoci("unpack_opaque_whiteout"), ids=lambda c: c["name"])
def test_umoci_opaque(case: dict, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "test-subdir").mkdir(parents=True)

    def entries(upper: bool) -> list[dict]:
        return [
            {**e, "path": f"test-subdir/{e['path']}"}
            for e in case["entries"]
            if e["upper"] == upper
        ]

    apply_layer(make_tar(entries(False)), root)
    upper = entries(True) + [{"type": "file", "path": "test-subdir/.wh..wh..opq"}]
    apply_layer(make_tar(upper), root)
    assert (root / "test-subdir").is_dir()
    for e in case["entries"]:
        if os.path.basename(e["path"]).startswith(".wh."):
            continue
        p = root / "test-subdir" / e["path"]
        assert os.path.lexists(p) == e["should_survive"], e


@pytest.mark.parametrize("case", _umoci("path_scoping"), ids=lambda c: c["name"])
def test_umoci_scoping(case: dict, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (tmp_path / "file").write_text("host content")
    for op in case.get("rootfs_setup", []):
        os.symlink(op["target"], root / op["path"])
    apply_layer(make_tar([case["tar_entry"]]), root)
    assert (root / "file").read_text() == "container content"
    assert (tmp_path / "file").read_text() == "host content"


def test_umoci_non_dir_parent_and_missing_parents(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    apply_layer(make_tar(umoci_case("non_dir_parent")["entries"]), root)
    assert (root / "nondir/foo/bar").is_dir() and (root / "nondir/foo/bar/baz").is_file()
    apply_layer(make_tar(umoci_case("missing_parent_dirs")["entries"]), root)
    assert (root / "a/b/c/file").read_text() == "creating parentdirs"


def test_umoci_hardlinks(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    entries = [dict(e) for e in umoci_case("hardlinks")["entries"]]
    entries[1].update(uid=1337, gid=2020)
    entries[3].update(uid=1337, gid=2020)
    apply_layer(make_tar(entries), root)
    ino = {
        n: os.lstat(root / n).st_ino
        for n in ("regular", "hard link", "link", "hard link to symlink")
    }
    assert ino["hard link"] == ino["regular"]
    assert ino["link"] != ino["regular"]
    assert ino["hard link to symlink"] == ino["link"]
    assert os.readlink(root / "hard link to symlink") == os.readlink(root / "link")
    assert os.lstat(root / "regular").st_uid == 0 and os.lstat(root / "link").st_gid == 0


def _gcr_layers(name: str) -> list[bytes]:
    """The layers of a `docker save` archive, in order (gzip or not)."""
    import gzip

    path = corpus(f"layer-tar/gcr-mutate-testdata/{name}")
    with tarfile.open(path) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        out = []
        for layer in manifest[0]["Layers"]:
            data = t.extractfile(layer).read()  # type: ignore[union-attr]
            out.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        return out


@pytest.mark.parametrize(
    "name,absent,present",
    [
        ("whiteout_image.tar", ["foo.txt"], ["bar.txt"]),
        ("whiteout_dir.tar", ["a/foo"], ["a/baz", "b/bar"]),
        ("overwritten_file.tar", [], ["bar.txt"]),
    ],
)
def test_gcr_flattening(
    name: str,
    absent: list[str],
    present: list[str],
    tmp_path: Path,
) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    for raw in _gcr_layers(name):
        apply_layer(io.BytesIO(raw), root)
    for p in absent:
        assert not os.path.lexists(root / p)
    for p in present:
        assert os.path.lexists(root / p)
    if name == "overwritten_file.tar":
        assert os.path.islink(root / "foo.txt")
        assert (root / "foo.txt").read_text() != "foo\n"


def test_opaque_flattening_keeps_only_the_upper_layer(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    apply_layer(
        make_tar([{"type": "file", "path": "d/a.txt"}, {"type": "file", "path": "d/b.txt"}]), root
    )
    apply_layer(
        make_tar([{"type": "file", "path": "d/c.txt"}, {"type": "file", "path": "d/.wh..wh..opq"}]),
        root,
    )
    assert sorted(os.listdir(root / "d")) == ["c.txt"]


@pytest.mark.skipif(not ROOT, reason="needs root for chown, devices and security xattrs")
def test_metadata_survives(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ti = tarfile.TarInfo("bin/ping")
        ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = 3, 0o4755, 1000, 1001, 1_500_000_000
        # file capabilities: cap_net_raw+ep, as `setcap` writes them (VFS_CAP_REVISION_2)
        cap = b"\x01\x00\x00\x02" + b"\x00\x20\x00\x00" * 1 + b"\x00" * 4 + b"\x00" * 8
        ti.pax_headers = {
            "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
            "SCHILY.xattr.user.note": "hello",
        }
        tar.addfile(ti, io.BytesIO(b"abc"))
        for name, kind in (("dev/null", tarfile.CHRTYPE), ("run/fifo", tarfile.FIFOTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type, ti.devmajor, ti.devminor, ti.mode = kind, 1, 3, 0o666
            tar.addfile(ti)
        ti = tarfile.TarInfo("tmp")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o1777, 1_400_000_000
        tar.addfile(ti)
        ti = tarfile.TarInfo("tmp/link")
        ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, "../bin/ping", 1_300_000_000
        tar.addfile(ti)
    buf.seek(0)
    root = tmp_path / "r"
    root.mkdir()
    apply_layer(buf, root)
    st = os.stat(root / "bin/ping")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1000, 1001)
    assert st.st_mtime == 1_500_000_000
    assert os.getxattr(root / "bin/ping", "security.capability")[:4] == b"\x01\x00\x00\x02"
    assert os.getxattr(root / "bin/ping", "user.note") == b"hello"
    assert stat.S_ISCHR(os.lstat(root / "dev/null").st_mode)
    assert os.lstat(root / "dev/null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    assert os.stat(root / "tmp").st_mtime == 1_400_000_000
    assert os.lstat(root / "tmp/link").st_mtime == 1_300_000_000  # the symlink's own time


def test_hard_link_to_missing_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    with pytest.raises(LayerError, match="hard link"):
        apply_layer(make_tar([{"type": "hardlink", "path": "x", "linkname": "/etc/shadow"}]), root)
