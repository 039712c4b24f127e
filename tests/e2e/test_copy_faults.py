"""`imgtool copy` on a bad day, both directions: a registry that sends wrong bytes, cuts bodies
short or keeps failing. Each copy ends in one line naming what failed, and the destination is
exactly as it was (an OCI layout file for file, byte for byte, the store's empty lock and ingest
places aside; a registry without the tag)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.store import Store
from tests.conftest import imgtool
from tests.e2e import test_faults
from tests.support.proxy import FaultProxy
from tests.support.registry import Registry
from tests.unit.test_archive import snapshot

pytestmark = pytest.mark.registry

proxy = test_faults.proxy  # the fixture: a FaultProxy in front of the plain registry


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A destination that already holds an image, one without layers (so that every blob of
    the busybox being copied must come from the registry)."""
    store = Store(tmp_path / "dest").init()
    config = store.write_blob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}')
    raw = oci.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config, "size": 64},
            "layers": [],
        }
    )
    store.set_ref("one", oci.Descriptor(mt.OCI_MANIFEST, store.write_blob(raw), len(raw)))
    return store.root


def _contents(layout: Path) -> dict[str, str]:
    """The layout's files; the store's lock files and its empty ingest/ aside (a copy into a
    layout makes them, and they hold nothing)."""
    return {
        k: v
        for k, v in snapshot(layout).items()
        if k not in ("ingest", "locks") and not k.startswith("locks/")
    }


def _pull_into(proxy: FaultProxy, layout: Path) -> tuple[int, str]:
    before = _contents(layout)
    r = imgtool("copy", "-q", f"docker://{proxy.host}/library/busybox:latest", f"oci:{layout}:new")
    assert _contents(layout) == before  # not a file more, less or changed
    return r.code, r.err


def test_wrong_bytes_are_refused(proxy: FaultProxy, layout: Path) -> None:
    proxy.corrupt_blobs = True
    code, err = _pull_into(proxy, layout)
    assert code == 1
    assert "digest mismatch for blob sha256:" in err and err.count("\n") == 1


def test_a_body_that_keeps_being_cut_short_fails(proxy: FaultProxy, layout: Path) -> None:
    proxy.drop_blobs_after = 200_000
    proxy.drops = 100  # every try, resumed or not, is cut: the retries run out
    code, err = _pull_into(proxy, layout)
    assert code == 1
    assert "kept failing" in err and err.count("\n") == 1


def test_a_body_cut_once_is_resumed(proxy: FaultProxy, layout: Path) -> None:
    proxy.drop_blobs_after = 200_000
    proxy.drops = 1
    r = imgtool("copy", f"docker://{proxy.host}/library/busybox:latest", f"oci:{layout}:new")
    assert r.code == 0, r.err
    ranges = [s.headers["Range"] for s in proxy.seen if "Range" in s.headers]
    assert ranges and int(ranges[0][len("bytes=") : -1]) >= 100_000  # what came was kept


@pytest.mark.parametrize("status", [404, 500])
def test_an_error_status_is_one_line(proxy: FaultProxy, layout: Path, status: int) -> None:
    proxy.fault_status = status
    proxy.fault_headers = {"Retry-After": "0"}
    proxy.status_faults = 100
    code, err = _pull_into(proxy, layout)
    assert code == 1
    assert f"{status}" in err and err.count("\n") == 1


def test_push_that_keeps_failing_leaves_no_tag(
    proxy: FaultProxy, images: dict[str, Path], plain_registry: Registry
) -> None:
    proxy.fault_status = 500
    proxy.fault_headers = {"Retry-After": "0"}
    proxy.status_faults = 100
    dest = f"docker://{proxy.host}/copyfaults/pushed:1"
    r = imgtool("copy", "-q", f"oci:{images['busybox']}:latest", dest)
    assert r.code == 1
    assert "500" in r.err and r.err.count("\n") == 1
    url = f"http://{plain_registry.host}/v2/copyfaults/pushed/manifests/1"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10)
    assert info.value.code == 404


@pytest.mark.parametrize("how", ["longer", "host-link"])
def test_a_hostile_layout_blob_is_refused_before_a_byte_goes(
    plain_registry: Registry, images: dict[str, Path], tmp_path: Path, how: str
) -> None:
    """A layout's blob file longer than its descriptor (its tail would be read as the next
    request on the connection) or linked to a host file: one line, nothing pushed."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(images["busybox"], src)
    store = Store(src)
    manifest = oci.Manifest.from_json(store.read_blob(store.image("latest").descriptor.digest))
    layer = store.blob_path(manifest.layers[0].digest)
    if how == "longer":
        with open(layer, "ab") as f:
            f.write(b"DELETE /v2/x/manifests/y HTTP/1.1\r\nX-S: ")
    else:
        secret = tmp_path / "secret"
        secret.write_bytes(layer.read_bytes())  # the same size: only the link tells
        layer.unlink()
        layer.symlink_to(secret)
    r = imgtool(
        "copy", "-q", f"oci:{src}:latest", f"docker://{plain_registry.host}/hostile/{how}:1"
    )
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert ("size mismatch" if how == "longer" else "symlink") in r.err, r.err
    url = f"http://{plain_registry.host}/v2/hostile/{how}/blobs/{manifest.layers[0].digest}"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10)
    assert info.value.code == 404
