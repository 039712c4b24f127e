"""Debian's docker-registry (the CNCF distribution server) on 127.0.0.1, as the tests' peer.

Three flavours: plain HTTP; TLS with htpasswd Basic auth (a CA and certificate made here with
cryptography); token auth, trusting a key that `TokenServer` signs JWTs with.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import pki

REGISTRY_BIN = shutil.which("docker-registry") or shutil.which("registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bcrypt_hash(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # libxcrypt's crypt(3) makes $2b$ (bcrypt) hashes, as htpasswd -B does

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


@dataclass
class Registry:
    workdir: Path
    mode: str = "plain"  # plain | tls | token
    users: dict[str, str] = field(default_factory=dict)
    token_realm: str = ""
    token_cert: Path | None = None
    port: int = 0
    proc: subprocess.Popen | None = None
    ca_dir: Path | None = None  # holds ca.crt, for --cert-dir or certs.d

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.mode == 'tls' else 'http'}://{self.host}"

    def _config(self) -> str:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: imgtool-tests",
        ]
        if self.mode == "tls":
            ca_key, ca_cert = pki.make_ca("imgtool test CA")
            key, cert = pki.make_server_cert(ca_key, ca_cert, "127.0.0.1")
            (self.workdir / "server.key").write_bytes(key)
            (self.workdir / "server.crt").write_bytes(cert)
            self.ca_dir = self.workdir / "certs"
            self.ca_dir.mkdir(exist_ok=True)
            (self.ca_dir / "ca.crt").write_bytes(pki.cert_pem(ca_cert))
            lines += [
                "  tls:",
                f"    certificate: {self.workdir / 'server.crt'}",
                f"    key: {self.workdir / 'server.key'}",
            ]
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: imgtool-tests", f"    path: {htpasswd}"]
        elif self.mode == "token":
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token_realm}",
                "    service: imgtool-test-registry",
                "    issuer: imgtool-test-issuer",
                f"    rootcertbundle: {self.token_cert}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> Registry:
        assert REGISTRY_BIN, "docker-registry is not installed"
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.port = free_port()
            cfg = self.workdir / "config.yml"
            cfg.write_text(self._config())
            log = open(self.workdir / "registry.log", "ab")  # noqa: SIM115
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"docker-registry did not start; see {self.workdir / 'registry.log'}")

    def _wait_ready(self, timeout: float = 15) -> bool:
        ctx = None
        if self.mode == "tls":
            assert self.ca_dir is not None
            ctx = ssl.create_default_context(cafile=str(self.ca_dir / "ca.crt"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=ctx)
                return True
            except urllib.error.HTTPError:
                return True  # 401: up, and asking for credentials
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
