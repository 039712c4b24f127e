"""The Linux system calls Python's os module lacks (3.11): mount, umount2, unshare, pivot_root,
sethostname, prctl, capset. The one place that talks to libc through ctypes.

Every failure raises SandboxError naming the call and the path, with errno.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from imgtool.errors import SandboxError


def _load_libc() -> ctypes.CDLL:
    try:  # glibc's soname; find_library would run `ldconfig -p` to learn it, on every start
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load_libc()
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.syscall.restype = ctypes.c_long
_libc.socket.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126},
    "aarch64": {"pivot_root": 41, "capset": 91},
    "riscv64": {"pivot_root": 41, "capset": 91},
    "ppc64le": {"pivot_root": 203, "capset": 184},
    "s390x": {"pivot_root": 217, "capset": 185},
}


def _fail(call: str, path: str = "") -> SandboxError:
    return SandboxError(call, path, ctypes.get_errno())


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if (
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
        != 0
    ):
        raise _fail(f"mount {fstype or 'bind'} {source}", target)


def umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        raise _fail("umount2", target)


def setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, nstype) != 0:
            raise _fail("setns", path)
    finally:
        os.close(fd)


def setns_fd(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        raise _fail("setns", f"/proc/self/fd/{fd}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail("unshare")


def _syscall(name: str) -> int:
    machine = os.uname().machine
    nr = _SYSCALLS.get(machine, {}).get(name)
    if nr is None:
        raise SandboxError(name, detail=f"unknown syscall number on {machine}")
    return nr


def pivot_root(new_root: str, put_old: str) -> None:
    if _libc.syscall(_syscall("pivot_root"), new_root.encode(), put_old.encode()) != 0:
        raise _fail("pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        raise _fail("sethostname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    if _libc.prctl(option, arg2, arg3, arg4, arg5) != 0:
        raise _fail(f"prctl({option})")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks), _LINUX_CAPABILITY_VERSION_3."""
    header = struct.pack("Ii", 0x20080522, 0)
    data = struct.pack(
        "IIIIII",
        effective & 0xFFFFFFFF,
        permitted & 0xFFFFFFFF,
        inheritable & 0xFFFFFFFF,
        effective >> 32,
        permitted >> 32,
        inheritable >> 32,
    )
    hbuf = ctypes.create_string_buffer(header, len(header))
    dbuf = ctypes.create_string_buffer(data, len(data))
    if _libc.syscall(_syscall("capset"), hbuf, dbuf) != 0:
        raise _fail("capset")


AF_INET, SOCK_DGRAM, SOCK_CLOEXEC = 2, 2, 0o2000000


def loopback_up() -> None:
    """ip link set lo up, with the SIOCSIFFLAGS ioctl (no `ip` binary needed), on a socket
    from libc's socket(2): loading the `_socket` extension cost a container's start ~1.5 ms."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    fd = _libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)
    if fd < 0:
        raise _fail("socket", "lo")
    try:
        ifreq = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(fd, siocgifflags, ifreq))[1]
        fcntl.ioctl(fd, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))
    finally:
        os.close(fd)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def install_seccomp(program: bytes) -> None:
    """Install a classic-BPF seccomp `program` (seccomp.compile_filter's) on this thread and
    what it execs. Needs no_new_privs or CAP_SYS_ADMIN. Imports nothing: the caller may stand
    in a root without Python. Raises SandboxError when the kernel refuses it."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def set_controlling_tty(fd: int) -> None:
    import termios

    os.setsid()
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


# bpf(2), for the device cgroup's filter on cgroup v2 (uapi/linux/bpf.h)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 2
_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_VERIFIER_LOG_SIZE = 1 << 16


def _bpf(cmd: int, attr: bytes) -> int:
    """bpf(cmd, attr, size): the result, or -1 with errno set."""
    machine = os.uname().machine
    if machine not in _BPF_SYSCALL:
        raise SandboxError("bpf", detail=f"unknown syscall number on {machine}")
    buf = ctypes.create_string_buffer(attr, len(attr))
    return _libc.syscall(_BPF_SYSCALL[machine], ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))


def _prog_load_attr(
    prog_type: int, insns: ctypes.Array, license: ctypes.Array, log: ctypes.Array | None
) -> bytes:
    # the BPF_PROG_LOAD part of union bpf_attr, up to prog_name: prog_type, insn_cnt, insns,
    # license, log_level, log_size, log_buf, kern_version, prog_flags, prog_name[16]
    return struct.pack(
        "=IIQQIIQII16s",
        prog_type,
        len(insns) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license),
        1 if log is not None else 0,
        len(log) if log is not None else 0,
        ctypes.addressof(log) if log is not None else 0,
        0,
        0,
        b"imgtool",
    )


def bpf_prog_load(prog_type: int, insns: bytes, license: str, path: str) -> int:
    """Load an eBPF program (8-byte instructions) and return its fd; `path` names what it is
    for in errors. A program the verifier refuses is loaded again with its log, whose
    complaint the error carries."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    fd = _bpf(BPF_PROG_LOAD, _prog_load_attr(prog_type, code, lic, None))
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    log = ctypes.create_string_buffer(_VERIFIER_LOG_SIZE)
    retry = _bpf(BPF_PROG_LOAD, _prog_load_attr(prog_type, code, lic, log))
    if retry >= 0:  # loaded after all (a passing failure): keep it
        return retry
    # the verifier's complaint is the line before its statistics ("processed N insns ...")
    lines = [
        line
        for line in log.value.decode(errors="replace").splitlines()
        if line.strip() and not line.startswith(("processed ", "verification time"))
    ]
    raise SandboxError("bpf(BPF_PROG_LOAD)", path, err, lines[-1] if lines else "")


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int, path: str) -> None:
    """Attach a loaded program to `target_fd` (a cgroup directory: `path`)."""
    # target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd
    attr = struct.pack("=IIIII", target_fd, prog_fd, attach_type, flags, 0)
    if _bpf(BPF_PROG_ATTACH, attr) != 0:
        raise _fail("bpf(BPF_PROG_ATTACH)", path)
