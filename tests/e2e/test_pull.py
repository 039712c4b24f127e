"""Pulling from the real registry, as a user types it, checked by the peers that read the store."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from imgtool import oci
from imgtool.store import Store
from tests.conftest import imgtool
from tests.support.registry import Registry
from tests.support.tools import require_tool

pytestmark = pytest.mark.registry


def verify_store(root: Path) -> None:
    """Re-derive every digest: each blob's name is the sha256 of its bytes, and every image
    named in index.json has all its blobs with the sizes its manifest says."""
    for p in (root / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, p
    store = Store(root)
    for d in store.entries():
        top = store.manifest(d)
        manifests = (
            [top] if isinstance(top, oci.Manifest) else [store.manifest(c) for c in top.manifests]
        )
        for m in manifests:
            assert isinstance(m, oci.Manifest)
            for b in m.blobs():
                assert store.blob_size(b.digest) == b.size
            cfg = store.config(m)
            assert len(cfg.diff_ids) == len(m.layers)


def test_pull_images_inspect(plain_registry: Registry, store: Store) -> None:
    ref = f"{plain_registry.host}/library/busybox"
    r = imgtool("pull", ref)
    assert r.code == 0, r.err
    assert f"Pulled {ref}:latest" in r.out
    assert "Digest: sha256:" in r.out
    verify_store(store.root)
    r = imgtool("images")
    assert r.code == 0 and f"{ref}:latest" in r.out
    r = imgtool("inspect", ref)
    info = json.loads(r.out)
    assert info["Name"] == f"{ref}:latest"
    assert info["Platform"] == "linux/amd64"
    assert info["Config"]["config"]["Cmd"] == ["sh"]
    assert info["Manifest"]["layers"][0]["mediaType"].endswith("tar+gzip")


def test_second_pull_fetches_nothing_and_heads_first(
    plain_registry: Registry, store: Store
) -> None:
    from tests.support.proxy import FaultProxy

    proxy = FaultProxy(plain_registry.host).start()
    try:
        ref = f"{proxy.host}/library/busybox:latest"
        assert imgtool("pull", ref).code == 0
        first = [(s.method, s.path) for s in proxy.seen]
        proxy.seen.clear()
        r = imgtool("pull", ref)
        assert r.code == 0, r.err
        again = [(s.method, s.path) for s in proxy.seen]
    finally:
        proxy.stop()
    head = ("HEAD", "/v2/library/busybox/manifests/latest")
    assert head in first, first
    manifest_gets = [i for i, (m, p) in enumerate(first) if m == "GET" and "/manifests/" in p]
    assert manifest_gets, first  # the first pull does fetch the manifest
    assert first.index(head) < manifest_gets[0], first  # ...after asking for its digest
    # the second time: the ping and one HEAD, no GET of anything
    assert [m for m, _ in again if m == "GET" and _ != "/v2/"] == []
    assert ("HEAD", "/v2/library/busybox/manifests/latest") in again
    assert "0B fetched" in r.out


def test_pull_by_digest_and_tag_plus_digest(plain_registry: Registry, store: Store) -> None:
    host = plain_registry.host
    assert imgtool("pull", f"{host}/team/app:1.0").code == 0
    digest = store.find(f"{host}/team/app:1.0")[1].digest
    r = imgtool("pull", f"{host}/team/app@{digest}")
    assert r.code == 0, r.err
    r = imgtool("pull", f"{host}/team/app:whatever@{digest}")
    assert r.code == 0, r.err  # the digest wins, as docker has it
    names = {d.ref_name for d in store.entries()}
    assert f"{host}/team/app@{digest}" in names


def test_platform_from_index(plain_registry: Registry, store: Store) -> None:
    ref = f"{plain_registry.host}/multi/busybox"
    r = imgtool("pull", "--platform", "linux/arm64", ref)
    assert r.code == 0, r.err
    assert "linux/arm64" in r.out
    img = store.image(ref)
    assert str(img.config.platform) == "linux/arm64/v8"
    r = imgtool("pull", "--platform", "linux/arm/v6", ref)
    assert r.code == 1
    assert "no image for platform linux/arm/v6" in r.err
    assert "linux/amd64" in r.err
    r = imgtool("pull", "--platform", "linux/arm", ref)  # arm means arm/v7
    assert r.code == 0, r.err
    assert str(store.image(ref).config.platform) == "linux/arm/v7"
    r = imgtool("pull", ref)  # the host's platform
    assert r.code == 0, r.err
    assert str(store.image(ref).config.platform) == str(oci.Platform.host())


def test_all_platforms_then_push_the_index(plain_registry: Registry, store: Store) -> None:
    host = plain_registry.host
    r = imgtool("pull", "--all-platforms", f"{host}/multi/busybox")
    assert r.code == 0, r.err
    verify_store(store.root)
    _, desc = store.find(f"{host}/multi/busybox")
    assert desc.media_type.endswith("index.v1+json")
    r = imgtool("push", f"{host}/multi/busybox", f"{host}/copy/multi:1")
    assert r.code == 0, r.err
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/copy/multi:1"],
        capture_output=True,
        check=True,
    ).stdout
    assert hashlib.sha256(raw).hexdigest() == desc.digest.split(":")[1]
    assert len(json.loads(raw)["manifests"]) == 3


@pytest.mark.peer
def test_store_is_read_by_skopeo_umoci_and_oci_image_tool(
    plain_registry: Registry, store: Store, tmp_path: Path
) -> None:
    require_tool("oci-image-tool", "oci-image-tool")
    require_tool("umoci", "umoci")
    ref = f"{plain_registry.host}/library/busybox:latest"
    assert imgtool("pull", ref).code == 0
    r = subprocess.run(
        ["oci-image-tool", "validate", "--type", "image", "--ref", f"name={ref}", str(store.root)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    out = tmp_path / "copy"
    r = subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{store.root}:{ref}", f"oci:{out}:x"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / "bundle"
    r = subprocess.run(
        ["umoci", "unpack", "--image", f"{store.root}:{ref}", str(bundle)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()


@pytest.mark.peer
def test_what_imgtool_pushes_skopeo_reads(
    plain_registry: Registry, store: Store, tmp_path: Path
) -> None:
    host = plain_registry.host
    assert imgtool("pull", f"{host}/library/busybox").code == 0
    r = imgtool("push", f"{host}/library/busybox", f"{host}/pushed/busybox:v1")
    assert r.code == 0, r.err
    assert "0 uploaded" in r.out or "mounted" in r.out
    out = tmp_path / "fromskopeo"
    r2 = subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{host}/pushed/busybox:v1",
            f"oci:{out}:v1",
        ],
        capture_output=True,
        text=True,
    )
    assert r2.returncode == 0, r2.stderr
    idx = json.loads((out / "index.json").read_text())
    assert idx["manifests"][0]["digest"] == store.find(f"{host}/library/busybox")[1].digest


def test_tag_rmi_gc(plain_registry: Registry, store: Store) -> None:
    host = plain_registry.host
    assert imgtool("pull", f"{host}/library/busybox").code == 0
    r = imgtool("tag", f"{host}/library/busybox", "localhost:5000/mirror/busybox:1")
    assert r.code == 0 and r.out.strip() == "localhost:5000/mirror/busybox:1"
    assert imgtool("rmi", f"{host}/library/busybox").code == 0
    r = imgtool("gc")
    assert "Removed 0 blobs" in r.out
    assert imgtool("rmi", "localhost:5000/mirror/busybox:1").code == 0
    blobs = len(list((store.root / "blobs/sha256").iterdir()))
    r = imgtool("gc")
    assert f"Removed {blobs} blobs" in r.out
    r = imgtool("rmi", "nothing:here")
    assert r.code == 1 and "docker.io/library/nothing:here is not in the store" in r.err


def test_pull_leaves_the_layers_unpacked_for_run(plain_registry: Registry, store: Store) -> None:
    """Ready to run: `pull` unpacks every layer (as its bytes arrive) into its ChainID
    directory, so the first `run` unpacks nothing."""
    from imgtool.layer.unpacked import LayerStore, chain_ids

    ref = f"{plain_registry.host}/library/busybox"
    r = imgtool("pull", ref)
    assert r.code == 0, r.err
    image = store.image(f"{ref}:latest")
    layers = LayerStore(store)
    keys = chain_ids(image.config.diff_ids)
    assert all(layers.has(k) for k in keys), keys
    assert (layers.diff_dir(keys[0]) / "bin" / "busybox").is_file()
    assert (layers.root / "l" / layers.short_name(keys[-1])).resolve() == layers.diff_dir(keys[-1])
    stamp = layers.path(keys[-1]).stat().st_mtime_ns
    assert layers.unpack(image) == keys  # what `run` calls: it finds everything there
    assert layers.path(keys[-1]).stat().st_mtime_ns == stamp
    assert not list((layers.root / "tmp").iterdir())


def test_repull_of_a_present_image_is_one_head(plain_registry: Registry, store: Store) -> None:
    """A plain-HTTP registry that answers anonymously: the pull of an image already in the
    store is one manifest HEAD and nothing else (no /v2/ ping), as skopeo inspect's."""
    from tests.support.proxy import FaultProxy

    proxy = FaultProxy(plain_registry.host).start()
    try:
        ref = f"{proxy.host}/library/busybox:latest"
        assert imgtool("pull", ref).code == 0
        proxy.seen.clear()
        r = imgtool("pull", ref)
        assert r.code == 0, r.err
        again = [(s.method, s.path) for s in proxy.seen]
        r = imgtool("pull", f"{proxy.host}/library/busybox:nope")
    finally:
        proxy.stop()
    assert again == [("HEAD", "/v2/library/busybox/manifests/latest")]
    assert r.code == 1 and "manifest for" in r.err and "not found" in r.err, r.err
