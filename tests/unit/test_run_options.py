"""The values `imgtool run` checks before it creates anything: Docker's rules, no root needed."""

from __future__ import annotations

import os

import pytest

from imgtool.sandbox.cgroups import parse_cpus, parse_memory, parse_pids
from imgtool.sandbox.spec import CAP_NUMBERS, DEFAULT_CAPS, resolve_caps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256m", 256 << 20),
        ("1g", 1 << 30),
        ("1.5g", 3 << 29),
        ("7340032", 7340032),
        ("512MiB", 512 << 20),
        ("64 mb", 64 << 20),
        ("0", None),  # docker: no limit
        ("0m", None),
    ],
)
def test_memory(text: str, expected: int | None) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "text",
    ["infm", "nan", "inf", "-1", "-1m", "1e30g", "", "m", "1x", "5m", "99999999999p", "9" * 400],
)
def test_memory_refused(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("\\", "\\\\")):
        parse_memory(text)


def test_cpus() -> None:
    assert parse_cpus("0") is None
    assert parse_cpus("0.5") == 0.5
    assert parse_cpus(str(os.cpu_count())) == os.cpu_count()
    for bad in ("nan", "inf", "-inf", "-1", "0.001", "abc", str((os.cpu_count() or 1) + 1)):
        with pytest.raises(ValueError, match="--cpus"):
            parse_cpus(bad)


def test_pids() -> None:
    assert parse_pids(None) is None
    assert parse_pids(-1) is None
    assert parse_pids(0) is None
    assert parse_pids(100) == 100


def test_caps_default_and_tweaks() -> None:
    assert set(resolve_caps([], [])) == set(DEFAULT_CAPS)
    assert "NET_RAW" not in resolve_caps([], ["net_raw"])
    assert "NET_ADMIN" in resolve_caps(["CAP_NET_ADMIN"], [])
    assert resolve_caps(["CHOWN"], ["ALL"]) == ("CHOWN",)
    assert resolve_caps([], ["ALL"]) == ()
    everything = resolve_caps(["ALL"], ["MKNOD"])
    assert set(everything) == set(CAP_NUMBERS) - {"MKNOD"}
    ordered = [CAP_NUMBERS[c] for c in resolve_caps(["SYS_ADMIN"], [])]
    assert ordered == sorted(ordered)


def test_caps_unknown() -> None:
    with pytest.raises(ValueError, match="--cap-add 'SYS_FOO': unknown capability"):
        resolve_caps(["SYS_FOO"], [])
    with pytest.raises(ValueError, match="--cap-drop"):
        resolve_caps([], ["nope"])
