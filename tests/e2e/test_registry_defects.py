"""Issue 13's registry defects, each against the real registry (Debian's docker-registry), with
the fault proxy in front where the registry itself cannot misbehave on demand."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from imgtool.store import Store
from tests.conftest import REPO, TokenSetup, imgtool, write_docker_config
from tests.support.proxy import FaultProxy, Seen
from tests.support.registry import Registry

pytestmark = pytest.mark.registry

MiB = 1 << 20


@dataclass
class Served:
    """A body the proxy answers with instead of asking the registry."""

    body: bytes
    media_type: str = "application/vnd.oci.image.manifest.v1+json"
    head_says_size: bool = True  # HEAD answers with Content-Length and Docker-Content-Digest
    length_header: bool = True  # GET sends Content-Length (else the body ends at close)


@dataclass
class Front(FaultProxy):
    """The fault proxy, plus: a status for HEAD of manifests (a registry without HEAD), bodies
    served for some paths (how many of their bytes went out before the client hung up), and
    every TCP connection accepted (TLS attempts included, which never become requests)."""

    head_manifest_status: int | None = None
    blob_faults: int = 0  # the next N blob GETs get a 503 (with a body, as registries send)
    served: dict[str, Served] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    accepted: list[tuple[str, int]] = field(default_factory=list)

    def start(self) -> Front:
        super().start()

        def verify_request(request: Any, client_address: tuple[str, int]) -> bool:
            self.accepted.append(client_address)
            return True

        self.httpd.verify_request = verify_request  # type: ignore[method-assign]
        return self

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        if self.head_manifest_status and h.command == "HEAD" and "/manifests/" in path:
            self.seen.append(Seen(h.command, h.path, dict(h.headers)))
            headers = [("Content-Length", "0")]
            return self._reply(h, self.head_manifest_status, headers, b"", head=True)
        if path in self.served:
            self.seen.append(Seen(h.command, h.path, dict(h.headers)))
            return self._serve(h, path, self.served[path])
        if self.blob_faults and h.command == "GET" and "/blobs/sha256:" in path:
            self.blob_faults -= 1
            self.seen.append(Seen(h.command, h.path, dict(h.headers)))
            body = b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}'
            headers = [("Retry-After", "0"), ("Content-Type", "application/json")]
            return self._reply(h, 503, headers, body)
        return super()._handle(h)

    def serve(self, repository: str, tag: str, served: Served) -> str:
        """Answer for the manifest `repository:tag`, by tag and by digest; returns the digest."""
        digest = "sha256:" + hashlib.sha256(served.body).hexdigest()
        for ref in (tag, digest):
            self.served[f"/v2/{repository}/manifests/{ref}"] = served
        return digest

    def _serve(self, h: BaseHTTPRequestHandler, path: str, s: Served) -> None:
        digest = "sha256:" + hashlib.sha256(s.body).hexdigest()
        h.send_response(200)
        h.send_header("Content-Type", s.media_type)
        if h.command == "HEAD":
            if s.head_says_size:
                h.send_header("Content-Length", str(len(s.body)))
                h.send_header("Docker-Content-Digest", digest)
            else:
                h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if s.length_header:
            h.send_header("Content-Length", str(len(s.body)))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        self.sent[path] = 0
        try:
            for i in range(0, len(s.body), MiB):
                h.wfile.write(s.body[i : i + MiB])
                self.sent[path] += len(s.body[i : i + MiB])
        except OSError:
            h.close_connection = True  # the client hung up: what it refused was not sent


@pytest.fixture
def front(plain_registry: Registry) -> Iterator[Front]:
    p = Front(plain_registry.host).start()
    yield p
    p.stop()


def _blob_gets(proxy: FaultProxy) -> list[str]:
    return [s.path for s in proxy.seen if s.method == "GET" and "/blobs/" in s.path]


# --- 1. one resolver for short names, in every command ----------------------------------------


def _alias(home: Path, name: str, target: str) -> None:
    (home / "registries.conf").write_text(f'[aliases]\n"{name}" = "{target}"\n')


def test_short_name_alias_resolves_alike_in_every_command(
    plain_registry: Registry, isolated_env: Path, store: Store, tmp_path: Path
) -> None:
    full = f"{plain_registry.host}/library/busybox"
    _alias(isolated_env, "busybox", full)
    r = imgtool("pull", "busybox")
    assert r.code == 0, r.err
    assert f"Pulled {full}:latest" in r.out
    r = imgtool("inspect", "busybox")
    assert r.code == 0, r.err
    assert json.loads(r.out)["Name"] == f"{full}:latest"
    assert imgtool("inspect", "--raw", "busybox").code == 0
    assert imgtool("unpack", "busybox", str(tmp_path / "rootfs")).code == 0
    assert (tmp_path / "rootfs" / "bin" / "busybox").is_file()
    # tag: both names go through the alias table (an aliased target lands on its registry)
    (isolated_env / "registries.conf").write_text(
        f'[aliases]\n"busybox" = "{full}"\n"mine" = "{plain_registry.host}/mine/bb"\n'
    )
    r = imgtool("tag", "busybox", "mine:1")
    assert r.code == 0, r.err
    assert r.out.strip() == f"{plain_registry.host}/mine/bb:1"
    r = imgtool("rmi", "busybox")
    assert r.code == 0, r.err
    assert f"Untagged: {full}:latest" in r.out
    assert {d.ref_name for d in store.entries()} == {f"{plain_registry.host}/mine/bb:1"}
    r = imgtool("inspect", "busybox")
    assert r.code == 1 and f"image {full}:latest is not in the store" in r.err


@pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, mounts)")
def test_run_follows_the_alias_pull_followed(
    plain_registry: Registry, isolated_env: Path, store: Store
) -> None:
    _alias(isolated_env, "busybox", f"{plain_registry.host}/library/busybox")
    assert imgtool("pull", "-q", "busybox").code == 0
    r = imgtool("run", "--rm", "--network", "none", "busybox", "echo", "aliased")
    assert "not in the store" not in r.err
    assert r.code == 0 and r.out.strip() == "aliased", r.err


# --- 2. the operating system's trust store --------------------------------------------------


def _trust_only(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The CA reaches imgtool through OpenSSL's variables only: no certs.d, no requests knob."""
    for var in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_system_trust_ssl_cert_file(
    tls_registry: Registry, isolated_env: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_registry.ca_dir is not None
    write_docker_config(isolated_env, tls_registry.host, "alice", "wonderland")
    ref = f"{tls_registry.host}/private/busybox"
    _trust_only(monkeypatch)
    r = imgtool("pull", ref)
    assert r.code == 1 and "certificate verify failed" in r.err  # not trusted yet
    _trust_only(monkeypatch, SSL_CERT_FILE=str(tls_registry.ca_dir / "ca.crt"))
    r = imgtool("pull", ref)
    assert r.code == 0, r.err


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl names the hashed CA file")
def test_system_trust_ssl_cert_dir(
    tls_registry: Registry,
    isolated_env: Path,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert tls_registry.ca_dir is not None
    ca = tls_registry.ca_dir / "ca.crt"
    hashed = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(ca)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cadir = tmp_path / "cas"
    cadir.mkdir()
    (cadir / f"{hashed}.0").write_bytes(ca.read_bytes())  # what update-ca-certificates makes
    write_docker_config(isolated_env, tls_registry.host, "alice", "wonderland")
    _trust_only(monkeypatch, SSL_CERT_FILE=str(tmp_path / "none.pem"), SSL_CERT_DIR=str(cadir))
    r = imgtool("pull", f"{tls_registry.host}/private/busybox")
    assert r.code == 0, r.err


def test_plain_registry_one_connection_and_no_tls(
    front: Front, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-HTTP registry costs no TLS context (no CA bundle read) and no TLS attempt, and
    the whole pull goes over one persistent connection."""
    from imgtool.puller import PullOptions, pull

    contexts: list[ssl.SSLContext] = []
    make = ssl.SSLContext.__new__

    def counting(cls: type, *args: Any, **kw: Any) -> ssl.SSLContext:
        ctx = make(cls, *args, **kw)
        contexts.append(ctx)
        return ctx

    monkeypatch.setattr(ssl.SSLContext, "__new__", staticmethod(counting))
    result = pull(f"{front.host}/library/busybox", store, PullOptions(max_concurrent=1))
    assert result.fetched_bytes > 0
    assert contexts == []
    assert len(front.accepted) == 1, front.accepted
    assert len(front.seen) >= 4  # ping, HEAD, manifest, config, layer: all on that connection


# --- 3. --platform is checked before any layer ---------------------------------------------


def test_platform_mismatch_refused_before_any_layer(front: Front, store: Store) -> None:
    r = imgtool("pull", "--platform", "linux/arm64", f"{front.host}/library/busybox")
    assert r.code == 1
    last = r.err.splitlines()[-1]
    assert last.startswith("imgtool: ") and "linux/amd64" in last and "linux/arm64" in last
    assert len(_blob_gets(front)) == 1, _blob_gets(front)  # the config, no layer
    assert store.entries() == []


# --- 4. manifests and configs over 4 MiB are refused --------------------------------------


def _huge_manifest(size: int) -> bytes:
    head = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","x":"'
    return head + b"a" * (size - len(head) - 2) + b'"}'


def test_oversized_manifest_refused_by_its_size(front: Front, store: Store) -> None:
    body = _huge_manifest(60 * MiB)
    digest = front.serve("big/app", "latest", Served(body))
    r = imgtool("pull", f"{front.host}/big/app")
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert "4 MiB" in r.err and "manifest" in r.err
    assert sum(front.sent.values()) < 32 * MiB
    assert ("GET", f"/v2/big/app/manifests/{digest}") not in [
        (s.method, s.path) for s in front.seen
    ]
    assert not store.root.exists() or not any(
        p.stat().st_size > 4 * MiB for p in (store.root / "blobs" / "sha256").iterdir()
    )


def test_oversized_manifest_without_length_read_only_to_the_limit(
    front: Front, store: Store
) -> None:
    body = _huge_manifest(60 * MiB)
    digest = front.serve("big/app", "latest", Served(body, length_header=False))
    r = imgtool("pull", f"{front.host}/big/app@{digest}")
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert "4 MiB" in r.err
    # the client stopped reading past the limit and hung up: most of the body never left
    assert front.sent[f"/v2/big/app/manifests/{digest}"] < 32 * MiB
    assert not store.root.exists() or not (store.root / "blobs/sha256" / digest[7:]).exists()


def test_oversized_config_refused_before_download(front: Front, store: Store) -> None:
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "ab" * 32,
                "size": 5 * MiB,
            },
            "layers": [],
        }
    ).encode()
    front.serve("big/config", "latest", Served(manifest))
    r = imgtool("pull", f"{front.host}/big/config")
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert "config" in r.err and "4 MiB" in r.err
    assert _blob_gets(front) == []


# --- 5. inspect --raw prints the stored bytes exactly --------------------------------------


def test_inspect_raw_bytes_hash_to_the_digest(plain_registry: Registry, store: Store) -> None:
    ref = f"{plain_registry.host}/library/busybox"
    assert imgtool("pull", ref).code == 0
    _, desc = store.find(ref)
    config = store.image(ref).manifest.config.digest
    for flag, digest in (("--raw", desc.digest), ("--config", config)):
        out = subprocess.run(
            [sys.executable, "-m", "imgtool", "inspect", flag, ref],
            capture_output=True,
            cwd=REPO,
            check=True,
        ).stdout
        assert "sha256:" + hashlib.sha256(out).hexdigest() == digest, flag


# --- 6. --insecure says so once, without urllib3's warnings --------------------------------


def test_insecure_gives_one_notice(tls_registry: Registry, isolated_env: Path) -> None:
    write_docker_config(isolated_env, tls_registry.host, "alice", "wonderland")
    r = imgtool("pull", "--insecure", f"{tls_registry.host}/private/busybox")
    assert r.code == 0, r.err
    assert "InsecureRequestWarning" not in r.err and "warnings.warn" not in r.err
    notices = [line for line in r.err.splitlines() if "not verified" in line]
    assert len(notices) == 1, r.err
    assert tls_registry.host in notices[0]


# --- 7. a registry without HEAD on manifests ------------------------------------------------


def test_head_405_falls_back_to_get(front: Front, store: Store) -> None:
    front.head_manifest_status = 405
    r = imgtool("pull", f"{front.host}/library/busybox")
    assert r.code == 0, r.err
    methods = [(s.method, s.path) for s in front.seen if "/manifests/" in s.path]
    assert ("HEAD", "/v2/library/busybox/manifests/latest") in methods
    assert ("GET", "/v2/library/busybox/manifests/latest") in methods


# --- 8. the credentials login wrote are the ones used ---------------------------------------


def test_login_beats_a_stale_podman_entry(tls_registry: Registry, isolated_env: Path) -> None:
    import base64

    host = tls_registry.host
    assert tls_registry.ca_dir is not None
    certs = isolated_env / ".config" / "containers" / "certs.d" / host
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_bytes((tls_registry.ca_dir / "ca.crt").read_bytes())
    podman = isolated_env / ".config" / "containers" / "auth.json"
    stale = base64.b64encode(b"alice:old-password").decode()
    podman.write_text(json.dumps({"auths": {host: {"auth": stale}}}))
    assert imgtool("pull", f"{host}/private/busybox").code == 1  # the stale entry is used
    r = imgtool("login", host, "-u", "alice", "--password-stdin", input="wonderland\n")
    assert r.code == 0, r.err
    assert "Login Succeeded" in r.out
    r = imgtool("pull", f"{host}/private/busybox")
    assert r.code == 0, r.err
    # the login replaced the entry that lookup reads first, and said where it went
    fresh = base64.b64encode(b"alice:wonderland").decode()
    assert json.loads(podman.read_text())["auths"][host]["auth"] == fresh


# --- 9. a refused push says what the token lacks ------------------------------------------


def test_refused_push_names_the_missing_push_access(
    token_registry: TokenSetup, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, tokens = token_registry.registry, token_registry.tokens
    grant = tokens._grant

    def pull_only_for_bob(user: str | None, scope: str) -> dict | None:
        access = grant(user, scope)
        if user == "bob" and access is not None:
            access["actions"] = [a for a in access["actions"] if a == "pull"]
        return access

    monkeypatch.setattr(tokens, "_grant", pull_only_for_bob)
    monkeypatch.setitem(tokens.users, "bob", "builder")
    write_docker_config(isolated_env, reg.host, "bob", "builder")
    assert imgtool("pull", f"{reg.host}/private/busybox").code == 0
    r = imgtool("push", f"{reg.host}/private/busybox", f"{reg.host}/bob/copy:1")
    assert r.code == 1 and r.err.count("\n") == 1, r.err
    assert "was refused" not in r.err
    assert "push access" in r.err and "repository bob/copy" in r.err, r.err
    assert "insufficient_scope" in r.err and "'bob'" in r.err


def test_retried_blob_keeps_the_connection(front: Front, store: Store) -> None:
    """A 503 on a blob download is retried on the same connection: its short body is read
    instead of the connection being dropped with it."""
    from imgtool.puller import PullOptions, pull

    front.blob_faults = 1
    pull(f"{front.host}/library/busybox", store, PullOptions(max_concurrent=1))
    assert len(_blob_gets(front)) == 3  # the config twice, then the layer
    assert len(front.accepted) == 1, front.accepted
