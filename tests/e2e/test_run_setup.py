"""A container's set-up, where it was made cheaper: its mount points come from the store's
layer of them (sandbox/mountpoints.py), not from its upper dir (each write saved, and each
removal by --rm, is one wait less on a busy disk's journal), and the loopback is brought up
without loading the `_socket` extension. The container sees the same files and mounts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgtool.sandbox import mountpoints
from tests.conftest import imgtool
from tests.support.gates import CONTAINERS

pytestmark = CONTAINERS

SCRIPT = (
    "cat /etc/hostname /etc/hosts; "
    "grep -E ' /etc/(hosts|hostname|resolv.conf) ' /proc/self/mountinfo | cut -d' ' -f5,9; "
    "stat -c '%n %a %u:%g' /etc /proc /sys /dev"
)


@pytest.fixture
def busybox_store(images: dict[str, Path], tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(images["busybox"], root)  # a layout is a store; `latest` names its image
    return root


def run_kept(root: Path, network: str) -> tuple[str, Path]:
    """Run SCRIPT in a container that is kept: (its output, its directory)."""
    argv = ["--root", str(root), "run", "--name", "kept", "--network", network, "latest"]
    r = imgtool(*argv, "sh", "-c", SCRIPT)
    assert r.code == 0, r.err
    (cdir,) = [d for d in (root / "containers").iterdir() if d.is_dir()]
    return r.out, cdir


@pytest.mark.parametrize("network", ["none", "host", "bridge"])
def test_the_set_up_writes_nothing_into_the_upper_dir(busybox_store: Path, network: str) -> None:
    try:
        out, cdir = run_kept(busybox_store, network)
        lines = out.splitlines()
        assert "localhost" in out  # the hosts file reached the container
        for name in ("hosts", "hostname", "resolv.conf"):  # bind mounts, as docker's
            assert any(line.startswith(f"/etc/{name} ") for line in lines), out
        assert "/etc 755 0:0" in lines and "/proc 555 0:0" in lines, out
        assert not list((cdir / "upper").iterdir())  # no mount point was made there
        assert (busybox_store / "layers" / mountpoints.NAME / "etc" / "hosts").is_file()
    finally:
        imgtool("--root", str(busybox_store), "rm", "-f", "kept")
    assert not list((busybox_store / "containers").iterdir())


def test_debian_fits_the_layer_of_mount_points(debian: Path, tmp_path: Path) -> None:
    """Debian's /etc, /proc, /sys and /dev have the layer's modes and owner."""
    root = tmp_path / "store"
    shutil.copytree(debian, root)
    try:
        out, cdir = run_kept(root, "none")
        assert "/etc 755 0:0" in out.splitlines(), out
        assert not list((cdir / "upper").iterdir())
    finally:
        imgtool("--root", str(root), "rm", "-f", "kept")


def test_without_a_network_the_loopback_is_up(busybox_store: Path) -> None:
    """Brought up by an ioctl on a socket made through libc (sandbox/linux.py)."""
    script = "cat /sys/class/net/lo/flags; ls /sys/class/net"
    argv = ["--root", str(busybox_store), "run", "--rm", "--network", "none", "latest"]
    r = imgtool(*argv, "sh", "-c", script)
    assert r.code == 0, r.err
    flags, names = r.out.split("\n", 1)
    assert int(flags, 16) & 0x1  # IFF_UP
    assert names.split() == ["lo"]
