"""cgroup limits and the device cgroup of a container, on cgroup v2 (unified) and v1 (one
hierarchy per controller).

v2 when /sys/fs/cgroup is a cgroup2 mount (cgroup.controllers there); otherwise v1 with the
memory, cpu, pids and devices hierarchies under /sys/fs/cgroup/<controller> (and freezer where
it is mounted). A hybrid host (v1 controllers, an empty v2 tree at /sys/fs/cgroup/unified) is v1.
Each container gets `imgtool/<id>` in every hierarchy it uses.

Devices (devices.py): v1 writes the rules to the devices controller; v2 has no such files, so
an eBPF program of type BPF_CGROUP_DEVICE is attached to the container's cgroup directory (it
stays attached, and in force, as long as the directory exists).

Whatever runs in a container's cgroup is killed when its owner is gone. The owner, the imgtool
that runs the container or the monitor of a detached one, holds the container's liveness lock
(liveness.py) from *before* it creates the cgroup until *after* it has removed it (runner.py keeps
that order). So a cgroup whose lock nobody holds is an orphan, even with processes in it:
`stale()` lists it, and the next imgtool command's clean-up kills what is in it and removes it
(`remove_dir`). A fresh container is never taken for one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Sequence

from imgtool.errors import SandboxError
from imgtool.sandbox import devices, liveness
from imgtool.sandbox.devices import DEFAULT_RULES, DeviceRule
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from pathlib import Path

    from imgtool.atomic import StrPath

# paths are strings (os.path), not pathlib: every `run` comes here (see store.as_path)
CGROUP_ROOT = os.environ.get("IMGTOOL_CGROUP_ROOT", "/sys/fs/cgroup")
PARENT = "imgtool"
CPU_PERIOD = 100_000
V1_HIERARCHIES = ("memory", "pids", "cpu", "devices")  # the freezer too, where it is mounted
BPF_LICENSE = "Apache-2.0"  # the project's (a device filter calls no GPL-only helper)


class Limits(Frozen):
    __slots__ = ("memory", "cpus", "pids")
    memory: int | None  # bytes
    cpus: float | None
    pids: int | None

    def __init__(
        self, memory: int | None = None, cpus: float | None = None, pids: int | None = None
    ) -> None:
        self._init(memory, cpus, pids)

    def any(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpus, self.pids))


def version() -> int:
    return 2 if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")) else 1


def _write(path: StrPath, value: str) -> None:
    _write_each(path, (value,))


def _read(path: StrPath) -> str:
    with open(path) as f:
        return f.read()


def _write_each(path: StrPath, values: Sequence[str]) -> None:
    """Each value in a write(2) of its own (a cgroup control file takes one value per write),
    all on one descriptor: open, write, close, without a text file object's extra calls."""
    value = values[0]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for value in values:
                os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise SandboxError("cgroup write", str(path), e.errno or 0, f"value {value!r}") from None


def _v1_freezer() -> str | None:
    try:
        return _v1_dir("freezer")
    except SandboxError:
        return None


def _v1_dir(controller: str) -> str:
    for name in (controller, f"{controller},cpuacct", f"cpuacct,{controller}"):
        p = os.path.join(CGROUP_ROOT, name)
        if os.path.isdir(p):
            return p
    where = os.path.join(CGROUP_ROOT, controller)
    raise SandboxError("cgroup v1", where, 0, f"the {controller} controller is not mounted")


