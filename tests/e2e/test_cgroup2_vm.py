"""The runtime, network, netlink and confinement tests again, in a qemu guest whose kernel has
only cgroup v2, as on most users' hosts (this one is a v1/v2 hybrid: the v2 code would not run
here).
The guest is Debian's own kernel over a debootstrapped root (fixtures/make_vm.py); it needs
qemu-system-x86 (test.sh installs it). It boots once, under KVM where a kernel boots in it and
emulated (TCG) elsewhere, and must finish within GUEST_SECONDS: a stuck guest fails fast with
its console's tail."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures import make_vm
from tests.conftest import REPO

RUN = "tests/e2e/test_run.py::test_"
NETWORK = "tests/e2e/test_network.py::test_"
CONFINEMENT = "tests/e2e/test_confinement.py::test_"
BUILD_CONFINEMENT = "tests/e2e/test_confinement_build.py::test_"
# The guest may run emulated (every imgtool start costs seconds), so it runs what differs on a
# pure cgroup v2 kernel: limits, the device filter, the cgroup view, the life and clean-up of
# containers and their cgroups; and the bridge and rtnetlink on another kernel. The rest (exit
# statuses, capabilities, seccomp, copy-up, volumes, the terminal, published UDP ports...) is
# the same code on either version and runs on the host only.
GUEST_TESTS = [
    *(
        RUN + name
        for name in [
            "pid1_hostname_user_env_workdir",
            "mounts_and_masked_paths",
            "memory_limit_oom_kills_inside_the_cgroup",
            "pids_limit_stops_a_fork_bomb",
            "cpu_limit_is_written",
            "detached_ps_logs_stop_rm",
            "nothing_left_after_runs_and_after_sigkill",
            "another_store_never_reaps_a_live_container",
            "a_starting_container_of_another_store_keeps_what_it_made",
            "many_runs_at_once_on_two_stores",
        ]
    ),
    *(
        NETWORK + name
        for name in [
            "bridge_address_route_and_hosts",
            "published_port_on_localhost_and_names",
            "nothing_left_and_network_rm",
            "two_first_runs_at_once_share_one_bridge",
        ]
    ),
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
# -v: each test's name is on the console before it runs, so a stuck one shows in the tail
GUEST_PYTEST_ARGS = ["-v", "-rs", "--durations=15"]
# the only skips allowed in the guest: the confinement tests' podman side (no podman there)
GUEST_SKIP = "podman is not installed"
# the whole test stays under 10 minutes on a loaded 2-core machine, emulated
GUEST_SECONDS = 540
READY_SECONDS = 180  # kernel, initramfs and 9p root, until pytest starts: ~30 s emulated


def test_runtime_on_a_pure_cgroup_v2_kernel(tmp_path: Path) -> None:
    why = make_vm.available()
    if why:
        pytest.skip(f"cannot start the cgroup v2 guest: {why}")
    guest = make_vm.boot(
        REPO,
        [*GUEST_PYTEST_ARGS, *GUEST_TESTS],
        console=tmp_path / "console.log",
        timeout=GUEST_SECONDS,
        ready_within=READY_SECONDS,
    )
    out, status = guest.console, guest.status  # not `guest` in an assert: pytest shows it whole
    print(
        f"guest: -accel {guest.accelerator.name} ({guest.accelerator.why}), {guest.seconds:.0f} s"
    )
    assert "/sys/fs/cgroup is cgroup2fs" in out, out[-4000:]
    assert re.search(r"controllers: .*\bmemory\b", out) and "pids" in out, out[-4000:]
    assert status == 0, out[-8000:]
    summary = [line for line in out.splitlines() if re.search(r"\d+ passed", line)]
    assert summary, out[-4000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all(GUEST_SKIP in line for line in skips), skips  # every imgtool test ran, on v2


def _sleeper(console: Path, text: str) -> subprocess.Popen:
    """A stand-in for qemu: writes `text` to the console, then hangs."""
    script = f"import sys, time; sys.stdout.write({text!r}); sys.stdout.flush(); time.sleep(60)"
    with console.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", script], stdout=out, stderr=out)


TCG = make_vm.Accelerator("tcg", "test")


@pytest.mark.parametrize(
    ("printed", "ready_within", "timeout", "why"),
    [
        ("SeaBIOS\nBooting from ROM...\n", 2, 50, "did not start its tests within 2 s"),
        (f"{make_vm.READY_MARK} 6.1\ntests/e2e/test_run.py::test_x ", 1, 3, "did not finish"),
    ],
)
def test_a_stuck_guest_fails_fast_with_its_console_tail(
    tmp_path: Path, printed: str, ready_within: float, timeout: float, why: str
) -> None:
    console = tmp_path / "console.log"
    proc = _sleeper(console, printed)
    start = time.monotonic()
    try:
        with pytest.raises(make_vm.GuestTimeout) as raised:
            make_vm._watch(proc, console, start, timeout, ready_within, TCG)
    finally:
        proc.kill()
        proc.wait()
    assert time.monotonic() - start < timeout + 5
    message = str(raised.value)
    assert why in message and "-accel tcg" in message
    assert message.rstrip().endswith(printed.rstrip().splitlines()[-1].rstrip())


def test_a_guest_that_powers_off_is_not_a_timeout(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    with console.open("wb") as out:
        proc = subprocess.Popen(["echo", f"{make_vm.READY_MARK}\n{make_vm.EXIT_MARK}0"], stdout=out)
    make_vm._watch(proc, console, time.monotonic(), 30, 10, TCG)
    assert proc.wait() == 0


def test_the_console_tail_is_the_last_lines_without_terminal_escapes() -> None:
    text = "\r\n".join(f"line {i}" for i in range(100)) + "\x1bc\x1b[?7l\x1b[2J\x1b[0m!"
    assert make_vm.console_tail(text, 3) == "line 97\nline 98\nline 99!"


def test_the_accelerator_can_be_forced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_vm.accelerator.cache_clear()
    monkeypatch.setenv("IMGTOOL_VM_ACCEL", "tcg")
    try:
        assert make_vm.accelerator(tmp_path, tmp_path) == make_vm.Accelerator(
            "tcg", "IMGTOOL_VM_ACCEL"
        )
    finally:
        make_vm.accelerator.cache_clear()
