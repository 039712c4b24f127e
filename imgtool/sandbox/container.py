"""The container side: run in the child, after fork, as one ordered list of small steps.

Each step raises SandboxError(step, path, errno); the runner sends the first failure to the
parent over a pipe. Nothing here may import a module: after pivot_root the host's Python
library is out of reach, so everything used is imported at the top.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
from collections.abc import Callable

from imgtool import inroot
from imgtool.errors import SandboxError
from imgtool.sandbox import linux, mountpoints
from imgtool.sandbox.spec import (
    CAP_NUMBERS,
    MASKED_PATHS,
    READONLY_PATHS,
    SandboxSpec,
    TmpfsMount,
)

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
    if spec.lower_dirs:
        opts = _overlay_options(spec)
        volatile = spec.volatile and len(opts) + len(VOLATILE) <= OVERLAY_OPTIONS_MAX
        if not (volatile and _mounted_volatile(spec.rootfs, opts)):
            linux.mount("overlay", spec.rootfs, "overlay", 0, opts)
    else:  # FROM scratch: an empty lower layer is not allowed, bind the upper dir
        linux.mount(spec.upper_dir, spec.rootfs, "", linux.MS_BIND)
    os.chdir("/")


OVERLAY_OPTIONS_MAX = 4095  # mount(2) copies one page of options, its NUL included
VOLATILE = ",volatile"


def _overlay_options(spec: SandboxSpec) -> str:
    """The overlay's options, within the page mount(2) copies: past it the kernel cuts off
    the work dir's path. The store's layer of mount points is left out first (the set-up then
    makes them in the upper dir); an image whose own layers do not fit is an error."""
    lowers = spec.lower_dirs
    for names in (lowers, [d for d in lowers if d != mountpoints.NAME]):
        lower = ":".join(reversed(names))  # overlay lists the top layer first
        opts = f"lowerdir={lower},upperdir={spec.upper_dir},workdir={spec.work_dir}"
        if len(opts.encode()) <= OVERLAY_OPTIONS_MAX:
            return opts
    why = f"{len(names)} layers: more than one overlay mount can name"
    raise SandboxError("mount overlay", spec.rootfs, errno.E2BIG, why)


def _mounted_volatile(rootfs: str, opts: str) -> bool:
    """The overlay mounted `volatile`, for an upper dir that is thrown away at exit: then its
    unmount does not sync the host's file system (on the first run after a pull that wrote
    back the whole pull: ~0.5 s), nor does an fsync inside. False on a kernel without the
    option (before 5.10)."""
    try:
        linux.mount("overlay", rootfs, "overlay", 0, opts + VOLATILE)
    except SandboxError as e:
        if e.errno != errno.EINVAL:
            raise
        return False
    return True


def _opened_target(root_fd: int, path: str, is_file: bool) -> int:
    """The mount point `path` of the container, resolved inside its root (an image's symlink
    means what it means in the image, never a host path), made when missing."""
    try:
        if is_file:
            return inroot.ensure_file(root_fd, path)
        return inroot.mkdirs(root_fd, path)
    except OSError as e:
        raise SandboxError("mount point", path, e.errno or 0) from None


def _mount_at(
    root_fd: int,
    path: str,
    source: str,
    fstype: str,
    flags: int = 0,
    data: str = "",
    is_file: bool = False,
) -> None:
    """mount(2) onto the descriptor of a mount point found inside the root, as crun does."""
    fd = _opened_target(root_fd, path, is_file)
    try:
        linux.mount(source, inroot.fd_path(fd), fstype, flags, data)
    except SandboxError as e:
        raise SandboxError(e.step, path, e.errno) from None
    finally:
        os.close(fd)
    if flags & linux.MS_BIND and flags & linux.MS_RDONLY:  # a bind is read-only by a remount
        _remount(root_fd, path, linux.MS_BIND | linux.MS_RDONLY | (flags & linux.MS_REC), is_file)


def _remount(root_fd: int, path: str, flags: int, is_file: bool = False, data: str = "") -> None:
    # opened again: a descriptor taken before the mount names the directory under it
    fd = _opened_target(root_fd, path, is_file)
    try:
        linux.mount("none", inroot.fd_path(fd), "", linux.MS_REMOUNT | flags, data)
    except SandboxError as e:
        raise SandboxError(e.step, path, e.errno) from None
    finally:
        os.close(fd)


def _open_rootfs(spec: SandboxSpec) -> int:
    try:
        return inroot.open_root(spec.rootfs)
    except OSError as e:
        raise SandboxError("open", spec.rootfs, e.errno or 0) from None


NOSUID_NODEV_NOEXEC = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC


def mount_kernel_filesystems(spec: SandboxSpec) -> None:
    root_fd = _open_rootfs(spec)
    try:
        _mount_at(root_fd, "/proc", "proc", "proc", NOSUID_NODEV_NOEXEC)
        # a sysfs of its own even on the host network (it shows the namespace it is mounted
        # in): a bind of the host's /sys would bring the host's cgroup tree and other submounts
        sys_flags = NOSUID_NODEV_NOEXEC | (0 if spec.privileged else linux.MS_RDONLY)
        _mount_at(root_fd, "/sys", "sysfs", "sysfs", sys_flags)
        _mount_cgroup_view(spec, root_fd)
        _mount_dev(spec, root_fd)
    finally:
        os.close(root_fd)


def _mount_cgroup_view(spec: SandboxSpec, root_fd: int) -> None:
    """/sys/fs/cgroup shows the container's own cgroup and nothing above it, read-only: the
    container joined a new cgroup namespace inside its cgroup, and a cgroup file system mounted
    there has that cgroup as its root (Docker's view on v2; on v1 one mount per hierarchy the
    container has a cgroup in, on a tmpfs)."""
    ro = NOSUID_NODEV_NOEXEC | (0 if spec.privileged else linux.MS_RDONLY)
    if not spec.cgroup_hierarchies:
        return
    if spec.cgroup_hierarchies == ["unified"]:
        _mount_at(root_fd, "/sys/fs/cgroup", "cgroup2", "cgroup2", ro)
        return
    _mount_at(root_fd, "/sys/fs/cgroup", "tmpfs", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=755")
    for name in spec.cgroup_hierarchies:
        _mount_at(root_fd, f"/sys/fs/cgroup/{name}", "cgroup", "cgroup", ro, name)
        if "," in name:  # Docker's links: cpu -> cpu,cpuacct
            fd = _opened_target(root_fd, "/sys/fs/cgroup", False)
            try:
                for part in name.split(","):
                    with contextlib.suppress(FileExistsError):
                        os.symlink(name, part, dir_fd=fd)
            finally:
                os.close(fd)
    if not spec.privileged:
        _remount(root_fd, "/sys/fs/cgroup", linux.MS_RDONLY | NOSUID_NODEV_NOEXEC, data="mode=755")


def _mount_dev(spec: SandboxSpec, root_fd: int) -> None:
    _mount_at(root_fd, "/dev", "tmpfs", "tmpfs", linux.MS_NOSUID, "mode=755,size=65536k")
    dev = _opened_target(root_fd, "/dev", False)  # the tmpfs now mounted there
    try:
        for name, major, minor in DEV_NODES:
            _mknod(dev, name, stat.S_IFCHR, major, minor, 0o666, 0, 0)
        for name, target in DEV_LINKS:
            os.symlink(target, name, dir_fd=dev)
    finally:
        os.close(dev)
    _mount_at(
        root_fd,
        "/dev/pts",
        "devpts",
        "devpts",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    _mount_at(root_fd, "/dev/shm", "shm", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k")
    _mount_at(root_fd, "/dev/mqueue", "mqueue", "mqueue", NOSUID_NODEV_NOEXEC)
    for node in spec.devices:
        try:
            parent, name = inroot.walk_parent(root_fd, node.path, create=True)
        except OSError as e:
            raise SandboxError("mknod", node.path, e.errno or 0) from None
        try:
            kind = stat.S_IFBLK if node.kind == "b" else stat.S_IFCHR
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)  # docker replaces what the image has there
            _mknod(parent, name, kind, node.major, node.minor, node.mode, node.uid, node.gid)
        finally:
            os.close(parent)


def _mknod(
    dir_fd: int, name: str, kind: int, major: int, minor: int, mode: int, uid: int, gid: int
) -> None:
    def make() -> None:
        os.mknod(name, kind | mode, os.makedev(major, minor), dir_fd=dir_fd)
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        os.chmod(name, mode, dir_fd=dir_fd)  # not the umask's

    _guard("mknod", name, make)


def mount_etc_files(spec: SandboxSpec) -> None:
    # read-only with --read-only, as Docker's: they are part of the root file system's view
    flags = linux.MS_BIND | (linux.MS_RDONLY if spec.readonly_rootfs else 0)
    root_fd = _open_rootfs(spec)
    try:
        for path, source in spec.etc_files.items():
            _mount_at(root_fd, path, source, "", flags, is_file=True)
    finally:
        os.close(root_fd)


def mount_volumes(spec: SandboxSpec) -> None:
    root_fd = _open_rootfs(spec)
    try:
        for m in spec.mounts:
            if isinstance(m, TmpfsMount):
                size = f",size={m.size}" if m.size else ""
                flags = linux.MS_NOSUID | linux.MS_NODEV
                _mount_at(root_fd, m.target, "tmpfs", "tmpfs", flags, f"mode=1777{size}")
                continue
            flags = linux.MS_BIND | linux.MS_REC | (linux.MS_RDONLY if m.readonly else 0)
            is_file = not os.path.isdir(m.source)
            _mount_at(root_fd, m.target, m.source, "", flags, is_file=is_file)
    finally:
        os.close(root_fd)


def enter_rootfs(spec: SandboxSpec) -> None:
    """pivot_root(".", "."), then detach the old root stacked under the new one."""
    _guard("chdir", spec.rootfs, lambda: os.chdir(spec.rootfs))
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    if spec.readonly_rootfs:
        linux.mount("/", "/", "", linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)


def mask_paths(spec: SandboxSpec) -> None:
    if spec.privileged:  # as Docker's --privileged: nothing masked
        return
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
    keep = 0
    for name in spec.caps:
        keep |= 1 << CAP_NUMBERS[name]
    keep &= _bounding_set()  # what imgtool itself lacks (or the kernel lacks) is no one's
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
    # a change of credentials clears the parent-death signal: armed again, or a non-root
    # container would outlive a killed imgtool (the caller then checks the parent is alive)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if spec.no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    if spec.seccomp is not None:  # last, as runc: a strict profile cannot break the set-up
        linux.install_seccomp(spec.seccomp)  # (without no_new_privs: CAP_SYS_ADMIN)
    return uid, gid


def _bounding_set() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return (1 << (linux.last_cap() + 1)) - 1


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