class Cgroup:
    """The cgroup(s) of one container. `devices`: the device cgroup's rules (devices.py), or
    None for no restriction (--privileged)."""

    def __init__(
        self, cid: str, limits: Limits, devices: Sequence[DeviceRule] | None = DEFAULT_RULES
    ) -> None:
        self.cid = cid
        self.limits = limits
        self.devices = devices
        self.version = version()
        self.dir_strs: list[str] = []

    @property
    def dirs(self) -> list[Path]:
        """The directories made for this cgroup, one per hierarchy."""
        from imgtool.store import as_path

        return [as_path(d) for d in self.dir_strs]

    def _paths(self) -> dict[str, str]:
        if self.version == 2:
            return {"unified": os.path.join(CGROUP_ROOT, PARENT, self.cid)}
        # no devices hierarchy is no device restriction: refused (by _v1_dir) unless unwanted
        wanted = [c for c in V1_HIERARCHIES if c != "devices" or self.devices is not None]
        paths = {c: os.path.join(_v1_dir(c), PARENT, self.cid) for c in wanted}
        freezer = _v1_freezer()  # lets kill_all stop forks while it kills
        if freezer is not None:
            paths["freezer"] = os.path.join(freezer, PARENT, self.cid)
        return paths

    def create(self) -> Cgroup:
        paths = self._paths()
        if self.version == 2:
            parent = os.path.join(CGROUP_ROOT, PARENT)
            with contextlib.suppress(FileExistsError):
                os.mkdir(parent)
            available = _read(os.path.join(CGROUP_ROOT, "cgroup.controllers")).split()
            wanted = [c for c in ("memory", "pids", "cpu") if c in available]
            for d in (CGROUP_ROOT, parent):
                _enable_controllers(d, wanted)
        for p in paths.values():
            try:
                os.makedirs(p, exist_ok=True)
            except OSError as e:
                raise SandboxError("mkdir cgroup", p, e.errno or 0) from None
            self.dir_strs.append(p)
        self._apply(paths)
        if self.devices is not None:  # before any process joins: create() comes before add()
            if self.version == 2:
                attach_device_filter(paths["unified"], self.devices)
            else:
                write_device_rules(paths["devices"], self.devices)
        return self

    def _apply(self, paths: dict[str, str]) -> None:
        lim = self.limits
        join = os.path.join
        if self.version == 2:
            d = paths["unified"]
            if lim.memory is not None:
                _write(join(d, "memory.max"), str(lim.memory))
                if os.path.exists(join(d, "memory.swap.max")):
                    _write(join(d, "memory.swap.max"), "0")
            if lim.cpus is not None:
                _write(join(d, "cpu.max"), f"{int(lim.cpus * CPU_PERIOD)} {CPU_PERIOD}")
            if lim.pids is not None:
                _write(join(d, "pids.max"), str(lim.pids))
            return
        if lim.memory is not None:
            m = paths["memory"]
            _write(join(m, "memory.limit_in_bytes"), str(lim.memory))
            if os.path.exists(join(m, "memory.memsw.limit_in_bytes")):
                _write(join(m, "memory.memsw.limit_in_bytes"), str(lim.memory))
        if lim.cpus is not None:
            c = paths["cpu"]
            _write(join(c, "cpu.cfs_period_us"), str(CPU_PERIOD))
            _write(join(c, "cpu.cfs_quota_us"), str(int(lim.cpus * CPU_PERIOD)))
        if lim.pids is not None:
            _write(join(paths["pids"], "pids.max"), str(lim.pids))

    def hierarchies(self) -> list[str]:
        """The names under /sys/fs/cgroup of the hierarchies this cgroup is in ("unified" on
        v2), as the container's read-only view mounts them."""
        if self.version == 2:
            return ["unified"]
        # <root>/<hierarchy>/imgtool/<id>
        return [os.path.basename(os.path.dirname(os.path.dirname(d))) for d in self.dir_strs]

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this cgroup."""
        for d in self.dir_strs:
            _write(os.path.join(d, "cgroup.procs"), str(pid))

    def join(self) -> None:
        """Move the calling process, which must be single-threaded (as a freshly forked child
        is), into this cgroup. On v1 by writing "0" to `tasks`: moving only the calling thread
        spares the kernel's global threadgroup lock, whose write side waits for an RCU grace
        period (5-20 ms per run here, against 0.5 ms); a single-threaded process is its
        thread. On v2 through cgroup.procs: cgroup.threads cannot cross threaded domains."""
        name = "cgroup.procs" if self.version == 2 else "tasks"
        for d in self.dir_strs:
            _write(os.path.join(d, name), "0")

    def oom_kills(self) -> int:
        for d in self.dir_strs:
            for name in ("memory.events", "memory.oom_control"):
                with contextlib.suppress(OSError):
                    for line in _read(os.path.join(d, name)).splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
        return 0

    def destroy(self) -> None:
        for d in self.dir_strs:
            remove_dir(d)


def _enable_controllers(d: str, wanted: Sequence[str]) -> None:
    """Enable `wanted` for d's children, writing only those not enabled yet: once the first
    container has done it, a run reads one file instead of taking the cgroup lock twice."""
    control = os.path.join(d, "cgroup.subtree_control")
    try:
        enabled = _read(control).split()
    except OSError:
        enabled = []
    missing = " ".join(f"+{c}" for c in wanted if c not in enabled)
    if missing:
        _write_quietly(control, missing)


def write_device_rules(d: StrPath, rules: Sequence[DeviceRule]) -> None:
    """The rules into a fresh v1 devices cgroup `d`: first what is not listed (deny all), then
    the exceptions, as the controller keeps them. In order, a file opened once for each run
    of lines that go to it (two opens for the default rules, not one per rule)."""
    for name, lines in itertools.groupby(devices.v1_lines(rules), key=lambda pair: pair[0]):
        _write_each(os.path.join(d, name), [line for _, line in lines])


def attach_device_filter(d: StrPath, rules: Sequence[DeviceRule]) -> None:
    """Load the rules' eBPF program and attach it to the cgroup v2 directory `d`: from then on
    every mknod and open of a device by a process in `d`, or below, asks it. BPF_F_ALLOW_MULTI,
    as runc: a program attached above (systemd's) still applies, a device is allowed only when
    all allow it. The attachment holds the program: both fds are closed here."""
    from imgtool.sandbox import linux  # ctypes: for a v2 container, not for every command

    program = devices.v2_program(rules)
    prog_fd = linux.bpf_prog_load(linux.BPF_PROG_TYPE_CGROUP_DEVICE, program, BPF_LICENSE, str(d))
    try:
        try:
            dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SandboxError("open cgroup", str(d), e.errno or 0) from None
        try:
            linux.bpf_prog_attach(
                dir_fd, prog_fd, linux.BPF_CGROUP_DEVICE, linux.BPF_F_ALLOW_MULTI, str(d)
            )
        finally:
            os.close(dir_fd)
    finally:
        os.close(prog_fd)


def _write_quietly(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def _subtree(d: StrPath) -> list[str]:
    """`d` and the cgroups made below it, deepest first: the order they can be removed in."""
    found: list[str] = []
    todo = [os.fspath(d)]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError), os.scandir(current) as entries:
            todo += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    return found[::-1]


def _pids_in(d: StrPath) -> list[int]:
    pids = []
    for sub in _subtree(d):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in _read(os.path.join(sub, "cgroup.procs")).split()]
    return pids


def _wait_empty(d: StrPath, deadline: float) -> bool:
    """Whether cgroup `d` (and below) was empty before `deadline` (time.monotonic)."""
    while _pids_in(d):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _freezer_of(d: StrPath) -> str | None:
    """What freezes cgroup `d`: `d` itself on v2, its twin in the v1 freezer hierarchy (where
    the container has one), else nothing."""
    d = os.fspath(d)
    if os.path.exists(os.path.join(d, "cgroup.freeze")):
        return d
    freezer = _v1_freezer()
    # the parts of `d` below CGROUP_ROOT, past the hierarchy's own directory
    root = os.path.normpath(CGROUP_ROOT)
    rel = os.path.normpath(d)
    if not rel.startswith(root.rstrip("/") + "/"):
        return None
    below = [p for p in rel[len(root.rstrip("/")) + 1 :].split("/") if p][1:]
    if freezer is None or not below:
        return None
    twin = os.path.join(freezer, *below)
    return twin if os.path.exists(os.path.join(twin, "freezer.state")) else None


def _freeze(f: str, frozen: bool, deadline: float = 0) -> bool:
    """Freeze (or thaw) cgroup `f` and, freezing, wait until every process in it has stopped
    or `deadline` has passed. False when the freezer cannot be written."""
    v2 = os.path.exists(os.path.join(f, "cgroup.freeze"))
    if v2:
        written = _write_quietly(os.path.join(f, "cgroup.freeze"), "1" if frozen else "0")
    else:
        state = "FROZEN" if frozen else "THAWED"
        written = _write_quietly(os.path.join(f, "freezer.state"), state)
    while written and frozen and not _is_frozen(f, v2) and time.monotonic() < deadline:
        time.sleep(0.002)
    return written


def _is_frozen(f: str, v2: bool) -> bool:
    try:
        if v2:
            return "frozen 1" in _read(os.path.join(f, "cgroup.events")).splitlines()
        return _read(os.path.join(f, "freezer.state")).strip() == "FROZEN"
    except OSError:
        return False


def kill_all(d: StrPath, seconds: float = 2) -> bool:
    """SIGKILL every process in cgroup `d` and below; whether none is left within `seconds`
    (one in uninterruptible sleep dies when it wakes). cgroup.kill (v2, Linux 5.14) does it in
    the kernel, forks included. Otherwise the cgroup is frozen so that nothing forks between
    the listing and the kills, every process listed is killed, and it is thawed so that the
    kills land; again while anything is left."""
    deadline = time.monotonic() + seconds
    if _write_quietly(os.path.join(d, "cgroup.kill"), "1") and _wait_empty(d, deadline):
        return True
    freezer = _freezer_of(d)
    while _pids_in(d):
        if time.monotonic() > deadline:
            return False
        frozen = freezer is not None and _freeze(freezer, True, deadline)
        try:
            for pid in _pids_in(d):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if frozen and freezer is not None:
                _freeze(freezer, False)
        _wait_empty(d, min(deadline, time.monotonic() + 0.1))
    return True


def remove_dir(d: StrPath) -> None:
    """Kill whatever is left in cgroup `d` (kill_all), then remove it and anything made below
    it. Gives up after a few seconds: the cgroup stays, stale, for the next command to retry."""
    try:  # the common case, in one call: nothing left in it, nothing made below it
        os.rmdir(d)
        return
    except FileNotFoundError:
        return
    except OSError:  # busy: a process, or a cgroup below it
        pass
    kill_all(d)
    for attempt in range(10):
        try:
            for sub in _subtree(d):
                os.rmdir(sub)
            return
        except OSError:
            if not os.path.exists(d):
                return
        time.sleep(0.01 * (attempt + 1))
        kill_all(d, 0.2)  # a straggler


def _bases() -> list[str]:
    if version() == 2:
        return [os.path.join(CGROUP_ROOT, PARENT)]
    hierarchies = (*V1_HIERARCHIES, "cpu,cpuacct", "freezer")
    return [os.path.join(CGROUP_ROOT, c, PARENT) for c in hierarchies]


def dirs_of(cid: str) -> list[str]:
    """The cgroup directories of one container, wherever they exist."""
    return [os.path.join(b, cid) for b in _bases() if os.path.isdir(os.path.join(b, cid))]


def is_empty(d: StrPath) -> bool:
    return not _pids_in(d)


def stale() -> list[str]:
    """Container cgroups whose owner is gone: nobody holds the container's liveness lock (see
    the module docstring for why that is never a starting container). Some may still hold
    processes, which outlived their owner: remove_dir kills them. Every store's containers
    share the hierarchy: liveness comes from the host-wide lock."""
    out = []
    for b in _bases():
        if os.path.isdir(b) and not os.path.islink(b):
            # scandir: every `run` walks every container's cgroup on the host, in each
            # hierarchy; its entries say which are directories without a stat of each
            with os.scandir(b) as entries:
                dirs = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
            out += [os.path.join(b, name) for name in dirs if not liveness.held(name)]
    return out


MIN_MEMORY = 6 << 20  # Docker's floor: "Minimum memory limit allowed is 6MB"


def parse_memory(text: str) -> int | None:
    """Docker's `-m` (go-units' RAMInBytes, as containerfile/values.byte_size reads it): 256m,
    1g, 512k, 1024 (bytes), binary units; 0 means no limit. Raises ValueError naming the value
    for anything else (negative, nan, inf, exponents, overflow)."""
    # imported here: it loads the Containerfile parser, which `run` without -m never needs
    from imgtool.containerfile.values import byte_size

    try:
        value = byte_size(text)
    except ValueError:
        raise ValueError(
            f"invalid memory size {text!r} (use e.g. 256m or 1g; 0 for no limit)"
        ) from None
    if value == 0:
        return None
    if value < MIN_MEMORY:
        raise ValueError(f"memory limit {text!r} is below the minimum of 6m")
    if value > (1 << 62):
        raise ValueError(f"memory limit {text!r} is too large")
    return value


def parse_cpus(text: str) -> float | None:
    """Docker's `--cpus`: a number of CPUs, in hundredths at least, at most the host's; 0 means
    no limit."""
    import math  # only when --cpus is given

    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid --cpus {text!r}: expected a number such as 1.5") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid --cpus {text!r}: expected a number such as 1.5")
    if value == 0:
        return None
    available = os.cpu_count() or 1
    if value < 0.01 or value > available:
        raise ValueError(
            f"invalid --cpus {text!r}: the range is 0.01 to {available} (CPUs on this host)"
        )
    return value


def parse_pids(value: int | None) -> int | None:
    """Docker's `--pids-limit`: 0 or less means no limit."""
    return value if value is not None and value > 0 else None
