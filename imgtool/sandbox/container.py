"""The container side: run in the child, after fork, as one ordered list of small steps.

Each step raises SandboxError(step, path, errno); the runner sends the first failure to the
parent over a pipe. Nothing here may import a module: after pivot_root the host's Python
library is out of reach, so everything used is imported at the top.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from collections.abc import Callable

from imgtool.errors import SandboxError
from imgtool.sandbox import linux, seccomp
from imgtool.sandbox.spec import CAP_NUMBERS, MASKED_PATHS, READONLY_PATHS, SandboxSpec

NS_FLAGS = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWCGROUP
DEV_NODES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
)


def _guard(step: str, path: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except SandboxError:
        raise
    except OSError as e:
        raise SandboxError(step, path, e.errno or 0) from None


def unshare_namespaces(spec: SandboxSpec) -> None:
    if spec.network == "bridge":  # its network namespace was made and wired beforehand
        linux.setns(spec.netns, linux.CLONE_NEWNET)
    flags = NS_FLAGS | (0 if spec.network in ("host", "bridge") else linux.CLONE_NEWNET)
    if spec.network == "host":
        flags &= ~linux.CLONE_NEWUTS  # the host's network keeps the host's name, as in docker
    linux.unshare(flags)


def private_mounts(spec: SandboxSpec) -> None:
    linux.mount("none", "/", "", linux.MS_REC | linux.MS_PRIVATE)


def mount_rootfs(spec: SandboxSpec) -> None:
    # short relative lower dir names keep the option string under one page
    _guard("chdir", spec.layers_dir, lambda: os.chdir(spec.layers_dir))
    lower = ":".join(reversed(spec.lower_dirs))  # overlay lists the top layer first
    if spec.lower_dirs:
        opts = f"lowerdir={lower},upperdir={spec.upper_dir},workdir={spec.work_dir}"
        linux.mount("overlay", spec.rootfs, "overlay", 0, opts)
    else:  # FROM scratch: an empty lower layer is not allowed, bind the upper dir
        linux.mount(spec.upper_dir, spec.rootfs, "", linux.MS_BIND)
    os.chdir("/")


def _mkdir_in_root(root: str, path: str, mode: int = 0o755) -> str:
    target = os.path.join(root, path.lstrip("/"))
    _guard("mkdir", target, lambda: os.makedirs(target, mode, exist_ok=True))
    return target


def _ensure_file(root: str, path: str) -> str:
    target = os.path.join(root, path.lstrip("/"))
    if not os.path.lexists(target):
        _mkdir_in_root(root, os.path.dirname(path))
        _guard("create", target, lambda: os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644)))
    return target


def mount_kernel_filesystems(spec: SandboxSpec) -> None:
    root = spec.rootfs
    nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    linux.mount("proc", _mkdir_in_root(root, "/proc"), "proc", nosuid_nodev_noexec)
    sys_target = _mkdir_in_root(root, "/sys")
    if spec.network == "host":  # sysfs shows the network namespace it is mounted in
        linux.mount("/sys", sys_target, "", linux.MS_BIND | linux.MS_REC)
        linux.mount("/sys", sys_target, "", linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
    else:
        linux.mount("sysfs", sys_target, "sysfs", nosuid_nodev_noexec | linux.MS_RDONLY)
    dev = _mkdir_in_root(root, "/dev")
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID, "mode=755,size=65536k")
    for name, major, minor in DEV_NODES:
        path = os.path.join(dev, name)
        _guard(
            "mknod",
            path,
            lambda p=path, a=major, b=minor: os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(a, b)),
        )
        os.chmod(path, 0o666)
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))
    pts = _mkdir_in_root(root, "/dev/pts")
    linux.mount(
        "devpts",
        pts,
        "devpts",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    shm = _mkdir_in_root(root, "/dev/shm")
    linux.mount("shm", shm, "tmpfs", nosuid_nodev_noexec, "mode=1777,size=65536k")
    mqueue = _mkdir_in_root(root, "/dev/mqueue")
    linux.mount("mqueue", mqueue, "mqueue", nosuid_nodev_noexec)


def mount_etc_files(spec: SandboxSpec) -> None:
    for path, source in spec.etc_files.items():
        target = _ensure_file(spec.rootfs, path)
        linux.mount(source, target, "", linux.MS_BIND)


def mount_volumes(spec: SandboxSpec) -> None:
    for m in spec.mounts:
        if os.path.isdir(m.source):
            target = _mkdir_in_root(spec.rootfs, m.target)
        else:
            target = _ensure_file(spec.rootfs, m.target)
        linux.mount(m.source, target, "", linux.MS_BIND | linux.MS_REC)
        if m.readonly:
            linux.mount(
                m.source,
                target,
                "",
                linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_REC,
            )


def enter_rootfs(spec: SandboxSpec) -> None:
    """pivot_root(".", "."), then detach the old root stacked under the new one."""
    _guard("chdir", spec.rootfs, lambda: os.chdir(spec.rootfs))
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    if spec.readonly_rootfs:
        linux.mount("/", "/", "", linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)


def mask_paths(spec: SandboxSpec) -> None:
    for path in MASKED_PATHS:
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY)
        else:
            linux.mount("/dev/null", path, "", linux.MS_BIND)
    for path in READONLY_PATHS:
        if os.path.lexists(path):
            linux.mount(path, path, "", linux.MS_BIND | linux.MS_REC)
            linux.mount(
                path, path, "", linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_REC
            )


def set_hostname(spec: SandboxSpec) -> None:
    if spec.network != "host":
        linux.sethostname(spec.hostname)


def network(spec: SandboxSpec) -> None:
    if spec.network == "none":
        _guard("loopback up", "lo", linux.loopback_up)


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [
                line.rstrip("\n").split(":")
                for line in f
                if line.strip() and not line.startswith("#")
            ]
    except OSError:
        return []


def resolve_user(user: str) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home) from the container's /etc/passwd and /etc/group."""
    name, _, group = user.partition(":")
    passwd = _read_db("/etc/passwd")
    groups = _read_db("/etc/group")
    entry = None
    if name == "" or name.isdigit():
        uid = int(name or 0)
        entry = next((p for p in passwd if len(p) > 3 and p[2] == str(uid)), None)
    else:
        entry = next((p for p in passwd if p and p[0] == name), None)
        if entry is None:
            raise SandboxError(
                "resolve user", "/etc/passwd", 0, f"no user {name!r} in the image's /etc/passwd"
            )
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and len(entry) > 3 else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in groups if g and g[0] == group), None)
            if g is None:
                raise SandboxError(
                    "resolve group",
                    "/etc/group",
                    0,
                    f"no group {group!r} in the image's /etc/group",
                )
            gid = int(g[2])
    login = entry[0] if entry else ""
    extra = [int(g[2]) for g in groups if len(g) > 3 and login and login in g[3].split(",")]
    home = entry[5] if entry is not None and len(entry) > 5 and entry[5] else "/"
    return uid, gid, sorted(set(extra) - {gid}), home


