"""cgroup set-up on stand-in trees (plain files where cgroupfs has control files): what a
container's creation and its joining write, and what they leave alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgtool.sandbox import cgroups


@pytest.fixture
def v2_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cgroup"
    (root / cgroups.PARENT).mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    return root


def test_enabled_controllers_are_not_written_again(v2_root: Path) -> None:
    for d in (v2_root, v2_root / cgroups.PARENT):
        (d / "cgroup.subtree_control").write_text("cpu memory pids\n")
    cg = cgroups.Cgroup("c1", cgroups.Limits(), devices=None).create()
    assert cg.dirs == [v2_root / cgroups.PARENT / "c1"]
    for d in (v2_root, v2_root / cgroups.PARENT):  # a write would have left "+memory ..."
        assert (d / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_missing_controllers_are_enabled(v2_root: Path) -> None:
    (v2_root / "cgroup.subtree_control").write_text("memory\n")
    cgroups.Cgroup("c2", cgroups.Limits(memory=1 << 20), devices=None).create()
    assert (v2_root / "cgroup.subtree_control").read_text() == "+pids +cpu"
    parent = v2_root / cgroups.PARENT / "cgroup.subtree_control"
    assert parent.read_text() == "+memory +pids +cpu"  # none was enabled there
    assert (v2_root / cgroups.PARENT / "c2" / "memory.max").read_text() == str(1 << 20)


def test_on_v1_the_container_joins_each_hierarchy_by_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cgroup"
    for hierarchy in ("memory", "pids", "cpu,cpuacct", "devices"):
        (root / hierarchy).mkdir(parents=True)
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", root)
    cg = cgroups.Cgroup("c3", cgroups.Limits(), devices=None).create()
    assert cg.version == 1 and len(cg.dirs) == 3  # no devices hierarchy wanted
    cg.join()
    # "0" in tasks: the calling thread itself, which spares the kernel's global lock
    assert all((d / "tasks").read_text() == "0" for d in cg.dirs)
    assert not any((d / "cgroup.procs").exists() for d in cg.dirs)


def test_on_v2_the_container_joins_through_cgroup_procs(v2_root: Path) -> None:
    cg = cgroups.Cgroup("c4", cgroups.Limits(), devices=None).create()
    cg.join()
    assert (v2_root / cgroups.PARENT / "c4" / "cgroup.procs").read_text() == "0"


def test_v1_device_rules_are_written_one_per_write_on_one_descriptor_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller parses one rule per write(2); each file is opened once for its run of
    rules (deny-all, then the allowed devices), not once per rule."""
    from imgtool.sandbox.devices import DEFAULT_RULES, v1_lines

    opened: list[str] = []
    names: dict[int, str] = {}  # what each open descriptor is
    writes: list[tuple[str, bytes]] = []
    real_open, real_write = os.open, os.write

    def open_(path: str, *args: int) -> int:
        fd = real_open(path, *args)
        opened.append(os.path.basename(path))
        names[fd] = opened[-1]
        return fd

    def write(fd: int, data: bytes) -> int:
        writes.append((names[fd], data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "write", write)
    cgroups.write_device_rules(tmp_path, DEFAULT_RULES)
    assert opened == ["devices.deny", "devices.allow"]
    assert writes == [(name, line.encode()) for name, line in v1_lines(DEFAULT_RULES)]
    # a plain file stands in for the control file: it got every rule, in order
    allowed = "".join(line for name, line in v1_lines(DEFAULT_RULES) if name == "devices.allow")
    assert (tmp_path / "devices.allow").read_text() == allowed


def test_a_refused_cgroup_write_names_the_file_and_the_value(tmp_path: Path) -> None:
    from imgtool.errors import SandboxError

    (tmp_path / "devices.deny").mkdir()  # not writable as a file: EISDIR
    with pytest.raises(SandboxError) as e:
        cgroups.write_device_rules(tmp_path, cgroups.DEFAULT_RULES)
    assert e.value.step == "cgroup write"
    assert e.value.path == str(tmp_path / "devices.deny")
    assert "'a'" in str(e.value)
