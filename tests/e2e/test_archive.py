"""`save`, `load` and `copy` as a user types them, checked against skopeo both ways, the real
registry and oci-image-tool: the same digests as skopeo where the format keeps them, the same
image ids and diff_ids where it cannot (docker-archive's uncompressed layers)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from imgtool.store import Store
from tests.conftest import SKOPEO, imgtool
from tests.support.registry import Registry
from tests.support.tools import require_tool
from tests.unit.test_archive import docker_members, snapshot, write_tar

pytestmark = [pytest.mark.registry, pytest.mark.peer]


def skopeo(*args: str) -> None:
    if not SKOPEO:
        pytest.skip("skopeo is not installed")
    r = subprocess.run(
        [SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr


def skopeo_raw(ref: str) -> bytes:
    assert SKOPEO
    cmd = [SKOPEO, "inspect", "--raw", "--tls-verify=false", ref]
    return subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout


def layout_top(layout: Path, ref: str | None = None) -> dict:
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    if ref is not None:
        entries = [e for e in entries if e.get("annotations", {}).get(oci_ref) == ref]
    assert len(entries) == 1, entries
    return entries[0]


oci_ref = "org.opencontainers.image.ref.name"


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def ids(layout: Path, ref: str | None = None) -> tuple[str, list[str]]:
    """The image id (config digest) and diff_ids of a layout's single-platform image."""
    manifest = json.loads(blob(layout, layout_top(layout, ref)["digest"]))
    config = manifest["config"]["digest"]
    return config, json.loads(blob(layout, config))["rootfs"]["diff_ids"]


def validate(layout: Path, ref: str) -> None:
    require_tool("oci-image-tool", "oci-image-tool")
    r = subprocess.run(
        ["oci-image-tool", "validate", "--type", "image", "--ref", f"name={ref}", str(layout)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_archives_skopeo_writes_load(images: dict[str, Path], store: Store, tmp_path: Path) -> None:
    layout = images["busybox"]
    want_id, want_diffs = ids(layout)
    docker = tmp_path / "skopeo-docker.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:latest", f"docker-archive:{docker}:busybox:latest")
    r = imgtool("load", "-i", str(docker))
    assert r.code == 0, r.err
    assert "Loaded image: docker.io/library/busybox:latest" in r.out
    img = store.image("busybox")
    assert (img.config.digest, img.config.diff_ids) == (want_id, want_diffs)
    ociarc = tmp_path / "skopeo-oci.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:latest", f"oci-archive:{ociarc}:example.com/bb:1")
    r = imgtool("load", "-i", str(ociarc))
    assert r.code == 0, r.err
    # an oci-archive keeps the manifest as it is: the same digest as the layout's
    assert store.find("example.com/bb:1")[1].digest == layout_top(layout)["digest"]