def workdir(spec: SandboxSpec) -> None:
    # docker creates a missing working directory (as root, before the user switch)
    _guard("mkdir", spec.cwd, lambda: os.makedirs(spec.cwd, 0o755, exist_ok=True))


def capabilities_and_user(spec: SandboxSpec) -> tuple[int, int]:
    uid, gid, extra, home = resolve_user(spec.user)
    spec.env.setdefault("HOME", home)
    if spec.seccomp:  # now, while CAP_SYS_ADMIN is still there: it allows what is left to do
        seccomp.install()
    keep = 0
    for name in spec.caps:
        keep |= 1 << CAP_NUMBERS[name]
    for cap in range(linux.last_cap() + 1):
        if not keep & (1 << cap):
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    with _suppress_einval():
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    _guard("setgroups", spec.user, lambda: os.setgroups(extra))
    _guard("setgid", spec.user, lambda: os.setgid(gid))
    _guard("setuid", spec.user, lambda: os.setuid(uid))  # for uid != 0 this clears every cap
    if uid == 0:
        linux.capset(keep, keep, 0)
    if spec.no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    return uid, gid


class _suppress_einval:
    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: object, exc: object, tb: object) -> bool:
        return isinstance(exc, SandboxError) and exc.errno == errno.EINVAL


def chdir_workdir(spec: SandboxSpec) -> None:
    _guard("chdir", spec.cwd, lambda: os.chdir(spec.cwd))


# The order matters: mounts before pivot_root, the network while host modules can still be
# imported, masks after /proc exists in the new root, the user switch last (runner).
SETUP_STEPS: tuple[Callable[[SandboxSpec], None], ...] = (
    private_mounts,
    network,
    mount_rootfs,
    mount_kernel_filesystems,
    mount_etc_files,
    mount_volumes,
    enter_rootfs,
    mask_paths,
    set_hostname,
    workdir,
)


def find_executable(argv0: str, env: dict[str, str]) -> str:
    if "/" in argv0:
        return argv0
    for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(
        ":"
    ):
        candidate = os.path.join(d or ".", argv0)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SandboxError("exec", argv0, errno.ENOENT, "executable file not found in $PATH")


def run_init(pid: int) -> None:
    """A minimal init (docker's --init): forward signals to the command, reap every zombie,
    exit with the command's status."""

    def forward(sig: int, _: object) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGWINCH,
    ):
        signal.signal(sig, forward)
    while True:
        try:
            reaped, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if reaped == pid:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))
