"""A re-pull of an image already in the store: one manifest HEAD over http.client, without
loading requests (registry/quickhead.py); anything the quick HEAD cannot answer (credentials
needed, TLS it cannot verify, a moved tag's new manifest) goes to the full client."""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgtool.registry import quickhead
from imgtool.registry.options import TransportOptions
from imgtool.store import INDEX_DIGEST_ANNOTATION, Store
from tests.conftest import seed, write_docker_config
from tests.support import pki
from tests.support.registry import Registry

pytestmark = pytest.mark.registry

_PULL = (
    "import sys; from imgtool.puller import pull; from imgtool.store import Store; "
    "r = pull(sys.argv[1], Store(sys.argv[2])); "
    "print(r.digest, 'imgtool.registry.client' in sys.modules)"
)
DIGEST = "sha256:" + "ab" * 32


def _pull(ref: str, store: Store) -> tuple[str, bool]:
    """(digest, whether the full registry client was loaded) of a pull in a fresh
    interpreter."""
    p = subprocess.run(
        [sys.executable, "-c", _PULL, ref, str(store.root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    digest, loaded = p.stdout.split()
    return digest, loaded == "True"


def test_repull_is_one_quick_head_without_requests(plain_registry: Registry, store: Store) -> None:
    ref = f"{plain_registry.host}/library/busybox:latest"
    digest, loaded = _pull(ref, store)
    assert loaded  # a fresh pull: the client, over one connection
    assert _pull(ref, store) == (digest, False)


def test_moved_tag_is_pulled_anew(
    plain_registry: Registry, images: dict[str, Path], store: Store
) -> None:
    ref = f"{plain_registry.host}/quickhead/moved:1"
    seed(plain_registry, images["busybox"], "quickhead/moved:1")
    _pull(ref, store)
    assert INDEX_DIGEST_ANNOTATION not in store.find(ref)[1].annotations
    seed(plain_registry, images["multiarch"], "quickhead/moved:1")  # now an index
    second, loaded = _pull(ref, store)
    assert loaded  # the quick HEAD named an index the store lacks: the client fetched it
    assert INDEX_DIGEST_ANNOTATION in store.find(ref)[1].annotations
    assert _pull(ref, store) == (second, False)


def test_credentials_needed_falls_back_to_the_client(
    tls_registry: Registry, isolated_env: Path, store: Store
) -> None:
    d = isolated_env / ".config" / "containers" / "certs.d" / tls_registry.host
    d.mkdir(parents=True)
    assert tls_registry.ca_dir is not None
    (d / "ca.crt").write_bytes((tls_registry.ca_dir / "ca.crt").read_bytes())
    write_docker_config(isolated_env, tls_registry.host, "alice", "wonderland")
    ref = f"{tls_registry.host}/private/busybox:latest"
    digest, _ = _pull(ref, store)
    assert _pull(ref, store) == (digest, True)  # the quick HEAD met a 401: the client answered


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Docker-Content-Digest", DIGEST)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS server on 127.0.0.1 answering every HEAD as a registry would; its CA's file."""
    ca_key, ca_cert = pki.make_ca("quickhead test CA")
    key, cert = pki.make_server_cert(ca_key, ca_cert, "127.0.0.1")
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "server.crt").write_bytes(cert)
    (tmp_path / "ca.crt").write_bytes(pki.cert_pem(ca_cert))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", tmp_path / "ca.crt"
    finally:
        server.shutdown()
        server.server_close()


def test_https_trusts_what_the_client_trusts(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    host, ca = tls_server
    from imgtool.registry import options

    monkeypatch.setattr(options, "is_local", lambda h: False)  # a remote host: HTTPS only
    opts = TransportOptions()
    assert quickhead.head_manifest(host, "a/b", "1", opts) is None  # CA unknown: the client's
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the system trust store, as skopeo takes it
    got = quickhead.head_manifest(host, "a/b", "1", opts)
    assert got == quickhead.HeadAnswer(DIGEST, "application/vnd.oci.image.manifest.v1+json", 1234)
    monkeypatch.delenv("SSL_CERT_FILE")
    certs_d = isolated_env / ".config" / "containers" / "certs.d" / host
    certs_d.mkdir(parents=True)
    (certs_d / "ca.crt").write_bytes(ca.read_bytes())
    assert quickhead.head_manifest(host, "a/b", "1", opts) == got  # certs.d, as the client
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert quickhead.head_manifest(host, "a/b", "1", opts) is None  # a proxy: the client's
    assert os.environ.get("HTTPS_PROXY")
