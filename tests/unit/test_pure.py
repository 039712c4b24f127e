"""The pure functions behind the commands, without root, a registry or a container: -p parsing,
the argv and environment a container gets, platform selection from an index, size parsing."""

from __future__ import annotations

import pytest

from imgtool import oci
from imgtool.analyze import parse_size
from imgtool.errors import ImgtoolError, NetworkError, NoMatchingPlatform
from imgtool.network.nat import Port, parse_publish
from imgtool.runner import DEFAULT_PATH, RunError, RunOptions, argv_for, env_for

# --- parse_publish -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", [Port("", 8080, 80, "tcp")]),
        ("127.0.0.1:8080:80", [Port("127.0.0.1", 8080, 80, "tcp")]),
        ("[127.0.0.1]:53:53/udp", [Port("127.0.0.1", 53, 53, "udp")]),
        ("5353:53/udp", [Port("", 5353, 53, "udp")]),
        ("8000-8002:80-82", [Port("", 8000 + i, 80 + i, "tcp") for i in range(3)]),
        ("65535:1", [Port("", 65535, 1, "tcp")]),
    ],
)
def test_publish_parses(text: str, expected: list[Port]) -> None:
    assert parse_publish(text) == expected


def test_publish_without_host_port_picks_a_free_one() -> None:
    (port,) = parse_publish("127.0.0.1::80")
    assert port.host_ip == "127.0.0.1" and port.container_port == 80
    assert 0 < port.host_port < 65536
    (alone,) = parse_publish("80")
    assert alone.container_port == 80 and alone.host_port > 0 and alone.host_ip == ""


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("80/sctp", "protocol must be tcp or udp"),
        ("nothere:8080:80", "'nothere' is not an IPv4 address"),
        ("::1:8080:80", "is not an IPv4 address"),
        ("8080:abc", "expected \\[ip:\\]hostport:containerport"),
        ("0:80", "expected"),
        ("8080:65536", "expected"),
        ("90-80:80", "expected"),
        ("8000-8002:80-81", "the ranges differ in length"),
        ("", "expected"),
    ],
)
def test_publish_refuses(text: str, why: str) -> None:
    with pytest.raises(NetworkError, match=why) as info:
        parse_publish(text)
    assert repr(text) in str(info.value)  # the message names the culprit


def test_port_shows_as_docker_does() -> None:
    assert str(Port("", 8080, 80)) == "8080->80/tcp"
    assert str(Port("127.0.0.1", 53, 53, "udp")) == "127.0.0.1:53->53/udp"


# --- argv_for / env_for ------------------------------------------------------------------------

CONFIG = {"Entrypoint": ["/entry", "-x"], "Cmd": ["serve", "--port=80"]}


@pytest.mark.parametrize(
    ("config", "opts", "expected"),
    [
        (CONFIG, RunOptions(), ["/entry", "-x", "serve", "--port=80"]),
        # arguments replace Cmd, never the Entrypoint
        (CONFIG, RunOptions(command=["sh"]), ["/entry", "-x", "sh"]),
        # --entrypoint replaces the Entrypoint and drops the image's Cmd
        (CONFIG, RunOptions(entrypoint="/bin/sh"), ["/bin/sh"]),
        (CONFIG, RunOptions(entrypoint="/bin/sh", command=["-c", "id"]), ["/bin/sh", "-c", "id"]),
        # --entrypoint "" clears it: the arguments alone are the command
        (CONFIG, RunOptions(entrypoint="", command=["id"]), ["id"]),
        ({"Cmd": ["sh"]}, RunOptions(), ["sh"]),
        ({"Entrypoint": None, "Cmd": None}, RunOptions(command=["true"]), ["true"]),
    ],
)
def test_argv(config: dict, opts: RunOptions, expected: list[str]) -> None:
    assert argv_for(config, opts) == expected


@pytest.mark.parametrize(
    ("config", "opts"),
    [
        ({}, RunOptions()),
        ({"Entrypoint": [], "Cmd": []}, RunOptions()),
        (CONFIG, RunOptions(entrypoint="")),
    ],
)
def test_argv_refuses_nothing_to_run(config: dict, opts: RunOptions) -> None:
    with pytest.raises(RunError, match="no command specified"):
        argv_for(config, opts)


def test_env_layers_image_then_defaults_then_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "host value")
    monkeypatch.delenv("NOT_ON_HOST", raising=False)
    config = {"Env": ["A=image", "B=x=y", "EMPTY="]}
    opts = RunOptions(env=["A=user", "FROM_HOST", "NOT_ON_HOST", "C="])
    assert env_for(config, opts, "web") == {
        "A": "user",  # -e wins over the image
        "B": "x=y",  # only the first '=' splits
        "EMPTY": "",
        "PATH": DEFAULT_PATH,  # the image sets none
        "HOSTNAME": "web",
        "FROM_HOST": "host value",  # `-e NAME` passes the host's value
        "C": "",
    }


