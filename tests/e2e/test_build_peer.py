"""Where buildah is installed: the busybox-based examples built by `buildah bud` and by imgtool
give the same filesystem (paths, types, modes, owners, contents, link targets) and the same
config (Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Volumes, our Labels)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imgtool.store import Store
from tests.conftest import imgtool
from tests.e2e.test_build import _context
from tests.e2e.test_unpack_peers import tree
from tests.support.registry import Registry

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(not shutil.which("buildah"), reason="buildah is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]
# examples Debian's buildah 1.28 can build (it predates heredocs)
PEER_EXAMPLES = ["hello", "multistage", "users", "dockerignore"]
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes")


def _without_times(t: dict) -> dict:
    return {p: v[:-1] for p, v in t.items()}


@pytest.mark.parametrize("name", PEER_EXAMPLES)
def test_same_as_buildah(
    name: str,
    hub: Registry,
    store: Store,
    tmp_path: Path,
) -> None:
    _compare_with_buildah(_context(name, tmp_path), name, store, tmp_path)


# instruction semantics both follow BuildKit on: ENV sees the values before it, WORKDIR makes
# its directory for the USER, COPY --from keeps owners (buildah 1.28 has no ${NAME-default})
SEMANTICS = """\
FROM busybox AS src
RUN mkdir /data && echo hi > /data/f && chown -R 1234:2345 /data && chmod 0750 /data
FROM busybox
ENV abc=hello
ENV abc=bye def=$abc
USER 1234:2345
WORKDIR /srv/app
USER root
COPY --from=src /data/f /kept
COPY --from=src --chown=7:8 /data/f /chowned
COPY --chmod=0640 f /f
"""


def test_instruction_semantics_as_buildah(hub: Registry, store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "semantics"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(SEMANTICS)
    (ctx / "f").write_text("f\n")
    _compare_with_buildah(ctx, "semantics", store, tmp_path)


# the parts of Containerfile.examples/copy-options that buildah 1.28 can build: the platform
# ARGs and a tmpfs mount (its COPY has neither --parents nor --exclude, its tmpfs mount calls
# size tmpfs-size)
PLATFORM_TMPFS = """\
FROM busybox
ARG TARGETOS TARGETARCH
RUN --mount=type=tmpfs,target=/scratch \\
    echo "for $TARGETOS/$TARGETARCH" > /scratch/i && cp /scratch/i /platform.txt
"""


def test_platform_args_and_tmpfs_as_buildah(hub: Registry, store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "platform-tmpfs"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(PLATFORM_TMPFS)
    _compare_with_buildah(ctx, "platform-tmpfs", store, tmp_path)


def _compare_with_buildah(ctx: Path, name: str, store: Store, tmp_path: Path) -> None:
    r = imgtool("build", "-t", f"peer-{name}", str(ctx))
    assert r.code == 0, r.err
    env = {**os.environ}
    tag = f"imgtool-peer-{name}:{os.getpid()}"
    bud = subprocess.run(
        [
            "buildah",
            "bud",
            "-q",
            "--no-cache",
            "--force-rm",
            "--isolation",
            "chroot",
            "-t",
            tag,
            ".",
        ],
        cwd=ctx,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bud.returncode == 0, bud.stderr[-2000:]
    try:
        layout = tmp_path / "buildah-oci"
        subprocess.run(
            ["buildah", "push", "-q", tag, f"oci:{layout}:peer"], check=True, capture_output=True
        )
    finally:
        subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True)
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    assert imgtool("unpack", f"peer-{name}", str(mine)).code == 0
    assert imgtool("--root", str(layout), "unpack", "peer", str(theirs)).code == 0
    a, b = _without_times(tree(mine)), _without_times(tree(theirs))
    # buildah leaves the mount points of its RUN steps in the layer (empty /dev, /proc, /sys,
    # /run, /etc/hostname, /etc/hosts, /etc/resolv.conf); imgtool leaves them out, as a layer
    # should hold only what the step made. Those stubs are not compared.
    for stub in ("dev", "proc", "sys", "run", "etc/hostname", "etc/hosts", "etc/resolv.conf"):
        if stub not in a and b.get(stub, (0, 0, 0, 0, 0))[4] == 0:
            b.pop(stub, None)
    diff = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
    assert diff == [], [(p, a.get(p), b.get(p)) for p in diff[:5]]
    ours = store.image(f"peer-{name}").config.config
    theirs_cfg = Store(layout).image("peer").config.config
    for key in CONFIG_KEYS:
        assert (ours.get(key) or None) == (theirs_cfg.get(key) or None), key
    for k, v in (ours.get("Labels") or {}).items():
        assert (theirs_cfg.get("Labels") or {}).get(k) == v
