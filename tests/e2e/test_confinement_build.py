"""Builds that try to reach the host: symlinks in the context, in a stage's tree or in the image a
RUN step runs on that point at host files; RUN mounts that would write the context; RUN steps
that would share the host's /etc files or outlive a killed `imgtool build`.

Host targets are files under tmp_path with content no other test has. Nothing of them may get
into any blob of the store, and where BuildKit fails (a path that resolves to nothing inside its
own root) the build fails with one line naming the symlink. Where buildah is installed it builds
the same context (Docker's behaviour for builds): where it refuses, imgtool refuses too.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from imgtool.sandbox import cgroups, liveness
from imgtool.store import Store
from tests.conftest import imgtool, spawn
from tests.support.registry import Registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")
BUILDAH = shutil.which("buildah")


def _host_dir(tmp_path: Path) -> tuple[Path, str]:
    """A directory standing for the host: a file `secret` whose content only it has."""
    secret = f"host-secret-{uuid.uuid4().hex}"
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "secret").write_text(secret + "\n")
    return host, secret


def _leaked(store: Store, needle: str) -> list[str]:
    """The blobs of the store (layers uncompressed, configs) that hold `needle`."""
    out = []
    blobs = store.root / "blobs" / "sha256"
    for blob in blobs.iterdir() if blobs.is_dir() else []:
        raw = blob.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        elif raw[:4] == b"\x28\xb5\x2f\xfd":
            from imgtool import compression

            with open(blob, "rb") as f:
                raw = compression.open_decompressed(f).read()
        if needle.encode() in raw:
            out.append(blob.name)
    return out


def _buildah_builds(ctx: Path) -> bool:
    tag = f"imgtool-confine-{uuid.uuid4().hex[:12]}"
    r = subprocess.run(
        ["buildah", "bud", "-q", "--isolation", "chroot", "-t", tag, "."],
        cwd=ctx,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True)
    return r.returncode == 0


def _context(tmp_path: Path, containerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(containerfile)
    return ctx


def _one_line_naming(err: str, name: str) -> bool:
    """imgtool's error is one line (after the build's progress lines) naming `name`."""
    errors = [line for line in err.splitlines() if not line.startswith(("[", "pulling "))]
    return len(errors) == 1 and f"'{name}'" in errors[0] and "Traceback" not in err


# (the symlink made in the context, relative to it; where it points; the COPY source)
CONTEXT_LINKS = {
    "absolute link to a directory": ("linkdir", "{host}", "linkdir/secret"),
    "relative link that climbs out": ("sub/up", "../../hostdir", "sub/up/secret"),
    "link to a file": ("linkfile", "{host}/secret", "linkfile"),
    "link as the copied directory": ("linkdir", "{host}", "linkdir"),
    "link matched by a wildcard": ("linkfile", "{host}/secret", "link*"),
}


@pytest.mark.parametrize("case", sorted(CONTEXT_LINKS))
def test_copy_never_follows_a_context_symlink_to_the_host(
    case: str, store: Store, tmp_path: Path
) -> None:
    link, target, source = CONTEXT_LINKS[case]
    host, secret = _host_dir(tmp_path)
    ctx = _context(tmp_path, f"FROM scratch\nCOPY {source} /x/\n")
    (ctx / link).parent.mkdir(parents=True, exist_ok=True)
    (ctx / link).symlink_to(target.format(host=host))
    r = imgtool("build", "-t", "confine:ctx", str(ctx))
    assert r.code == 1, r.err
    assert _one_line_naming(r.err, link), r.err
    assert "not found in the build context" in r.err
    assert "outside the build context (a link is followed inside the tree" in r.err, r.err
    assert not _leaked(store, secret)
    if BUILDAH:
        assert not _buildah_builds(ctx)  # Docker's behaviour: refused there too


def test_a_link_inside_the_context_still_works_and_copied_links_stay_links(
    store: Store, tmp_path: Path
) -> None:
    host, secret = _host_dir(tmp_path)
    ctx = _context(tmp_path, "FROM scratch\nCOPY alias /a\nCOPY tree /t/\nCOPY abs/f /b\n")
    (ctx / "real.txt").write_text("inside the context\n")
    (ctx / "alias").symlink_to("real.txt")
    (ctx / "tree").mkdir()
    (ctx / "tree" / "out").symlink_to(host / "secret")
    # an absolute link means a path inside the context, as `/` is the context's root
    (ctx / "d").mkdir()
    (ctx / "d" / "f").write_text("via an absolute link\n")
    (ctx / "abs").symlink_to("/d")
    r = imgtool("build", "-t", "confine:ok", str(ctx))
    assert r.code == 0, r.err
    members = dict(_members(store, "confine:ok"))
    assert members["a"] == ("file", b"inside the context\n")  # the source path is followed
    assert members["b"] == ("file", b"via an absolute link\n")
    assert members["t/out"] == ("symlink", str(host / "secret").encode())  # copied as a link
    assert not _leaked(store, secret)


def _members(store: Store, tag: str) -> list[tuple[str, tuple[str, bytes]]]:
    import io
    import tarfile

    out = []
    for d in store.image(tag).manifest.layers:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(store.read_blob(d.digest)))) as t:
            for m in t:
                if m.issym():
                    out.append((m.name.rstrip("/"), ("symlink", m.linkname.encode())))
                elif m.isreg():
                    out.append((m.name, ("file", t.extractfile(m).read())))  # type: ignore[union-attr]
                else:
                    out.append((m.name.rstrip("/"), ("other", b"")))
    return out


def test_dockerignore_holds_whatever_name_a_file_is_reached_by(
    store: Store, tmp_path: Path
) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY pub/key /x\n")
    (ctx / "private").mkdir()
    (ctx / "private" / "key").write_text("ignored-key-material\n")
    (ctx / "pub").symlink_to("private")
    (ctx / ".dockerignore").write_text("private\n")
    r = imgtool("build", "-t", "confine:ign", str(ctx))
    assert r.code == 1 and "not found in the build context" in r.err, r.err
    assert not _leaked(store, "ignored-key-material")


@pytest.mark.parametrize("name", ["Containerfile", ".dockerignore"])
def test_build_files_found_in_the_context_are_read_inside_it(
    name: str, store: Store, tmp_path: Path
) -> None:
    host, secret = _host_dir(tmp_path)
    (host / "secret").write_text(f"FROM scratch\nLABEL leak={secret}\n")
    ctx = _context(tmp_path, "FROM scratch\nLABEL fine=yes\n")
    (ctx / name).unlink(missing_ok=True)
    (ctx / name).symlink_to(host / "secret")
    r = imgtool("build", "-t", "confine:file", str(ctx))
    assert r.code == 1 and _one_line_naming(r.err, name), r.err
    assert "outside the build context" in r.err
    assert not _leaked(store, secret) and secret not in r.err
    # -f names the file the user chose: read where the user's path leads
    if name == "Containerfile":
        r = imgtool("build", "-t", "confine:f", "-f", str(ctx / name), str(ctx))
        assert r.code == 0, r.err


@pytest.mark.parametrize("path", ["/hostlink/secret", "/hostroot{host}/secret"])
def test_copy_from_a_stage_resolves_its_symlinks_inside_the_stage(
    path: str, store: Store, tmp_path: Path
) -> None:
    host, secret = _host_dir(tmp_path)
    src = path.format(host=host)
    ctx = _context(
        tmp_path,
        f"FROM scratch AS s\nCOPY tree/ /\nFROM scratch\nCOPY --from=s /hostroot/own.txt /own\n"
        f"COPY --from=s {src} /x\n",
    )
    tree = ctx / "tree"
    tree.mkdir()
    (tree / "own.txt").write_text("the stage's own file\n")
    (tree / "hostlink").symlink_to(host)
    (tree / "hostroot").symlink_to("/")
    r = imgtool("build", "-t", "confine:from", str(ctx))
    assert r.code == 1 and "not found in stage 's'" in r.err, r.err
    assert _one_line_naming(r.err, src.lstrip("/").split("/")[0]), r.err
    assert not _leaked(store, secret)
    (ctx / "Containerfile").write_text(
        "FROM scratch AS s\nCOPY tree/ /\nFROM scratch\nCOPY --from=s /hostroot/own.txt /own\n"
    )
    r = imgtool("build", "-t", "confine:from", str(ctx))
    assert r.code == 0, r.err
    assert dict(_members(store, "confine:from"))["own"] == ("file", b"the stage's own file\n")


def test_copy_destinations_resolve_inside_the_image(store: Store, tmp_path: Path) -> None:
    host, _ = _host_dir(tmp_path)
    ctx = _context(
        tmp_path,
        "FROM scratch\nCOPY tree/ /\nCOPY f /bin/\nCOPY f /hostlink/\nCOPY f /hostlink/sub/g\n",
    )
    (ctx / "f").write_text("copied\n")
    tree = ctx / "tree"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "bin").symlink_to("usr/bin")  # a merged-/usr image
    (tree / "hostlink").symlink_to(host)
    r = imgtool("build", "-t", "confine:dest", str(ctx))
    assert r.code == 0, r.err
    assert sorted(os.listdir(host)) == ["secret"]
    members = dict(_members(store, "confine:dest"))
    assert members["bin"] == ("symlink", b"usr/bin")  # still the link, written through
    assert members["usr/bin/f"] == ("file", b"copied\n")
    inside = str(host).lstrip("/")
    assert members[f"{inside}/f"] == members[f"{inside}/sub/g"] == ("file", b"copied\n")


def test_copy_from_a_stage_whose_run_step_linked_the_host(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    host, secret = _host_dir(tmp_path)
    ctx = _context(
        tmp_path,
        f"FROM busybox AS s\nRUN ln -s {host} /hostetc && ln -s / /hostroot\n"
        f"FROM scratch\nCOPY --from=s /hostroot{host}/secret /x\n",
    )
    r = imgtool("build", "-t", "confine:run", str(ctx))
    assert r.code == 1 and _one_line_naming(r.err, "hostroot"), r.err
    (ctx / "Containerfile").write_text(
        f"FROM busybox AS s\nRUN ln -s {host} /hostetc && ln -s / /hostroot\n"
        "FROM scratch\nCOPY --from=s /hostetc/secret /x\n"
    )
    r = imgtool("build", "-t", "confine:run", str(ctx))
    assert r.code == 1 and _one_line_naming(r.err, "hostetc"), r.err
    assert not _leaked(store, secret)


def test_run_bind_mount_source_stays_in_the_context(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    # a sibling whose name starts with the context's: a string-prefix check lets it through
    sibling = tmp_path / "ctx-host"
    sibling.mkdir()
    secret = f"host-secret-{uuid.uuid4().hex}"
    (sibling / "secret").write_text(secret + "\n")
    ctx = _context(
        tmp_path, "FROM busybox\nRUN --mount=type=bind,source=link,target=/m cat /m/secret > /o\n"
    )
    (ctx / "link").symlink_to(sibling)
    r = imgtool("build", "-t", "confine:bind", str(ctx))
    assert r.code == 1 and _one_line_naming(r.err, "link"), r.err
    assert not _leaked(store, secret)


def test_rw_bind_mount_does_not_write_the_context(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context(
        tmp_path,
        "FROM busybox\nRUN --mount=type=bind,target=/c,rw "
        "echo changed > /c/in.txt && touch /c/written && cat /c/in.txt > /seen\n",
    )
    (ctx / "in.txt").write_text("original\n")
    r = imgtool("build", "-t", "confine:rw", str(ctx))
    assert r.code == 0, r.err
    assert sorted(p.name for p in ctx.iterdir()) == ["Containerfile", "in.txt"]
    assert (ctx / "in.txt").read_text() == "original\n"  # BuildKit: writes are discarded
    assert dict(_members(store, "confine:rw"))["seen"] == ("file", b"changed\n")


def test_run_bind_mount_of_the_context_leaves_ignored_files_out(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context(
        tmp_path,
        "FROM busybox\nRUN --mount=type=bind,target=/c ls -a /c > /ls;"
        " cat /c/private/key > /o; true\n",
    )
    (ctx / "private").mkdir()
    (ctx / "private" / "key").write_text("ignored-key-material\n")
    (ctx / "kept.txt").write_text("kept\n")
    (ctx / ".dockerignore").write_text("private\n")
    r = imgtool("build", "-t", "confine:ign-bind", str(ctx))
    assert r.code == 0, r.err
    listing = dict(_members(store, "confine:ign-bind"))["ls"][1].decode().split()
    assert "kept.txt" in listing and "private" not in listing
    assert not _leaked(store, "ignored-key-material")
    (ctx / "Containerfile").write_text(
        "FROM busybox\nRUN --mount=type=bind,source=private,target=/p cat /p/key > /o\n"
    )
    r = imgtool("build", "-t", "confine:ign-bind", str(ctx))
    assert r.code == 1 and _one_line_naming(r.err, "private"), r.err


def test_stage_names_never_name_files_outside_the_store(store: Store, tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"FROM scratch AS ../../../../../../..{tmp_path}/out\nCOPY . /x/\n")
    r = imgtool("build", str(ctx))
    assert r.code == 1 and "invalid stage name" in r.err, r.err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == []


def test_run_mount_target_through_an_image_symlink_stays_in_the_image(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    host, _ = _host_dir(tmp_path)
    before = sorted(os.listdir(host))
    ctx = _context(
        tmp_path,
        f"FROM busybox\nRUN ln -s {host} /data\n"
        "RUN --mount=type=bind,target=/data/new true\n"
        "RUN --mount=type=cache,target=/data/cache true\n",
    )
    r = imgtool("build", "-t", "confine:target", str(ctx))
    assert sorted(os.listdir(host)) == before, r.err
    assert r.code == 0, r.err


@pytest.mark.parametrize("network", ["none", "host", "default"])
def test_run_steps_get_copies_of_hosts_and_resolv_conf(
    network: str, hub: Registry, store: Store, tmp_path: Path
) -> None:
    ctx = _context(
        tmp_path,
        f"FROM busybox\nRUN --network={network} stat -L -c '%d:%i' /etc/hosts /etc/resolv.conf"
        " > /ids && cat /etc/hosts > /hosts.txt && cat /etc/resolv.conf > /resolv.txt\n",
    )
    r = imgtool("build", "-t", "confine:etc", str(ctx))
    assert r.code == 0, r.err
    members = dict(_members(store, "confine:etc"))
    ids = members["ids"][1].decode().split()
    for path, seen in zip(("/etc/hosts", "/etc/resolv.conf"), ids, strict=True):
        if os.path.exists(path):
            st = os.stat(path)
            assert seen != f"{st.st_dev}:{st.st_ino}", f"{path} is the host's own file"
    assert b"localhost" in members["hosts.txt"][1]
    if os.path.exists("/etc/resolv.conf"):
        assert members["resolv.txt"][1] == Path("/etc/resolv.conf").read_bytes()
    for stub in ("etc/hosts", "etc/resolv.conf", "etc/hostname"):
        assert stub not in members  # mount points are not part of the layer


def _pids_with(marker: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(name))
    return pids


def _imgtool_cgroup(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        path = line.split(":", 2)[2]
        if path.startswith("/imgtool/"):
            return path.split("/")[2]
    return ""


def _running_step(build: subprocess.Popen, marker: str) -> tuple[int, str]:
    """The RUN step's process (found by the marker in its command line) and its cgroup."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and build.poll() is None:
        pids = [p for p in _pids_with(marker) if p != build.pid]
        if pids:
            return pids[0], _imgtool_cgroup(pids[0])
        time.sleep(0.1)
    raise AssertionError(f"the RUN step did not start: {build.communicate(timeout=5)}")


