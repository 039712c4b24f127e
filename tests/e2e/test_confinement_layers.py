"""Issue 9, layers: applying an image's layers never reaches the host, a refused layer leaves
nothing behind, and a pathological layer is refused in seconds with one line.

The "host" is a directory under the test's tmp_path that the hostile layers' symlinks name by
absolute path; the tests assert that nothing there changed (mtimes, modes, owners, contents,
listings) after `imgtool unpack`, after the overlay-format unpack `run` uses, and after
`imgtool run`. Every layer is a tar built here with the tarfile module.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import make_images
from imgtool import inroot
from imgtool.errors import LayerError
from imgtool.layer.apply import apply_layer
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store
from tests.conftest import Result, imgtool
from tests.support.gates import NEEDS_OVERLAYFS, needs_root

pytestmark = [needs_root("owners, devices and containers"), NEEDS_OVERLAYFS]

IMAGE_TIME = 1_500_000_000
HOST_NS = 1_234_567_890_123_456_789
DEEP = 3000  # nested directories: 6000 bytes of path, over PATH_MAX


# --- layers, images, the "host" ------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.size, ti.mtime = kind, link, len(data), IMAGE_TIME
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o777 if kind == tarfile.SYMTYPE else 0o644
    return ti, data


def tar_of(members: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def times_through_symlink(host: Path) -> bytes:
    """x/ and x/NAME/ (dated), then x -> the host directory: the directory times, set once
    the layer's entries are in, must not be set through the symlink that replaced x."""
    return tar_of(
        [
            member("x", tarfile.DIRTYPE),
            member("x/NAME", tarfile.DIRTYPE),
            member("x/NAME/file", data=b"image"),
            member("x", tarfile.SYMTYPE, link=str(host)),
        ]
    )


def image(store: Path, *layers: bytes, busybox: bool = True) -> Path:
    """An OCI layout (imgtool's store format) holding `latest`: busybox and the layers."""
    if busybox and not make_images.BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (/bin/busybox)")
    layout = make_images.Layout(store)
    raws = ([make_images.layer_tar(make_images.busybox_entries())] if busybox else []) + list(
        layers
    )
    layout.name(layout.image(raws, make_images.config_for(raws)), "latest")
    layout.close()
    return store


@pytest.fixture
def host(tmp_path: Path) -> Path:
    host = tmp_path / "host"
    (host / "NAME").mkdir(parents=True)
    (host / "NAME" / "keep").write_text("host")
    for p in (host / "NAME" / "keep", host / "NAME", host):
        os.utime(p, ns=(HOST_NS, HOST_NS))
    return host


@pytest.fixture(autouse=True)
def _no_deep_tree_left(tmp_path: Path) -> Iterator[None]:
    """Deep trees a failing test may leave are removed: pytest's own clean-up of old
    temporary directories (shutil.rmtree) would fail on them with RecursionError."""
    yield
    for sub in ("out", "store"):
        inroot.remove_tree(tmp_path / sub)


