"""Test images for the benchmark scripts: busybox, made from Debian's busybox-static, in a
local registry that a registries.conf declares docker.io's mirror (so `FROM busybox` pulls it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.registry import Registry

REPO = Path(__file__).resolve().parent.parent


def seed_busybox(reg: Registry, work: Path) -> Path:
    """busybox into the registry; returns a registries.conf that mirrors docker.io there."""
    layout = work / "busybox"
    subprocess.run(
        [sys.executable, str(REPO / "fixtures/make_images.py"), "busybox", str(layout)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{layout}:latest",
         f"docker://{reg.host}/library/busybox:latest", "--dest-tls-verify=false"],
        check=True,
    )  # fmt: skip
    conf = work / "registries.conf"
    conf.write_text(
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        f'[[registry.mirror]]\nlocation = "{reg.host}"\ninsecure = true\n'
        f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n'
    )
    return conf