def _kill_all(marker: str, build: subprocess.Popen) -> None:
    for pid in _pids_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if build.poll() is None:
        build.kill()
    build.wait()


def test_run_step_is_held_in_a_cgroup_and_dies_with_a_killed_build(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    marker = f"imgtool-build-marker-{uuid.uuid4().hex}"
    ctx = _context(tmp_path, f"FROM busybox\nUSER 1000\nRUN sleep 600 || echo {marker}\n")
    build = spawn("build", "--no-cache", str(ctx))
    try:
        _, step = _running_step(build, marker)
        assert step, "the RUN step is in no imgtool cgroup"
        assert liveness.held(step)  # another imgtool's clean-up must leave it alone
        os.kill(build.pid, signal.SIGKILL)
        build.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _pids_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pids_with(marker), "the RUN step outlived the killed imgtool build"
    finally:
        _kill_all(marker, build)


def test_finished_run_steps_leave_no_cgroup_or_lock(
    hub: Registry, store: Store, tmp_path: Path
) -> None:
    marker = f"imgtool-build-marker-{uuid.uuid4().hex}"
    ctx = _context(tmp_path, f"FROM busybox\nRUN sleep 2 || echo {marker}\n")
    build = spawn("build", "--no-cache", str(ctx))
    try:
        _, step = _running_step(build, marker)
        assert step and liveness.held(step)
        out, err = build.communicate(timeout=120)
        assert build.returncode == 0, err
        assert not liveness.held(step) and not cgroups.dirs_of(step)
    finally:
        _kill_all(marker, build)