def snapshot(host: Path) -> dict[str, tuple]:
    """What an escape could change (atimes aside: reading the snapshot moves them)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(host):
        for name in ["", *dirnames, *filenames]:
            p = Path(dirpath, name)
            st = os.lstat(p)
            content = p.read_bytes() if stat.S_ISREG(st.st_mode) else sorted(os.listdir(p))
            out[str(p)] = (st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid, content)
    return out


def one_line(r: Result) -> str:
    assert r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    return r.err


# --- item 9: deferred directory times go through no symlink ---------------------------------


def test_unpack_sets_no_host_times(host: Path, tmp_path: Path) -> None:
    store = image(tmp_path / "store", times_through_symlink(host), busybox=False)
    before = snapshot(host)
    r = imgtool("--root", str(store), "unpack", "latest", str(tmp_path / "out"))
    assert r.code == 0, r.err
    assert snapshot(host) == before
    assert os.readlink(tmp_path / "out" / "x") == str(host)


def test_overlay_format_sets_no_host_times(host: Path, tmp_path: Path) -> None:
    base = tar_of([member("etc", tarfile.DIRTYPE), member("etc/passwd", data=b"root\n")])
    store = Store(image(tmp_path / "store", base, times_through_symlink(host), busybox=False))
    before = snapshot(host)
    layers = LayerStore(store)
    keys = layers.unpack(store.image("latest"))
    assert snapshot(host) == before
    assert os.readlink(layers.diff_dir(keys[1]) / "x") == str(host)


def test_run_sets_no_host_times(host: Path, tmp_path: Path) -> None:
    store = image(tmp_path / "store", times_through_symlink(host))
    before = snapshot(host)
    r = imgtool("--root", str(store), "run", "--rm", "--network", "none", "latest", "true")
    assert r.code == 0, r.err
    assert snapshot(host) == before


# --- item 9: a refused layer leaves nothing of imgtool's behind -------------------------------

GOOD = tar_of([member("a", tarfile.DIRTYPE), member("a/file", data=b"x" * 1000)])
BAD = tar_of([member("b/file", data=b"y"), member("b/link", tarfile.LNKTYPE, link="/nowhere")])


def test_refused_unpack_removes_what_it_made(tmp_path: Path) -> None:
    store = image(tmp_path / "store", GOOD, BAD, busybox=False)
    out = tmp_path / "new" / "parents" / "out"
    r = imgtool("--root", str(store), "unpack", "latest", str(out))
    assert r.code == 1 and "hard link to a file not in the layer or below" in one_line(r)
    assert not (tmp_path / "new").exists()


def test_refused_unpack_empties_an_empty_dest_it_was_given(tmp_path: Path) -> None:
    store = image(tmp_path / "store", GOOD, BAD, busybox=False)
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    os.utime(out, ns=(HOST_NS, HOST_NS))
    r = imgtool("--root", str(store), "unpack", "latest", str(out))
    assert r.code == 1, r.err
    st = os.stat(out)
    assert os.listdir(out) == [] and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_mtime_ns == HOST_NS


def test_unpack_never_touches_a_dest_with_content(tmp_path: Path) -> None:
    store = Store(image(tmp_path / "store", GOOD, BAD, busybox=False))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine").write_text("user")
    r = imgtool("--root", str(store.root), "unpack", "latest", str(out))
    assert r.code == 2 and "not empty" in r.err
    with pytest.raises(LayerError, match="not empty"):
        LayerStore(store).export_rootfs(store.image("latest"), out)
    assert os.listdir(out) == ["mine"] and (out / "mine").read_text() == "user"


# --- item 10: pathological layers are refused, quickly, with one line ------------------------


def deep_layer(depth: int) -> bytes:
    return tar_of([member("/".join(["d"] * i), tarfile.DIRTYPE) for i in range(1, depth + 1)])


def layers_left(store: Path) -> list[str]:
    layers = store / "layers"
    return [
        f"{sub}/{name}"
        for sub in ("sha256", "tmp")
        if (layers / sub).is_dir()
        for name in os.listdir(layers / sub)
    ]


def test_run_refuses_a_deep_layer_in_seconds(tmp_path: Path) -> None:
    store = image(tmp_path / "store", deep_layer(DEEP))
    t0 = time.monotonic()
    r = imgtool("--root", str(store), "run", "--rm", "--network", "none", "latest", "true")
    took = time.monotonic() - t0
    assert r.code == 125 and "path longer than 4096 bytes" in one_line(r)
    assert took < 60, f"refused after {took:.0f} s"
    assert [p.split("/")[0] for p in layers_left(store)] == ["sha256"]  # busybox's, only


def test_unpack_refuses_a_deep_layer_and_removes_it(tmp_path: Path) -> None:
    store = image(tmp_path / "store", deep_layer(DEEP), busybox=False)
    r = imgtool("--root", str(store), "unpack", "latest", str(tmp_path / "out"))
    assert r.code == 1 and "path longer than 4096 bytes" in one_line(r)
    assert not (tmp_path / "out").exists()


def test_deep_but_legal_layer_runs_and_goes(tmp_path: Path) -> None:
    """2000 levels (4000 bytes): unpacked in both formats, run, then removed by gc (no
    recursion anywhere: Python's own limit is 1000 frames)."""
    store = image(tmp_path / "store", deep_layer(2000))
    r = imgtool("--root", str(store), "unpack", "latest", str(tmp_path / "out"))
    assert r.code == 0, r.err
    assert os.path.isdir(os.path.join(tmp_path, "out", *["d"] * 100))
    r = imgtool("--root", str(store), "run", "--rm", "--network", "none", "latest", "true")
    assert r.code == 0, r.err
    assert imgtool("--root", str(store), "rmi", "latest").code == 0
    r = imgtool("--root", str(store), "gc")
    assert r.code == 0, r.err
    assert layers_left(store) == []


@pytest.mark.parametrize(
    "members,message",
    [
        # a 2 MiB PAX path record: refused before tarfile reads it into memory
        ([member("p" * (2 << 20), data=b"x")], "tar header of"),
        # symlinks that name each other
        (
            [
                member("a", tarfile.SYMTYPE, link="b"),
                member("b", tarfile.SYMTYPE, link="a"),
                member("a/x", data=b"x"),
            ],
            "too many levels of symbolic links",
        ),
        # a symlink that names itself below itself: every walk would be longer than the last
        (
            [member("l", tarfile.SYMTYPE, link="l/l/l/l/l/l/l/l/l/l"), member("l/x", data=b"")],
            "too many levels of symbolic links",
        ),
    ],
    ids=["huge-pax-header", "symlink-loop", "symlink-growth"],
)
def test_pathological_layers_are_one_line(members: list, message: str, tmp_path: Path) -> None:
    store = image(tmp_path / "store", tar_of(members))
    t0 = time.monotonic()
    r = imgtool("--root", str(store), "run", "--rm", "--network", "none", "latest", "true")
    assert r.code == 125 and message in one_line(r)
    assert time.monotonic() - t0 < 60
    assert len(layers_left(store)) == 1


def cache_defeating_layer(rounds: int = 5000, depth: int = 2047) -> bytes:
    """A legal deep chain (4093 bytes), then rounds of: replace `x` (a symlink, then a
    directory: the applier forgets the directories it holds open) and a file near the bottom
    of the chain (a walk of 2046 components, each time)."""
    members = [member("/".join(["d"] * i), tarfile.DIRTYPE) for i in range(1, depth + 1)]
    bottom = "/".join(["d"] * (depth - 1))
    for i in range(rounds):
        members += [member("x", tarfile.SYMTYPE, link="y"), member("x", tarfile.DIRTYPE)]
        members.append(member(f"{bottom}/f{i}"))
    return tar_of(members)


@pytest.mark.parametrize("fmt", ["plain", "overlay"])
def test_a_layer_that_makes_every_walk_deep_is_refused_in_seconds(fmt: str, tmp_path: Path) -> None:
    raw = cache_defeating_layer()
    root = tmp_path / "out"
    root.mkdir()
    t0 = time.monotonic()
    with pytest.raises(LayerError, match="too much work to apply") as e:
        apply_layer(io.BytesIO(raw), root, fmt)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 30 and "\n" not in str(e.value)