def test_env_keeps_the_image_path_and_adds_term_for_a_tty() -> None:
    env = env_for({"Env": ["PATH=/opt/bin", "TERM=vt100"]}, RunOptions(tty=True), "h")
    assert env["PATH"] == "/opt/bin" and env["TERM"] == "vt100"
    assert env_for({}, RunOptions(tty=True), "h")["TERM"] == "xterm"
    assert "TERM" not in env_for({}, RunOptions(), "h")
    # the container's hostname is ours to set, whatever the image says
    assert env_for({"Env": ["HOSTNAME=image"]}, RunOptions(), "mine")["HOSTNAME"] == "mine"


@pytest.mark.parametrize("item", ["=value", "="])
def test_env_refuses_a_nameless_variable(item: str) -> None:
    with pytest.raises(RunError, match=repr(item)):
        env_for({}, RunOptions(env=[item]), "h")


# --- platform selection ------------------------------------------------------------------------


def _index(*platforms: str | None) -> oci.Index:
    manifests = tuple(
        oci.Descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            "sha256:" + f"{i:064x}",
            100,
            platform=None if p is None else _platform(p),
        )
        for i, p in enumerate(platforms)
    )
    return oci.Index("application/vnd.oci.image.index.v1+json", manifests, b"{}")


def _platform(text: str) -> oci.Platform:
    # as an index spells it: no normalization
    os_, arch, *variant = text.split("/")
    return oci.Platform(os_, arch, variant[0] if variant else "")


def _chosen(index: oci.Index, wanted: str) -> int:
    picked = oci.select_platform(index, oci.Platform.parse(wanted))
    return index.manifests.index(picked)


@pytest.mark.parametrize(
    ("platforms", "wanted", "expected"),
    [
        (["linux/amd64", "linux/arm64"], "linux/arm64", 1),
        # the exact variant first, wherever it stands
        (["linux/arm/v5", "linux/arm/v6", "linux/arm/v7"], "linux/arm/v7", 2),
        # arm v7 runs v6 (better) and v5
        (["linux/arm/v5", "linux/arm/v6"], "linux/arm/v7", 1),
        (["linux/arm/v5"], "linux/arm/v7", 0),
        # an index that says arm64/v8 means plain arm64
        (["linux/amd64", "linux/arm64/v8"], "linux/arm64", 1),
        (["linux/amd64", "linux/arm64"], "linux/arm64/v8", 1),
        # amd64/v3 runs v2 before v1 (plain amd64)
        (["linux/amd64", "linux/amd64/v2"], "linux/amd64/v3", 1),
        (["linux/amd64"], "linux/amd64/v3", 0),
        # attestations and entries without a platform are never picked
        ([None, "unknown/unknown", "linux/amd64"], "linux/amd64", 2),
        # a request without a variant takes the first variant offered
        (["windows/amd64", "linux/riscv64/rva22"], "linux/riscv64", 1),
    ],
)
def test_select_platform(platforms: list[str | None], wanted: str, expected: int) -> None:
    assert _chosen(_index(*platforms), wanted) == expected


@pytest.mark.parametrize(
    ("platforms", "wanted"),
    [
        (["linux/arm/v7"], "linux/arm/v6"),  # v6 does not run v7
        (["linux/arm/v7"], "linux/arm64"),
        (["windows/amd64"], "linux/amd64"),
        (["linux/amd64/v3"], "linux/amd64/v2"),
        ([None, "unknown/unknown"], "linux/amd64"),
    ],
)
def test_select_platform_refuses_what_cannot_run(platforms: list, wanted: str) -> None:
    with pytest.raises(NoMatchingPlatform) as info:
        _chosen(_index(*platforms), wanted)
    assert "unknown/unknown" not in info.value.available
    assert info.value.available == [p for p in platforms if p not in (None, "unknown/unknown")]


# --- parse_size --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1234", 1234),
        ("300MB", 300_000_000),
        ("300mb", 300_000_000),
        ("1.5GB", 1_500_000_000),
        ("120MiB", 120 << 20),
        ("2KiB", 2048),
        ("2k", 2000),
        ("1TiB", 1 << 40),
        (" 7 MB ", 7_000_000),
        ("10B", 10),
        (4096, 4096),
    ],
)
def test_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "MB", "-1MB", "1.5.5GB", "12 parsecs", "1PB", "1e3", "1 GiBs"]
)
def test_size_refuses(text: str) -> None:
    with pytest.raises(ImgtoolError, match=f"invalid size {text!r}".replace(".", "\\.")):
        parse_size(text)
