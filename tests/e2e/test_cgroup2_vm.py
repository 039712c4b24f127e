"""The runtime, network and netlink tests again, in a qemu guest whose kernel has only cgroup
v2, as on most users' hosts (this one is a v1/v2 hybrid: the v2 code would not run here).
The guest is Debian's own kernel over a debootstrapped root (fixtures/make_vm.py); it needs
qemu-system-x86 (test.sh installs it) and takes a few minutes: the runtime tests run emulated."""

from __future__ import annotations

import re

import pytest

from fixtures import make_images, make_vm
from tests.conftest import REPO

GUEST_TESTS = [
    "tests/e2e/test_run.py",
    "tests/e2e/test_network.py",
    "tests/e2e/test_netlink.py",
]


def test_runtime_on_a_pure_cgroup_v2_kernel() -> None:
    why = make_vm.available()
    if why:
        pytest.skip(f"cannot start the cgroup v2 guest: {why}")
    make_images.debian_rootfs_tar()  # the guest's network tests run a Debian image too
    status, out = make_vm.boot(REPO, ["-q", "-rs", *GUEST_TESTS])
    assert "/sys/fs/cgroup is cgroup2fs" in out, out[-4000:]
    assert re.search(r"controllers: .*\bmemory\b", out) and "pids" in out, out[-4000:]
    assert status == 0, out[-8000:]
    summary = [line for line in out.splitlines() if re.search(r"\d+ passed", line)]
    assert summary and "skipped" not in summary[-1], out[-4000:]  # every test ran, on v2
