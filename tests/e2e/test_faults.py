"""Bad days: corrupt bytes, rate limits, dropped connections, a registry that is down, a killed
pull, two pulls at once, redirects to another host. Each ends in one clear line and a store
exactly as it was, or in a correct store."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtool.store import Store
from tests.conftest import imgtool, spawn
from tests.e2e.test_pull import verify_store
from tests.support.proxy import FaultProxy
from tests.support.registry import Registry, free_port

pytestmark = pytest.mark.registry


@pytest.fixture
def proxy(plain_registry: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(plain_registry.host).start()
    yield p
    p.stop()


def _snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "locks" not in p.parts
    }


def test_corrupted_blob_is_refused_and_nothing_stored(proxy: FaultProxy, store: Store) -> None:
    store.init()
    before = _snapshot(store.root)
    proxy.corrupt_blobs = True
    r = imgtool("pull", f"{proxy.host}/library/busybox")
    assert r.code == 1
    assert "digest mismatch for blob sha256:" in r.err and r.err.count("\n") == 1
    after = _snapshot(store.root)
    # the manifest may have been stored (it was verified); no bad blob, no name, no partial
    assert {k for k in after if k.startswith("blobs")} - set(before) <= {
        k for k in after if k.startswith("blobs") and _is_manifest(after[k])
    }
    assert json.loads(after["index.json"])["manifests"] == []
    assert not any(k.startswith("ingest/") for k in after)
    verify_store(store.root)


def _is_manifest(data: bytes) -> bool:
    try:
        return "schemaVersion" in json.loads(data)
    except ValueError:
        return False


def test_rate_limited_then_served(proxy: FaultProxy, store: Store) -> None:
    proxy.status_faults = 2
    proxy.fault_headers = {"Retry-After": "0"}
    r = imgtool("pull", f"{proxy.host}/library/busybox")
    assert r.code == 0, r.err


def test_rate_limit_reported_with_the_registry_headers(proxy: FaultProxy, store: Store) -> None:
    proxy.status_faults = 100
    proxy.fault_headers = {
        "Retry-After": "0",
        "RateLimit-Limit": "100;w=21600",
        "RateLimit-Remaining": "0;w=21600",
    }
    r = imgtool("pull", f"{proxy.host}/library/busybox")
    assert r.code == 1
    assert "rate limiting" in r.err and "ratelimit-limit=100;w=21600" in r.err
    assert "ratelimit-remaining=0;w=21600" in r.err


def test_registry_down(store: Store) -> None:
    t0 = time.monotonic()
    r = imgtool("pull", f"127.0.0.1:{free_port()}/library/busybox")
    assert r.code == 1
    assert "cannot reach registry 127.0.0.1:" in r.err and "Connection refused" in r.err
    assert time.monotonic() - t0 < 10
    assert not store.root.exists() or store.entries() == []


def test_dropped_connection_resumes_with_range(proxy: FaultProxy, store: Store) -> None:
    proxy.drop_blobs_after = 300_000
    proxy.drops = 1
    r = imgtool("pull", f"{proxy.host}/library/busybox")
    assert r.code == 0, r.err
    starts = [int(s.headers["Range"][6:-1]) for s in proxy.seen if "Range" in s.headers]
    assert starts and 100_000 <= starts[0] <= 300_000  # what came before the drop is kept
    verify_store(store.root)


def test_killed_pull_leaves_no_visible_blob_and_rerun_resumes(
    proxy: FaultProxy, store: Store
) -> None:
    proxy.blob_rate = 200_000  # bytes/s: the 1 MB layer takes about 5 s
    proc = spawn("pull", f"{proxy.host}/library/busybox")
    ingest = store.root / "ingest"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = list(ingest.glob("*.partial")) if ingest.exists() else []
        if any(p.stat().st_size > 100_000 for p in parts):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((store.root / "index.json").read_text())["manifests"] == []
    verify_store(store.root)  # every visible blob is whole and correct
    partial = max(ingest.glob("*.partial"), key=lambda p: p.stat().st_size)
    left = partial.stat().st_size
    proxy.blob_rate = None
    proxy.seen.clear()
    r = imgtool("pull", f"{proxy.host}/library/busybox")
    assert r.code == 0, r.err
    assert f"bytes={left}-" in [s.headers.get("Range") for s in proxy.seen]
    verify_store(store.root)
    assert list(ingest.glob("*.partial")) == []


def test_two_pulls_at_once(plain_registry: Registry, store: Store) -> None:
    host = plain_registry.host
    procs = [
        spawn("pull", f"{host}/{name}")
        for name in ("library/busybox", "team/app:1.0", "library/busybox")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    names = {d.ref_name for d in store.entries()}
    assert names == {f"{host}/library/busybox:latest", f"{host}/team/app:1.0"}
    verify_store(store.root)


def test_redirect_to_another_host_drops_authorization(proxy: FaultProxy, store: Store) -> None:
    proxy.basic_auth = ("alice", "wonderland")
    proxy.redirect_blobs = True
    cfg = Path(os.environ["HOME"]) / ".docker" / "config.json"
    cfg.parent.mkdir(parents=True)
    import base64

    cfg.write_text(
        json.dumps(
            {"auths": {proxy.host: {"auth": base64.b64encode(b"alice:wonderland").decode()}}}
        )
    )
    r = imgtool("pull", f"{proxy.host}/library/busybox")
    assert r.code == 0, r.err
    assert proxy.redirected, "blobs should have come from the second host"
    assert all("Authorization" not in s.headers for s in proxy.redirected)
    assert any("Authorization" in s.headers for s in proxy.seen)


def test_mirror_from_registries_conf_serves_docker_hub_names(
    plain_registry: Registry, isolated_env: Path, store: Store
) -> None:
    """`imgtool pull busybox` offline: docker.io is mirrored by the local registry."""
    conf = isolated_env / "registries.conf"
    # docker.io itself is "moved" to a dead local port: nothing here may leave the machine
    conf.write_text(
        f'[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:{free_port()}"\n'
        f'[[registry.mirror]]\nlocation = "127.0.0.1:{free_port()}"\n'  # a dead mirror first
        f'[[registry.mirror]]\nlocation = "{plain_registry.host}"\ninsecure = true\n'
        '[aliases]\n"app" = "docker.io/team/app"\n'
    )
    r = imgtool("pull", "busybox")
    assert r.code == 0, r.err
    assert "Pulled docker.io/library/busybox:latest" in r.out
    assert f"from {plain_registry.host}/library/busybox" in r.out
    r = imgtool("pull", "app:1.0")
    assert r.code == 0, r.err
    assert "Pulled docker.io/team/app:1.0" in r.out
    r = imgtool("pull", "busybox:nope")
    assert r.code == 1 and "docker.io/library/busybox:nope" in r.err


def test_malformed_inputs_one_line_each(store: Store, isolated_env: Path) -> None:
    for args, needle in [
        (["pull", "UPPER/Case:tag"], "must be lowercase"),
        (["pull", "--platform", "linux", "busybox"], "invalid platform"),
        (["pull", "a:b:c"], "invalid reference"),
        (["inspect", "never-pulled"], "is not in the store"),
    ]:
        r = imgtool(*args)
        assert r.code == 1, (args, r.err)
        assert needle in r.err and r.err.count("\n") == 1, (args, r.err)
    (isolated_env / "registries.conf").write_text("[[registry]\n")
    r = imgtool("pull", "busybox")
    assert r.code == 1 and "registries.conf" in r.err


class _BlobTamperingProxy(FaultProxy):
    """Changes the bodies of layer blobs (above 100 kB) as they pass: a byte flipped in the
    middle, or the tail cut off (with a Content-Length that agrees, so only the size and
    the digest can tell); or ignores Range, so that a dropped download starts over."""

    tamper: str = "flip"

    def _upstream(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.tamper == "no-range":
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        status, out, data = super()._upstream(method, path, headers, body)
        if self.tamper == "no-range":
            return status, out, data
        if method == "GET" and "/blobs/sha256:" in path and len(data) > 100_000:
            mid = len(data) // 2
            if self.tamper == "flip":
                data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
            else:
                data = data[:mid]
        return status, out, data


def _nothing_of_the_layer_left(store: Store, before: dict[str, bytes]) -> None:
    after = _snapshot(store.root)
    blobs = {k for k in after if k.startswith("blobs")} - set(before)
    assert all(_is_manifest(after[k]) or len(after[k]) < 100_000 for k in blobs), blobs
    assert json.loads(after["index.json"])["manifests"] == []
    assert not any(k.startswith("ingest/") for k in after)
    layers = store.root / "layers"
    assert not list((layers / "sha256").glob("*")) if (layers / "sha256").exists() else True
    assert not list((layers / "tmp").glob("*")) if (layers / "tmp").exists() else True
    verify_store(store.root)


@pytest.mark.parametrize("tamper", ["flip", "truncate"])
def test_bad_layer_mid_stream_leaves_no_blob_and_no_unpacked_layer(
    plain_registry: Registry, store: Store, tamper: str
) -> None:
    """The layer is unpacked while it downloads: a byte flipped half-way, or a blob cut in
    half, is refused as the blob it is (one line), and neither the blob, nor an unpacked
    directory, nor a temporary one is left."""
    store.init()
    before = _snapshot(store.root)
    proxy = _BlobTamperingProxy(plain_registry.host)
    proxy.tamper = tamper
    proxy.start()
    try:
        r = imgtool("pull", "-q", f"{proxy.host}/library/busybox")
    finally:
        proxy.stop()
    assert r.code == 1
    assert r.err.count("\n") == 1, r.err
    assert "blob sha256:" in r.err, r.err
    assert ("digest mismatch" if tamper == "flip" else "size") in r.err, r.err
    _nothing_of_the_layer_left(store, before)


def test_connection_that_keeps_dropping_leaves_no_unpacked_layer(
    plain_registry: Registry, store: Store
) -> None:
    """A layer whose download is cut half-way every time, from a server that ignores Range
    (each retry starts over under the reader that is unpacking it): one line; no blob, no
    unpacked or temporary directory."""
    proxy = _BlobTamperingProxy(plain_registry.host)
    proxy.tamper = "no-range"
    proxy.drop_blobs_after = 500_000
    proxy.drops = 100
    proxy.start()
    try:
        r = imgtool("pull", "-q", f"{proxy.host}/library/busybox")
    finally:
        proxy.stop()
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert "kept failing" in r.err, r.err
    layers = store.root / "layers"
    assert not (layers / "sha256").exists() or not list((layers / "sha256").iterdir())
    assert not (layers / "tmp").exists() or not list((layers / "tmp").iterdir())
    assert json.loads((store.root / "index.json").read_text())["manifests"] == []
    verify_store(store.root)
