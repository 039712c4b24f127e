"""FROM --platform: the stage's image is pulled for that platform (`--platform=$BUILDPLATFORM`
is the host's); files are copied out of a foreign-platform stage, and a RUN there fails with
an error naming the platform (there is no emulation here), not an exec format error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgtool.store import Store
from tests.conftest import imgtool
from tests.support.registry import Registry

pytestmark = [
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps need root (namespaces, mounts)"),
    pytest.mark.skipif(
        os.uname().machine != "x86_64",
        reason="the multi-platform fixture's "
        "arm64 image is a marker, its amd64 one is real busybox",
    ),
]

CROSS = """\
FROM --platform=linux/arm64 multi/busybox AS foreign
FROM --platform=$BUILDPLATFORM multi/busybox
ARG BUILDPLATFORM
RUN echo "built on $BUILDPLATFORM" > /built
COPY --from=foreign /etc/arch /foreign-arch
"""


def _context(tmp_path: Path, text: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(text)
    return ctx


def test_from_platform_pulls_that_platform(hub: Registry, store: Store, tmp_path: Path) -> None:
    r = imgtool("build", "-t", "plat:1", str(_context(tmp_path, CROSS)), timeout=600)
    assert r.code == 0, r.err
    out = imgtool("run", "--rm", "plat:1", "cat", "/foreign-arch", "/built")
    assert out.out.splitlines() == ["arm64v8", "built on linux/amd64"], out.err
    assert store.image("plat:1").config.platform.architecture == "amd64"


def test_a_run_step_in_a_foreign_stage_names_its_platform(hub: Registry, tmp_path: Path) -> None:
    text = "FROM --platform=linux/arm/v7 multi/busybox\nRUN cat /etc/arch\n"
    r = imgtool("build", str(_context(tmp_path, text)), timeout=600)
    assert r.code == 1, r.err
    (error,) = [x for x in r.err.splitlines() if x.startswith("imgtool: ")]
    assert "Containerfile:2" in error and "RUN in a stage for linux/arm/v7" in error, r.err
    assert "exec format" not in r.err
