"""The device cgroup and the orphan guarantee, for real: a forked child in a container's cgroup
(v1 devices controller on a v1 or hybrid host, the eBPF program on v2) tries device nodes it
made under tmp_path with the numbers of /dev/kvm, a loop device and /dev/kmsg; and what is left
in a cgroup whose owner is gone is killed. Also run in the cgroup v2 guest
(tests/e2e/test_cgroup2_vm.py); on this hybrid host the v2 program is attached in the unified
hierarchy too."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imgtool.sandbox import cgroups, liveness
from imgtool.sandbox.devices import DEFAULT_RULES, DeviceRule, parse_device

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups and mknod need root")

NODES = {  # name: (kind, major, minor)
    "kvm": (stat.S_IFCHR, 10, 232),
    "loop": (stat.S_IFBLK, 7, 0),
    "kmsg": (stat.S_IFCHR, 1, 11),
    "null": (stat.S_IFCHR, 1, 3),
}
Join = Callable[[int], None]


def probe(join: Join, where: Path, opens: dict[str, tuple[str, int]]) -> dict[str, int]:
    """Fork a child, `join` it to a cgroup, then let it mknod every node of NODES under `where`
    and open some (label: (node, flags)). The errno of each try by label (or "mknod NODE"),
    0 when it worked."""
    results_r, results_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(results_r)
            os.close(go_w)
            os.read(go_r, 1)
            out = {}
            for name, (kind, major, minor) in NODES.items():
                out[f"mknod {name}"] = _errno_of(
                    lambda n=name, k=kind, a=major, b=minor: os.mknod(
                        where / n, k | 0o666, os.makedev(a, b)
                    )
                )
            for label, (name, flags) in opens.items():
                out[label] = _errno_of(lambda p=where / name, f=flags: os.close(os.open(p, f)))
            os.write(results_w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(results_w)
    os.close(go_r)
    try:
        join(pid)
    finally:
        os.write(go_w, b"g")
        os.close(go_w)
        raw = _read_all(results_r)
        os.waitpid(pid, 0)
    return json.loads(raw)


def _errno_of(fn: Callable[[], None]) -> int:
    try:
        fn()
        return 0
    except OSError as e:
        return e.errno or -1


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out


@pytest.fixture
def make_cgroup() -> Iterator[Callable[..., cgroups.Cgroup]]:
    """Containers' cgroups as runner.py makes them: the liveness lock first, or a concurrent
    imgtool would take them for orphans."""
    made: list[cgroups.Cgroup] = []

    def make(rules: tuple[DeviceRule, ...] | None = DEFAULT_RULES, **limits: int) -> cgroups.Cgroup:
        cid = os.urandom(32).hex()
        liveness.hold(cid)
        group = cgroups.Cgroup(cid, cgroups.Limits(**limits), rules)
        made.append(group)
        return group.create()

    yield make
    for group in made:
        group.destroy()
        liveness.release(group.cid)


def v2_root() -> Path:
    """A cgroup v2 hierarchy: /sys/fs/cgroup on a pure v2 host, the (controller-less) unified
    one of a hybrid host. Device filters need no controller."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (root / "cgroup.controllers").exists():
            return root
    pytest.skip("no cgroup v2 hierarchy is mounted")


OPENS = {
    "open kvm": ("kvm", os.O_RDWR),
    "open loop": ("loop", os.O_RDONLY),
    "read kmsg": ("kmsg", os.O_RDONLY),
    "write kmsg": ("kmsg", os.O_WRONLY),
    "open null": ("null", os.O_RDWR),
}


def assert_default_rules_hold(got: dict[str, int]) -> None:
    for name in NODES:
        assert got[f"mknod {name}"] == 0, got  # creating a node is allowed
    for label in ("open kvm", "open loop", "read kmsg", "write kmsg"):
        assert got[label] == errno.EPERM, (label, got)
    assert got["open null"] == 0, got


def test_a_container_opens_only_the_default_devices(
    make_cgroup: Callable[..., cgroups.Cgroup], tmp_path: Path
) -> None:
    group = make_cgroup()
    assert_default_rules_hold(probe(group.add, tmp_path, OPENS))


def test_without_rules_every_device_opens(
    make_cgroup: Callable[..., cgroups.Cgroup], tmp_path: Path
) -> None:
    # --privileged; and what every container had before the device cgroup
    group = make_cgroup(None)
    got = probe(group.add, tmp_path, OPENS)
    assert got["read kmsg"] == 0, got
    assert got["open kvm"] != errno.EPERM, got  # ENXIO where kvm is not loaded
    assert got["open loop"] != errno.EPERM, got


