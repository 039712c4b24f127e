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


def test_login_files_where_lookup_reads_first(isolated_env: Path) -> None:
    """A stale entry earlier in the lookup order is replaced, not shadowed: after `store`, the
    new credentials are what `lookup` gives. A host with no entry goes to docker's file."""
    podman = isolated_env / ".config" / "containers" / "auth.json"
    podman.parent.mkdir(parents=True)
    podman.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": _auth("me", "old")}}}))
    where = credentials.store("reg.example:5000", credentials.Credentials("me", "new"))
    assert Path(where) == podman
    assert credentials.lookup("reg.example:5000") == credentials.Credentials("me", "new")
    where = credentials.store("other.example", credentials.Credentials("me", "pw"))
    assert Path(where) == isolated_env / ".docker" / "config.json"
    assert "other.example" not in json.loads(podman.read_text())["auths"]


def test_resolve_name_reads_aliases_for_short_names_only(isolated_env: Path) -> None:
    conf = isolated_env / "registries.conf"  # $CONTAINERS_REGISTRIES_CONF in the tests
    conf.write_text('[aliases]\n"app" = "quay.io/team/app"\n')
    assert str(regconf.resolve_name("app:2")) == "quay.io/team/app:2"
    assert str(regconf.resolve_name("busybox")) == "docker.io/library/busybox:latest"
    conf.write_text("[[registry]\n")  # broken: a full name never reads it
    assert str(regconf.resolve_name("quay.io/x/y")) == "quay.io/x/y:latest"
    with pytest.raises(ConfigError):
        regconf.resolve_name("app")


def test_store_reads_names_with_the_resolver_it_is_given(tmp_path: Path) -> None:
    """Store.find goes through the resolver: the CLI's follows registries.conf aliases."""
    from imgtool import mediatypes as mt
    from imgtool import oci
    from imgtool.errors import ImageNotFound
    from imgtool.store import Store

    def alias(text: str) -> refs.Reference:
        return refs.parse("reg.example/team/app" if text == "app" else text)

    store = Store(tmp_path / "store", resolve=alias)
    digest = store.write_blob(b"{}")
    store.set_ref("reg.example/team/app:latest", oci.Descriptor(mt.OCI_MANIFEST, digest, 2))
    assert store.find("app")[0] == "reg.example/team/app:latest"
    with pytest.raises(ImageNotFound, match="docker.io/library/app:latest"):
        Store(tmp_path / "store").find("app")


def test_repository_and_action_of_a_refused_request() -> None:
    from imgtool.registry import client

    url = "https://reg.example/v2/team/app/blobs/uploads/?mount=x"
    assert client._repository_of(url) == "team/app"
    assert client._repository_of("https://reg.example/v2/a/manifests/blobs") == "a"
    assert client._repository_of("https://reg.example/v2/") == ""
    assert [client._action_of(m) for m in ("HEAD", "POST", "DELETE")] == ["pull", "push", "delete"]


def test_scheme_order_asks_plain_first_only_on_one_port() -> None:
    from imgtool.registry.client import RegistryClient, TransportOptions

    def schemes(host: str, insecure: bool = False) -> list[str]:
        return RegistryClient(host, TransportOptions(insecure=insecure))._schemes()

    assert schemes("reg.example") == ["https"]
    assert schemes("reg.example:5000") == ["https"]
    assert schemes("127.0.0.1:5000") == ["http", "https"]
    assert schemes("[::1]:5000") == ["http", "https"]
    assert schemes("localhost") == ["https", "http"]  # ports 443 and 80: TLS first
    assert schemes("reg.example", insecure=True) == ["https", "http"]
