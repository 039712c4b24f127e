"""`--debug` for a bug report: the traceback and every HTTP exchange, never a credential."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import TokenSetup, imgtool, write_docker_config
from tests.support.registry import Registry

pytestmark = pytest.mark.registry

PASSWORD = "wonderland"  # tests/conftest.py USERS


def _certs_d(home: Path, reg: Registry) -> None:
    d = home / ".config" / "containers" / "certs.d" / reg.host
    d.mkdir(parents=True)
    assert reg.ca_dir is not None
    (d / "ca.crt").write_bytes((reg.ca_dir / "ca.crt").read_bytes())


def assert_no_secret(text: str) -> None:
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, basic, "Authorization", "authorization", "Bearer ", "eyJ"):
        assert secret not in text, f"{secret!r} leaked:\n{text}"


def test_debug_pull_with_basic_auth(tls_registry: Registry, isolated_env: Path) -> None:
    _certs_d(isolated_env, tls_registry)
    write_docker_config(isolated_env, tls_registry.host, "alice", PASSWORD)
    r = imgtool("--debug", "pull", f"{tls_registry.host}/private/nosuchrepo:1")
    assert r.code == 1
    assert "Traceback (most recent call last):" in r.err
    assert '"GET /v2/ HTTP/1.1" 401' in r.err  # the challenge
    assert '"HEAD /v2/private/nosuchrepo/manifests/1 HTTP/1.1" 404' in r.err
    assert "-> 404 (error codes:" in r.err
    assert r.err.rstrip().splitlines()[-1].startswith("imgtool: manifest for ")
    assert_no_secret(r.err)
    quiet = imgtool("pull", f"{tls_registry.host}/private/nosuchrepo:1")
    assert quiet.code == 1 and quiet.err.count("\n") == 1  # without --debug: one line


def test_debug_env_with_token_auth(token_registry: TokenSetup, isolated_env: Path) -> None:
    reg = token_registry.registry
    write_docker_config(isolated_env, reg.host, "alice", PASSWORD)
    ref = f"{reg.host}/private/busybox:nosuchtag"
    r = imgtool("pull", ref, env={"IMGTOOL_DEBUG": "1"})
    assert r.code == 1
    assert "Traceback (most recent call last):" in r.err
    assert '"GET /token?… HTTP/1.1" 200' in r.err  # the token request, its query dropped
    assert "/v2/private/busybox/manifests/nosuchtag" in r.err
    assert_no_secret(r.err)