def test_archives_imgtool_saves_skopeo_reads(
    images: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    layout = images["busybox"]
    assert imgtool("copy", f"oci:{layout}:latest", "busybox").code == 0
    want_id, want_diffs = ids(layout)
    for fmt in ("docker-archive", "oci-archive"):
        path = tmp_path / f"{fmt}.tar"
        r = imgtool("save", "--format", fmt, "-o", str(path), "busybox")
        assert r.code == 0, r.err
        out = tmp_path / f"from-{fmt}"
        skopeo("copy", "--quiet", f"{fmt}:{path}", f"oci:{out}:x")
        validate(out, "x")
        if fmt == "oci-archive":  # manifests byte for byte
            assert layout_top(out)["digest"] == layout_top(layout)["digest"]
            assert ids(out) == (want_id, want_diffs)
            continue
        # skopeo re-encodes a docker-archive's config on its way to OCI and gzips the layers:
        # what it makes of imgtool's archive is what it makes of its own, digest for digest
        own, theirs = tmp_path / "skopeo-own.tar", tmp_path / "from-own"
        skopeo("copy", "--quiet", f"oci:{layout}:latest", f"docker-archive:{own}:busybox:latest")
        skopeo("copy", "--quiet", f"docker-archive:{own}", f"oci:{theirs}:x")
        assert layout_top(out)["digest"] == layout_top(theirs)["digest"]
        config_id, diffs = ids(out)
        assert diffs == want_diffs
        assert json.loads(blob(out, config_id)) == json.loads(blob(layout, want_id))
    names = subprocess.run(
        ["tar", "tf", str(tmp_path / "docker-archive.tar")], capture_output=True, text=True
    ).stdout.split()
    # Docker 25's form: an OCI layout beside manifest.json, uncompressed layers by diff_id
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= set(names)
    assert f"blobs/sha256/{want_diffs[0].split(':')[1]}" in names


def test_save_to_stdout_load_from_stdin(
    images: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    assert imgtool("copy", f"oci:{images['busybox']}:latest", "busybox").code == 0
    path = tmp_path / "piped.tar"
    with open(path, "wb") as f:
        saved = subprocess.run(
            [*_cli(), "save", "busybox"], stdout=f, stderr=subprocess.PIPE, text=False
        )
    assert saved.returncode == 0, saved.stderr
    other = tmp_path / "other"
    with open(path, "rb") as f:
        loaded = subprocess.run(
            [*_cli(), "--root", str(other), "load"], stdin=f, capture_output=True, text=True
        )
    assert loaded.returncode == 0, loaded.stderr
    assert Store(other).image("busybox").config.digest == store.image("busybox").config.digest
    assert not list((other / "ingest").iterdir())  # the spooled copy of stdin went


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "imgtool"]


def test_copy_gives_skopeos_digests(
    plain_registry: Registry, images: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    host = plain_registry.host
    for flags, name in (([], "one"), (["--all"], "all")):
        mine, theirs = tmp_path / f"mine-{name}", tmp_path / f"theirs-{name}"
        r = imgtool("copy", *flags, f"docker://{host}/multi/busybox:latest", f"oci:{mine}:x")
        assert r.code == 0, r.err
        skopeo(
            "copy", "--quiet", *flags, "--src-tls-verify=false",
            f"docker://{host}/multi/busybox:latest", f"oci:{theirs}:x",
        )  # fmt: skip
        assert layout_top(mine, "x")["digest"] == layout_top(theirs, "x")["digest"]
        validate(mine, "x")
    # and back: oci dir -> registry -> store -> registry, the digest all the way
    want = layout_top(tmp_path / "mine-all", "x")["digest"]
    r = imgtool(
        "copy", "--all", f"oci:{tmp_path / 'mine-all'}:x", f"docker://{host}/copied/multi:1"
    )
    assert r.code == 0, r.err
    assert (
        "sha256:" + hashlib.sha256(skopeo_raw(f"docker://{host}/copied/multi:1")).hexdigest()
        == want
    )
    r = imgtool("copy", "--all", f"docker://{host}/copied/multi:1", "store:copied/multi:1")
    assert r.code == 0, r.err
    assert store.find("copied/multi:1")[1].digest == want
    r = imgtool("copy", "--all", "copied/multi:1", f"docker://{host}/copied/again:2")
    assert r.code == 0, r.err
    assert (
        "sha256:" + hashlib.sha256(skopeo_raw(f"docker://{host}/copied/again:2")).hexdigest()
        == want
    )


def test_copy_mounts_across_repositories(plain_registry: Registry, store: Store) -> None:
    host = plain_registry.host
    r = imgtool("copy", f"docker://{host}/library/busybox:latest", f"docker://{host}/mount/bb:1")
    assert r.code == 0, r.err
    assert "Mounted" in r.err and "from library/busybox" in r.err
    assert "Complete" not in r.err  # nothing was uploaded
    # from the store: blobs of images that came from that registry are mounted too (as push)
    name = f"{host}/library/busybox:latest"
    assert imgtool("copy", f"docker://{name}", f"store:{name}").code == 0
    r = imgtool("copy", name, f"docker://{host}/mount/fromstore:1")
    assert r.code == 0, r.err
    assert "Mounted" in r.err and "Complete" not in r.err


def test_copy_to_and_from_archives_through_the_registry(
    plain_registry: Registry, images: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    host = plain_registry.host
    want_id, want_diffs = ids(images["busybox"])
    tar = tmp_path / "bb.tar"
    r = imgtool("copy", f"docker://{host}/library/busybox:latest", f"docker-archive:{tar}:bb:1")
    assert r.code == 0, r.err
    r = imgtool("copy", f"docker-archive:{tar}:bb:1", f"docker://{host}/fromarchive/bb:1")
    assert r.code == 0, r.err
    pushed = json.loads(skopeo_raw(f"docker://{host}/fromarchive/bb:1"))
    assert pushed["config"]["digest"] == want_id
    assert [d["digest"] for d in pushed["layers"]] == want_diffs  # uncompressed, as saved
    ociarc = tmp_path / "multi.tar"
    r = imgtool("copy", "--all", f"docker://{host}/multi/busybox:latest", f"oci-archive:{ociarc}:m")
    assert r.code == 0, r.err
    out = tmp_path / "from-oci-archive"
    skopeo("copy", "--quiet", "--all", f"oci-archive:{ociarc}:m", f"oci:{out}:m")
    raw = skopeo_raw(f"docker://{host}/multi/busybox:latest")
    assert layout_top(out, "m")["digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_copy_with_credentials_and_a_ca(
    tls_registry: Registry, store: Store, tmp_path: Path
) -> None:
    src = f"docker://{tls_registry.host}/private/busybox:latest"
    ca = str(tls_registry.ca_dir)
    r = imgtool("copy", "--cert-dir", ca, src, f"oci:{tmp_path / 'no'}")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1
    assert "log in" in r.err or "unauthorized" in r.err
    r = imgtool(
        "copy",
        "--cert-dir",
        ca,
        "--src-creds",
        "alice:wonderland",
        src,
        f"oci:{tmp_path / 'yes'}:x",
    )
    assert r.code == 0, r.err
    dest = f"docker://{tls_registry.host}/private/copied:1"
    r = imgtool(
        "copy",
        "--cert-dir",
        ca,
        "--dest-creds",
        "alice:wonderland",
        f"oci:{tmp_path / 'yes'}:x",
        dest,
    )
    assert r.code == 0, r.err


def test_hostile_archive_is_one_line_and_changes_nothing(
    images: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    assert imgtool("copy", f"oci:{images['busybox']}:latest", "busybox").code == 0
    members = docker_members()
    members[0] = (members[0][0], "symlink", str(tmp_path / "target"))
    path = write_tar(tmp_path / "evil.tar", members)
    before = snapshot(store.root)
    r = imgtool("load", "-i", str(path))
    assert r.code == 1
    assert r.err.count("\n") == 1 and "links are not followed" in r.err
    assert snapshot(store.root) == before
    assert not (tmp_path / "target").exists()


def test_layers_reads_every_archive_kind(images: dict[str, Path], tmp_path: Path) -> None:
    """The size analysis reads archives through the same reader (sources.py)."""
    layout = images["busybox"]
    docker, ociarc = tmp_path / "d.tar", tmp_path / "o.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:latest", f"docker-archive:{docker}:busybox:latest")
    skopeo("copy", "--quiet", f"oci:{layout}:latest", f"oci-archive:{ociarc}:latest")
    sizes = []
    for src in (f"oci:{layout}", f"docker-archive:{docker}", f"oci-archive:{ociarc}:latest"):
        r = imgtool("layers", "--json", src)
        assert r.code == 0, r.err
        sizes.append(json.loads(r.out)["uncompressed_size"])
    assert sizes[0] == sizes[1] == sizes[2]


def test_copy_refuses_what_it_cannot_honour(images: dict[str, Path], tmp_path: Path) -> None:
    layout = f"oci:{images['busybox']}:latest"
    r = imgtool("copy", "--platform", "linux/arm64", layout, "store:x")
    assert r.code == 1 and "is for linux/amd64, not linux/arm64" in r.err
    r = imgtool("copy", "--src-creds", "a:b", layout, "store:x")
    assert r.code == 2 and "--src-creds is for a docker:// registry" in r.err
    r = imgtool("copy", "--all", "--platform", "linux/amd64", layout, "store:x")
    assert r.code == 2
    r = imgtool("copy", layout, f"docker-archive:{tmp_path / 'x.tar'}:name@sha256:{'a' * 64}")
    assert r.code == 1 and "a docker-archive names by tag" in r.err
    assert not list(tmp_path.glob("*.tar"))
    r = imgtool("copy", "dir:/tmp/x", "store:x")
    assert r.code == 1 and "transport dir: is not supported" in r.err
