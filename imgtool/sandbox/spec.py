"""What a sandbox is made of: a value that `imgtool run` and the builder's RUN steps both fill."""

from __future__ import annotations

from imgtool.sandbox.cgroups import Limits
from imgtool.sandbox.devices import DEFAULT_RULES, DeviceRule
from imgtool.values import Frozen, Value

# Docker's default capability set (moby's oci/caps/defaults.go)
DEFAULT_CAPS = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
)
CAP_NUMBERS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}

# runc's defaults: paths hidden from the container, and /proc paths it may only read
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


class BindMount(Frozen):
    __slots__ = ("source", "target", "readonly")
    source: str  # a host path
    target: str  # a path in the container
    readonly: bool

    def __init__(self, source: str, target: str, readonly: bool = False) -> None:
        self._init(source, target, readonly)


class TmpfsMount(Frozen):
    """A fresh tmpfs in the container (RUN --mount=type=tmpfs): nothing of it reaches a layer."""

    __slots__ = ("target", "size")
    target: str  # a path in the container
    size: int  # bytes; 0: the kernel's default (half of RAM)

    def __init__(self, target: str, size: int = 0) -> None:
        self._init(target, size)


DEFAULT_SECCOMP = b"default"  # not a program: the runner compiles the default profile


class DeviceNode(Frozen):
    """A host device made in the container's /dev (`--device`, `--privileged`)."""

    __slots__ = ("path", "kind", "major", "minor", "mode", "uid", "gid")
    path: str  # in the container
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int  # permission bits
    uid: int
    gid: int

    def __init__(
        self,
        path: str,
        kind: str,
        major: int,
        minor: int,
        mode: int = 0o666,
        uid: int = 0,
        gid: int = 0,
    ) -> None:
        self._init(path, kind, major, minor, mode, uid, gid)


class SandboxSpec(Value):
    """Everything the runner needs to make and start a container."""

    __slots__ = (
        "argv",
        "lower_dirs",
        "layers_dir",
        "upper_dir",
        "work_dir",
        "rootfs",
        "env",
        "cwd",
        "user",
        "hostname",
        "network",
        "netns",
        "mounts",
        "etc_files",
        "limits",
        "caps",
        "no_new_privs",
        "seccomp",
        "devices",
        "privileged",
        "device_rules",
        "cgroup_hierarchies",
        "tty",
        "stdin",
        "stdout",
        "stderr",
        "init",
        "readonly_rootfs",
        "volatile",
    )
    argv: list[str]
    lower_dirs: list[str]
    layers_dir: str
    upper_dir: str
    work_dir: str
    rootfs: str
    env: dict[str, str]
    cwd: str
    user: str
    hostname: str
    network: str
    netns: str
    mounts: list[BindMount | TmpfsMount]
    etc_files: dict[str, str]
    limits: Limits
    caps: tuple[str, ...]
    no_new_privs: bool
    seccomp: bytes | None
    devices: list[DeviceNode]
    privileged: bool
    device_rules: tuple[DeviceRule, ...] | None
    cgroup_hierarchies: list[str]
    tty: bool
    stdin: bool
    stdout: int | None
    stderr: int | None
    init: bool
    readonly_rootfs: bool
    volatile: bool

    def __init__(
        self,
        argv: list[str],
        lower_dirs: list[str],  # overlay lower dirs, relative to `layers_dir`, lowest first
        layers_dir: str,  # where the short layer names live (the mount is done from there)
        upper_dir: str,
        work_dir: str,
        rootfs: str,  # the mount point
        env: dict[str, str] | None = None,
        cwd: str = "/",
        user: str = "",  # as in the image config: "", "name", "uid", "uid:gid", "name:group"
        hostname: str = "imgtool",
        network: str = "none",  # none | host | bridge (then `netns` names the namespace to join)
        netns: str = "",
        mounts: list[BindMount | TmpfsMount] | None = None,
        etc_files: dict[str, str] | None = None,  # /etc/hosts etc -> host file
        limits: Limits | None = None,
        caps: tuple[str, ...] = DEFAULT_CAPS,
        no_new_privs: bool = True,
        # the filter of sandbox/seccomp.py: DEFAULT_SECCOMP (the default profile, compiled by
        # the runner for `caps`), a compiled program, or None: unconfined
        seccomp: bytes | None = DEFAULT_SECCOMP,
        devices: list[DeviceNode] | None = None,
        # all capabilities, every host device, no masked paths, /sys writable (the seccomp
        # filter, the device cgroup and the capability set are the caller's to drop)
        privileged: bool = False,
        # the device cgroup's allow-list (sandbox/devices.py); None: every device (--privileged)
        device_rules: tuple[DeviceRule, ...] | None = DEFAULT_RULES,
        # cgroup hierarchies the container has its own cgroup in, as mounted under
        # /sys/fs/cgroup ("unified" for v2, "memory", "cpu,cpuacct"… on v1): its read-only
        # view of them
        cgroup_hierarchies: list[str] | None = None,
        tty: bool = False,
        stdin: bool = True,
        # descriptors (of the caller's process) that become the command's stdout and stderr;
        # None: the caller's own
        stdout: int | None = None,
        stderr: int | None = None,
        init: bool = False,  # a minimal init as PID 1 that reaps zombies and forwards signals
        readonly_rootfs: bool = False,
        # an overlay whose upper dir is thrown away at exit (run --rm, a RUN step): no sync
        # of the host's file system when it is unmounted, and none of fsync inside it
        volatile: bool = False,
    ) -> None:
        self._init(
            argv,
            lower_dirs,
            layers_dir,
            upper_dir,
            work_dir,
            rootfs,
            {} if env is None else env,
            cwd,
            user,
            hostname,
            network,
            netns,
            [] if mounts is None else mounts,
            {} if etc_files is None else etc_files,
            Limits() if limits is None else limits,
            caps,
            no_new_privs,
            seccomp,
            [] if devices is None else devices,
            privileged,
            device_rules,
            [] if cgroup_hierarchies is None else cgroup_hierarchies,
            tty,
            stdin,
            stdout,
            stderr,
            init,
            readonly_rootfs,
            volatile,
        )


def resolve_caps(add: list[str], drop: list[str]) -> tuple[str, ...]:
    """Docker's --cap-add/--cap-drop over its default set (moby's TweakCapabilities): names
    with or without CAP_, any case; ALL in --cap-add gives every capability but the dropped
    ones, ALL in --cap-drop keeps only the added ones."""

    def names(values: list[str], flag: str) -> set[str]:
        out = set()
        for v in values:
            name = v.strip().upper().removeprefix("CAP_")
            if name != "ALL" and name not in CAP_NUMBERS:
                raise ValueError(f"{flag} {v!r}: unknown capability")
            out.add(name)
        return out

    adds, drops = names(add, "--cap-add"), names(drop, "--cap-drop")
    if "ALL" in adds:
        caps = set(CAP_NUMBERS) - drops
    elif "ALL" in drops:
        caps = adds
    else:
        caps = (set(DEFAULT_CAPS) - drops) | adds
    return tuple(sorted(caps, key=CAP_NUMBERS.__getitem__))