def test_a_device_rule_opens_that_device_with_its_permissions(
    make_cgroup: Callable[..., cgroups.Cgroup], tmp_path: Path
) -> None:
    kmsg = parse_device("/dev/kmsg:/dev/kmsg:r")  # the host's numbers, read only
    group = make_cgroup((*DEFAULT_RULES, kmsg.rule()))
    got = probe(group.add, tmp_path, OPENS)
    assert got["read kmsg"] == 0, got
    assert got["write kmsg"] == errno.EPERM, got  # not granted
    assert got["open kvm"] == errno.EPERM and got["open loop"] == errno.EPERM, got


def test_the_v2_program_in_a_cgroup2_hierarchy(tmp_path: Path) -> None:
    """Loaded through the verifier and attached to a cgroup2 directory, even on this hybrid
    host, where containers use the v1 controller."""
    cid = os.urandom(32).hex()
    d = v2_root() / cgroups.PARENT / cid
    liveness.hold(cid)
    try:
        d.mkdir(parents=True)
        cgroups.attach_device_filter(d, DEFAULT_RULES)
        got = probe(lambda pid: _join_v2(d, pid), tmp_path, OPENS)
        assert_default_rules_hold(got)
    finally:
        cgroups.remove_dir(d)
        liveness.release(cid)
    assert not d.exists()


def test_a_refused_program_names_the_verifier_s_complaint(tmp_path: Path) -> None:
    from imgtool.errors import SandboxError
    from imgtool.sandbox import linux

    broken = b"\x61\x12\x0c\x00\x00\x00\x00\x00" + b"\x95" + bytes(7)  # reads past the context
    with pytest.raises(SandboxError) as e:
        linux.bpf_prog_load(linux.BPF_PROG_TYPE_CGROUP_DEVICE, broken, "Apache-2.0", "here")
    assert "bpf(BPF_PROG_LOAD): here" in str(e.value) and "context access" in str(e.value)


def _join_v2(d: Path, pid: int) -> None:
    (d / "cgroup.procs").write_text(str(pid))


def _start_forking(join: Join) -> int:
    """A child in the cgroup that forks sleepers as fast as it can, 100 of them, then sleeps."""
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(go_w)
            os.read(go_r, 1)
            for _ in range(100):
                if os.fork() == 0:
                    break
            time.sleep(100)
        finally:
            os._exit(1)
    os.close(go_r)
    try:
        join(pid)
    finally:
        os.write(go_w, b"g")
        os.close(go_w)
    return pid


def _wait_for_processes(d: Path, n: int) -> None:
    for _ in range(500):
        if len((d / "cgroup.procs").read_text().split()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {n} processes in {d}")


def test_an_empty_cgroup_goes_with_one_rmdir(
    make_cgroup: Callable[..., cgroups.Cgroup], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a container's last process is gone, its cgroups are removed at once: no kill, no
    listing of processes on the way (run --rm waits for this); a busy one still takes the long
    way (test_an_orphaned_cgroup_is_stale_and_its_processes_are_killed)."""
    group = make_cgroup()

    def no_kill(d: Path, seconds: float = 2) -> bool:
        raise AssertionError(f"kill_all({d}) for an empty cgroup")

    monkeypatch.setattr(cgroups, "kill_all", no_kill)
    for d in group.dirs:
        cgroups.remove_dir(d)
        assert not d.exists()


def test_kill_all_stops_a_forking_cgroup(make_cgroup: Callable[..., cgroups.Cgroup]) -> None:
    group = make_cgroup()
    pid = _start_forking(group.add)
    _wait_for_processes(group.dirs[0], 10)
    cgroups.kill_all(group.dirs[0])
    assert all(cgroups.is_empty(d) for d in group.dirs)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_an_orphaned_cgroup_is_stale_and_its_processes_are_killed(tmp_path: Path) -> None:
    """The owner of a container is gone (its liveness lock is free) but a process is left in
    the cgroup: the next command's clean-up (stale, remove_dir) kills it and removes it."""
    cid = os.urandom(32).hex()
    liveness.hold(cid)
    group = cgroups.Cgroup(cid, cgroups.Limits())
    try:
        pid = _start_forking(group.create().add)
        _wait_for_processes(group.dirs[0], 2)
        assert not any(d in cgroups.stale() for d in group.dir_strs)  # its owner holds it
        liveness.release(cid)  # the owner dies
        orphans = cgroups.stale()
        # another imgtool may be cleaning up at this moment too: then it is gone already
        assert all(d in orphans or not os.path.exists(d) for d in group.dir_strs)
        for d in group.dirs:
            cgroups.remove_dir(d)
        assert not any(d.exists() for d in group.dirs)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        group.destroy()
        liveness.release(cid)


def test_kill_all_in_a_cgroup2_hierarchy() -> None:
    cid = os.urandom(32).hex()
    d = v2_root() / cgroups.PARENT / cid
    liveness.hold(cid)
    try:
        d.mkdir(parents=True)
        pid = _start_forking(lambda p: _join_v2(d, p))
        _wait_for_processes(d, 5)
        cgroups.kill_all(d)
        assert cgroups.is_empty(d)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        cgroups.remove_dir(d)
        liveness.release(cid)
    assert not d.exists()
