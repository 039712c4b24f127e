"""The runtime, network, netlink and confinement tests again, in a qemu guest whose kernel has
only cgroup v2, as on most users' hosts (this one is a v1/v2 hybrid: the v2 code would not run
here).
The guest is Debian's own kernel over a debootstrapped root (fixtures/make_vm.py); it needs
qemu-system-x86 (test.sh installs it) and takes a quarter of an hour: the runtime tests run
emulated."""

from __future__ import annotations

import re

import pytest

from fixtures import make_images, make_vm
from tests.conftest import REPO

CONFINEMENT = "tests/e2e/test_confinement.py::test_"
BUILD_CONFINEMENT = "tests/e2e/test_confinement_build.py::test_"
# The guest runs emulated (every imgtool start costs seconds): the confinement tests that
# depend on the cgroup version go there; the others are the same code on either version.
GUEST_TESTS = [
    "tests/e2e/test_run.py",
    "tests/e2e/test_network.py",
    "tests/e2e/test_netlink.py",
    "tests/e2e/test_device_cgroup.py",
    CONFINEMENT + "mknod_works_but_the_device_cgroup_refuses_opening",
    CONFINEMENT + "device_nodes_shipped_in_the_image",
    CONFINEMENT + "device_flag_grants_only_the_permissions_it_names",
    CONFINEMENT + "privileged_gives_every_capability_and_device",
    CONFINEMENT + "sys_is_read_only_and_cgroups_show_only_the_container",
    CONFINEMENT + "sigkill_of_imgtool_ends_the_container",
    CONFINEMENT + "zero_means_no_limit",
    BUILD_CONFINEMENT + "run_step_is_held_in_a_cgroup_and_dies_with_a_killed_build",
    BUILD_CONFINEMENT + "finished_run_steps_leave_no_cgroup_or_lock",
]
# the only skips allowed in the guest: the confinement tests' podman side (no podman there)
GUEST_SKIP = "podman is not installed"


def test_runtime_on_a_pure_cgroup_v2_kernel() -> None:
    why = make_vm.available()
    if why:
        pytest.skip(f"cannot start the cgroup v2 guest: {why}")
    make_images.debian_rootfs_tar()  # the guest's network tests run a Debian image too
    status, out = make_vm.boot(REPO, ["-q", "-rs", *GUEST_TESTS], timeout=1800)
    assert "/sys/fs/cgroup is cgroup2fs" in out, out[-4000:]
    assert re.search(r"controllers: .*\bmemory\b", out) and "pids" in out, out[-4000:]
    assert status == 0, out[-8000:]
    summary = [line for line in out.splitlines() if re.search(r"\d+ passed", line)]
    assert summary, out[-4000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all(GUEST_SKIP in line for line in skips), skips  # every imgtool test ran, on v2
