"""Auth against the real registry: TLS with a custom CA and htpasswd Basic auth, and bearer
tokens from a token server the registry trusts. Credentials from docker's config.json, podman's
auth.json, credential helpers and `imgtool login`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from imgtool.store import Store
from tests.conftest import TokenSetup, imgtool, write_docker_config
from tests.support.registry import Registry

pytestmark = pytest.mark.registry


def _certs_d(home: Path, reg: Registry) -> None:
    """Install the registry's CA where containers-certs.d(5) says (per-user directory)."""
    d = home / ".config" / "containers" / "certs.d" / reg.host
    d.mkdir(parents=True)
    assert reg.ca_dir is not None
    (d / "ca.crt").write_bytes((reg.ca_dir / "ca.crt").read_bytes())


def test_tls_basic_auth_with_docker_config(
    tls_registry: Registry, isolated_env: Path, store: Store
) -> None:
    ref = f"{tls_registry.host}/private/busybox:latest"
    r = imgtool("pull", ref)
    assert r.code == 1 and "certificate verify failed" in r.err  # no CA yet: refused
    _certs_d(isolated_env, tls_registry)
    r = imgtool("pull", ref)
    assert r.code == 1 and "imgtool login" in r.err and "unauthorized" in r.err
    write_docker_config(isolated_env, tls_registry.host, "alice", "wonderland")
    r = imgtool("pull", ref)
    assert r.code == 0, r.err
    assert store.find(ref)


def test_tls_wrong_password_is_one_clear_line(
    tls_registry: Registry, isolated_env: Path, store: Store
) -> None:
    _certs_d(isolated_env, tls_registry)
    write_docker_config(isolated_env, tls_registry.host, "alice", "bad")
    r = imgtool("pull", f"{tls_registry.host}/private/busybox")
    assert r.code == 1
    assert r.err.count("\n") == 1 and "'alice' was refused" in r.err
    assert store.entries() == []


def test_cert_dir_and_login_logout(tls_registry: Registry, isolated_env: Path) -> None:
    host = tls_registry.host
    ca = str(tls_registry.ca_dir)
    r = imgtool("login", host, "-u", "alice", "--password-stdin", "--cert-dir", ca, input="nope\n")
    assert r.code == 1 and "authentication failed" in r.err
    assert not (isolated_env / ".docker" / "config.json").exists()
    r = imgtool(
        "login", host, "-u", "alice", "--password-stdin", "--cert-dir", ca, input="wonderland\n"
    )
    assert r.code == 0, r.err
    cfg = isolated_env / ".docker" / "config.json"
    assert host in json.loads(cfg.read_text())["auths"]
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    r = imgtool("pull", "--cert-dir", ca, f"{host}/private/busybox")
    assert r.code == 0, r.err
    r = imgtool("logout", host)
    assert r.code == 0 and "Removed" in r.out
    assert host not in json.loads(cfg.read_text())["auths"]


def test_podman_auth_file_and_credential_helper(
    tls_registry: Registry, isolated_env: Path, tmp_path: Path
) -> None:
    _certs_d(isolated_env, tls_registry)
    host = tls_registry.host
    authfile = tmp_path / "auth.json"
    import base64

    authfile.write_text(
        json.dumps(
            {
                "auths": {
                    f"https://{host}/v2/": {"auth": base64.b64encode(b"alice:wonderland").decode()}
                }
            }
        )
    )
    r = imgtool("pull", f"{host}/private/busybox", env={"REGISTRY_AUTH_FILE": str(authfile)})
    assert r.code == 0, r.err
    # a docker-credential-* helper, named per registry in credHelpers
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-testhelper"
    helper.write_text(
        '#!/bin/sh\nread server\n[ "$1" = get ] || exit 1\n'
        f'[ "$server" = "{host}" ] || {{ echo \'credentials not found in native keychain\'; exit 1; }}\n'
        'echo \'{"Username":"alice","Secret":"wonderland"}\'\n'
    )
    helper.chmod(0o755)
    cfg = isolated_env / ".docker" / "config.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps({"credHelpers": {host: "testhelper"}}))
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    r = imgtool("pull", f"{host}/private/busybox", env=env)
    assert r.code == 0, r.err
    cfg.write_text(json.dumps({"credHelpers": {host: "missing"}}))
    r = imgtool("pull", f"{host}/private/busybox", env=env)
    assert r.code == 1 and "docker-credential-missing is not installed" in r.err


def test_token_auth_anonymous_and_with_credentials(
    token_registry: TokenSetup, isolated_env: Path, store: Store
) -> None:
    reg, tokens = token_registry.registry, token_registry.tokens
    host = reg.host
    tokens.requests.clear()
    r = imgtool("pull", f"{host}/public/busybox")
    assert r.code == 0, r.err
    assert tokens.requests[0].account is None
    assert "repository:public/busybox:pull" in tokens.requests[0].scopes
    r = imgtool("pull", f"{host}/private/busybox")
    assert r.code == 1 and "unauthorized" in r.err
    write_docker_config(isolated_env, host, "alice", "wonderland")
    r = imgtool("pull", f"{host}/private/busybox")
    assert r.code == 0, r.err
    write_docker_config(isolated_env, host, "alice", "wrong")
    r = imgtool("pull", f"{host}/private/busybox")
    assert r.code == 1 and "authentication failed for user 'alice'" in r.err


def test_token_refreshed_after_401(
    token_registry: TokenSetup, isolated_env: Path, store: Store
) -> None:
    reg, tokens = token_registry.registry, token_registry.tokens
    write_docker_config(isolated_env, reg.host, "alice", "wonderland")
    tokens.requests.clear()
    tokens.expired_tokens = 1  # the first token is dead on arrival: the registry says 401
    r = imgtool("pull", f"{reg.host}/private/busybox")
    assert r.code == 0, r.err
    assert len(tokens.requests) >= 2


def test_push_mounts_across_repositories_with_two_scopes(
    token_registry: TokenSetup, isolated_env: Path
) -> None:
    reg, tokens = token_registry.registry, token_registry.tokens
    write_docker_config(isolated_env, reg.host, "alice", "wonderland")
    assert imgtool("pull", f"{reg.host}/private/busybox").code == 0
    tokens.requests.clear()
    r = imgtool("push", f"{reg.host}/private/busybox", f"{reg.host}/alice/copy:1")
    assert r.code == 0, r.err
    assert "2 mounted" in r.out
    both = [q.scopes for q in tokens.requests if len(q.scopes) == 2]
    assert any(
        set(s) == {"repository:alice/copy:pull,push", "repository:private/busybox:pull"}
        for s in both
    ), [q.scopes for q in tokens.requests]
