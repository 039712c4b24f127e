"""Only a mirror that cannot be reached lets a network example skip; other failures fail."""

from __future__ import annotations

import pytest

from tests.support.unreachable import unreachable_reason

UNREACHABLE = [
    "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease"
    "  Temporary failure resolving 'deb.debian.org'",
    "E: Failed to fetch http://deb.debian.org/debian/pool/main/h/hello/hello.deb"
    "  Could not connect to deb.debian.org:80 (151.101.2.132), connection timed out",
    "Err:1 http://deb.debian.org/debian bookworm InRelease\n  Could not resolve 'deb.debian.org'",
    "W: Failed to fetch http://10.0.0.1/debian/InRelease  Unable to connect to 10.0.0.1:http:",
    "curl: (6) Could not resolve host: example.org",
    "E: Failed to fetch http://deb.debian.org/x  Network is unreachable",
]

BROKEN = [
    "E: Unable to locate package hello",
    "E: Package 'hello' has no installation candidate",
    "dpkg: error processing package hello (--configure):",
    "E: Sub-process /usr/bin/dpkg returned an error code (1)",
    "/bin/sh: 1: apt-get: not found",
    "imgtool: Containerfile:3: 'RUN apt-get update -qq && ...' failed: exit status 100",
    "E: Could not open lock file /var/lib/apt/lists/lock - open (13: Permission denied)",
    "",
]


@pytest.mark.parametrize("stderr", UNREACHABLE)
def test_unreachable_mirror_is_recognized(stderr: str) -> None:
    reason = unreachable_reason("step output\n" + stderr + "\nimgtool: ... failed")
    assert reason is not None and reason in stderr


@pytest.mark.parametrize("stderr", BROKEN)
def test_other_apt_failures_are_not_excused(stderr: str) -> None:
    assert unreachable_reason(stderr) is None
