"""registries.conf, credentials files and auth challenges: the pure parts of the registry floor."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from imgtool import reference as refs
from imgtool.errors import ConfigError, CredentialsError
from imgtool.registry import config as regconf
from imgtool.registry import credentials
from imgtool.registry.auth import merge_scopes, parse_challenges


def _conf(tmp_path: Path, text: str) -> regconf.RegistriesConf:
    p = tmp_path / "registries.conf"
    p.write_text(text)
    return regconf.load([p])


def test_mirrors_come_first_and_rewrite_the_path(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        """
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000/hub"
insecure = true
[[registry.mirror]]
location = "mirror.example:443"
pull-from-mirror = "digest-only"
""",
    )
    eps = conf.endpoints(refs.parse("python:3.12"))
    assert [(e.host, e.repository, e.insecure, e.mirror) for e in eps] == [
        ("127.0.0.1:5000", "hub/library/python", True, True),
        ("registry-1.docker.io", "library/python", False, False),
    ]
    by_digest = conf.endpoints(refs.parse("python@sha256:" + "a" * 64))
    assert [e.host for e in by_digest] == [
        "127.0.0.1:5000",
        "mirror.example:443",
        "registry-1.docker.io",
    ]


def test_longest_prefix_wins_and_location_moves(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        """
[[registry]]
prefix = "example.com"
location = "a.example"
[[registry]]
prefix = "example.com/team"
location = "b.example/mirror"
[[registry]]
prefix = "*.corp"
blocked = true
""",
    )
    (ep,) = conf.endpoints(refs.parse("example.com/team/app:1"))
    assert (ep.host, ep.repository) == ("b.example", "mirror/app")
    (ep,) = conf.endpoints(refs.parse("example.com/other/app:1"))
    assert (ep.host, ep.repository) == ("a.example", "other/app")
    with pytest.raises(ConfigError, match="blocked"):
        conf.endpoints(refs.parse("reg.corp/x"))


def test_aliases_apply_to_short_names_only(tmp_path: Path) -> None:
    conf = _conf(tmp_path, '[aliases]\n"app" = "quay.io/team/app"\n')
    assert str(conf.resolve("app")) == "quay.io/team/app:latest"
    assert str(conf.resolve("app:2@sha256:" + "b" * 64)) == "quay.io/team/app@sha256:" + "b" * 64
    assert str(conf.resolve("other/app")) == "docker.io/other/app:latest"


def test_drop_ins_and_errors(tmp_path: Path) -> None:
    main = tmp_path / "registries.conf"
    main.write_text('[[registry]]\nlocation = "a.example"\ninsecure = true\n')
    (tmp_path / "registries.conf.d").mkdir()
    (tmp_path / "registries.conf.d" / "10-x.conf").write_text(
        '[[registry]]\nlocation = "a.example"\ninsecure = false\n'
    )
    conf = regconf.load([main])
    assert conf.entry_for("a.example/x").insecure is False
    main.write_text("[[registry]]\n[[registry.mirror]]\n")
    with pytest.raises(ConfigError, match="registries.conf"):
        regconf.load([main])


def test_challenges_with_several_scopes() -> None:
    (ch,) = parse_challenges(
        'Bearer realm="https://auth.example/token",service="reg",'
        'scope="repository:a/b:pull repository:c:pull,push",error="insufficient_scope"'
    )
    assert ch.scheme == "bearer" and ch.realm == "https://auth.example/token"
    assert ch.scopes == ("repository:a/b:pull", "repository:c:pull,push")
    assert ch.error == "insufficient_scope"
    basic, bearer = parse_challenges('Basic realm="x", Bearer realm="y",service="z"')
    assert (basic.scheme, bearer.scheme, bearer.service) == ("basic", "bearer", "z")
    assert merge_scopes(("repository:a:pull", "repository:a:push", "repository:b:pull")) == (
        "repository:a:pull,push",
        "repository:b:pull",
    )


def _auth(user: str, pw: str) -> str:
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_credentials_lookup_order_and_hub_key(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = isolated_env / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": _auth("hub", "1")},
                    "http://reg.example:5000/v2/": {"auth": _auth("reg", "2")},
                }
            }
        )
    )
    assert credentials.lookup("registry-1.docker.io") == credentials.Credentials("hub", "1")
    assert credentials.lookup("reg.example:5000") == credentials.Credentials("reg", "2")
    assert credentials.lookup("other.example") is None
    podman = tmp_path / "auth.json"
    podman.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": _auth("pod", "3")}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman))
    assert credentials.lookup("reg.example:5000") == credentials.Credentials("pod", "3")
    podman.write_text("{not json")
    with pytest.raises(CredentialsError, match="not valid JSON"):
        credentials.lookup("reg.example:5000")


def test_store_and_erase(isolated_env: Path) -> None:
    where = credentials.store("docker.io", credentials.Credentials("me", "pw"))
    doc = json.loads(Path(where).read_text())
    assert doc["auths"]["https://index.docker.io/v1/"]["auth"] == _auth("me", "pw")
    assert credentials.erase("docker.io") is True
    assert credentials.erase("docker.io") is False
