"""What a sandbox is made of: a value that `imgtool run` and the builder's RUN steps both fill."""

from __future__ import annotations

from dataclasses import dataclass, field

from imgtool.sandbox.cgroups import Limits

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


@dataclass(frozen=True)
class BindMount:
    source: str  # a host path
    target: str  # a path in the container
    readonly: bool = False


@dataclass
class SandboxSpec:
    argv: list[str]
    lower_dirs: list[str]  # overlay lower dirs, relative to `layers_dir`, lowest layer first
    layers_dir: str  # where the short layer names live (the mount is done from there)
    upper_dir: str
    work_dir: str
    rootfs: str  # the mount point
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    user: str = ""  # as in the image config: "", "name", "uid", "uid:gid", "name:group"
    hostname: str = "imgtool"
    network: str = "none"  # none | host | bridge (then `netns` names the namespace to join)
    netns: str = ""
    mounts: list[BindMount] = field(default_factory=list)
    etc_files: dict[str, str] = field(default_factory=dict)  # /etc/hosts etc -> host file
    limits: Limits = field(default_factory=Limits)
    caps: tuple[str, ...] = DEFAULT_CAPS
    no_new_privs: bool = True
    seccomp: bool = True  # the filter of sandbox/seccomp.py (`--security-opt seccomp=unconfined`)
    tty: bool = False
    stdin: bool = True
    init: bool = False  # a minimal init as PID 1 that reaps zombies and forwards signals
    readonly_rootfs: bool = False
