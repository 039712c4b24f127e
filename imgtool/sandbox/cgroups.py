"""cgroup limits for a container, on cgroup v2 (unified) and v1 (one hierarchy per controller).

v2 when /sys/fs/cgroup is a cgroup2 mount (cgroup.controllers there); otherwise v1 with the
memory, cpu and pids hierarchies under /sys/fs/cgroup/<controller>. A hybrid host (v1
controllers, an empty v2 tree at /sys/fs/cgroup/unified) is v1 for limits. Each container gets
`imgtool/<id>` in every hierarchy it uses; it is removed when the container ends, and stale ones
are removed by the next imgtool command.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from imgtool.errors import SandboxError
from imgtool.sandbox import liveness

CGROUP_ROOT = Path(os.environ.get("IMGTOOL_CGROUP_ROOT", "/sys/fs/cgroup"))
PARENT = "imgtool"
CPU_PERIOD = 100_000


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpus, self.pids))


def version() -> int:
    return 2 if (CGROUP_ROOT / "cgroup.controllers").exists() else 1


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise SandboxError("cgroup write", str(path), e.errno or 0, f"value {value!r}") from None


def _v1_dir(controller: str) -> Path:
    for name in (controller, f"{controller},cpuacct", f"cpuacct,{controller}"):
        p = CGROUP_ROOT / name
        if p.is_dir():
            return p
    raise SandboxError(
        "cgroup v1", str(CGROUP_ROOT / controller), 0, f"the {controller} controller is not mounted"
    )


class Cgroup:
    """The cgroup(s) of one container."""

    def __init__(self, cid: str, limits: Limits) -> None:
        self.cid = cid
        self.limits = limits
        self.version = version()
        self.dirs: list[Path] = []

    def _paths(self) -> dict[str, Path]:
        if self.version == 2:
            return {"unified": CGROUP_ROOT / PARENT / self.cid}
        wanted = ["memory", "pids", "cpu"]
        return {c: _v1_dir(c) / PARENT / self.cid for c in wanted}

    def create(self) -> Cgroup:
        paths = self._paths()
        if self.version == 2:
            parent = CGROUP_ROOT / PARENT
            parent.mkdir(exist_ok=True)
            available = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
            enable = " ".join(f"+{c}" for c in ("memory", "pids", "cpu") if c in available)
            if enable:
                for d in (CGROUP_ROOT, parent):
                    with contextlib.suppress(OSError):
                        (d / "cgroup.subtree_control").write_text(enable)
        for p in paths.values():
            try:
                p.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SandboxError("mkdir cgroup", str(p), e.errno or 0) from None
            self.dirs.append(p)
        self._apply(paths)
        return self

    def _apply(self, paths: dict[str, Path]) -> None:
        lim = self.limits
        if self.version == 2:
            d = paths["unified"]
            if lim.memory is not None:
                _write(d / "memory.max", str(lim.memory))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
            if lim.cpus is not None:
                _write(d / "cpu.max", f"{int(lim.cpus * CPU_PERIOD)} {CPU_PERIOD}")
            if lim.pids is not None:
                _write(d / "pids.max", str(lim.pids))
            return
        if lim.memory is not None:
            m = paths["memory"]
            _write(m / "memory.limit_in_bytes", str(lim.memory))
            if (m / "memory.memsw.limit_in_bytes").exists():
                _write(m / "memory.memsw.limit_in_bytes", str(lim.memory))
        if lim.cpus is not None:
            c = paths["cpu"]
            _write(c / "cpu.cfs_period_us", str(CPU_PERIOD))
            _write(c / "cpu.cfs_quota_us", str(int(lim.cpus * CPU_PERIOD)))
        if lim.pids is not None:
            _write(paths["pids"] / "pids.max", str(lim.pids))

    def add(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def oom_kills(self) -> int:
        for d in self.dirs:
            for name in ("memory.events", "memory.oom_control"):
                with contextlib.suppress(OSError):
                    for line in (d / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
        return 0

    def destroy(self) -> None:
        for d in self.dirs:
            remove_dir(d)


def remove_dir(d: Path) -> None:
    """rmdir a cgroup, killing what is left in it first (a container's processes are gone once
    its PID 1 is; this covers a monitor killed mid-way)."""
    for attempt in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            with contextlib.suppress(OSError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)
            time.sleep(0.01 * (attempt + 1))


def _bases() -> list[Path]:
    if version() == 2:
        return [CGROUP_ROOT / PARENT]
    return [CGROUP_ROOT / c / PARENT for c in ("memory", "pids", "cpu", "cpu,cpuacct")]


def dirs_of(cid: str) -> list[Path]:
    """The cgroup directories of one container, wherever they exist."""
    return [b / cid for b in _bases() if (b / cid).is_dir()]


def is_empty(d: Path) -> bool:
    try:
        return not (d / "cgroup.procs").read_text().split()
    except OSError:
        return True


def stale() -> list[Path]:
    """Container cgroups that hold no process and whose container no imgtool holds alive.
    Every store's containers share the hierarchy: liveness comes from the host-wide lock, and
    a cgroup with processes is someone's, never ours to clean."""
    out = []
    for b in _bases():
        if b.is_dir() and not b.is_symlink():
            out += [
                d for d in b.iterdir() if d.is_dir() and is_empty(d) and not liveness.held(d.name)
            ]
    return out


def parse_size(text: str) -> int:
    """Docker's memory sizes: 256m, 1g, 512k, 1024 (bytes); binary units."""
    t = text.strip().lower().rstrip("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise ValueError(f"invalid size {text!r} (use e.g. 256m or 1g)") from None
