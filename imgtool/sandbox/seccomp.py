"""The container's seccomp filter: a classic-BPF program that refuses the system calls a
container has no business making, installed last, just before exec.

Docker's default profile is an allow-list of ~350 calls; for a container without extra
capabilities it differs from "allow everything" in what is reachable *without* capabilities
(capabilities already stop the rest) and in what is kernel attack surface. Those are refused here
with EPERM, as Docker's profile does:
- user namespaces: clone/unshare with CLONE_NEWUSER (container root would get a fresh set of
  capabilities over new namespaces); clone3 gets ENOSYS, its flags are out of BPF's reach, and
  libc then falls back to clone;
- keyrings (add_key, keyctl, request_key: not namespaced), bpf, perf_event_open, userfaultfd;
- kernel modules, kexec, open_by_handle_at (the "shocker" escape), mount API, swap, reboot,
  accounting, clock and quota changes, ioperm/iopl, and obsolete calls.
On x86_64 the i386 ABI (int 0x80) is checked with its own numbers and the x32 ABI is refused.
`imgtool run --security-opt seccomp=unconfined` runs without it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from imgtool.errors import SandboxError
from imgtool.sandbox import linux

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000

# classic BPF opcodes
LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
RET = 0x06  # BPF_RET | BPF_K

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # args[0]'s low half (little-endian)

# fmt: off
DENIED = (
    "add_key", "keyctl", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms",
    "query_module", "kexec_load", "kexec_file_load", "open_by_handle_at",
    "mount", "umount", "umount2", "pivot_root", "setns", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "nfsservctl",
    "lookup_dcookie", "settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex",
    "clock_adjtime", "clock_adjtime64", "iopl", "ioperm", "vm86", "vm86old", "uselib",
    "_sysctl", "syslog",
)
# fmt: on
FLAG_CHECKED = ("clone", "unshare")  # refused with CLONE_NEWUSER in their first argument
NOT_IMPLEMENTED = ("clone3",)

# syscall numbers, from the kernel's unistd headers (asm/unistd_64.h, unistd_32.h, and
# asm-generic/unistd.h for arm64)
# fmt: off
NUMBERS: dict[int, dict[str, int]] = {
    AUDIT_ARCH_X86_64: {
        "clone": 56, "syslog": 103, "uselib": 134, "pivot_root": 155, "_sysctl": 156,
        "adjtimex": 159, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166,
        "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
        "create_module": 174, "init_module": 175, "delete_module": 176, "get_kernel_syms": 177,
        "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
        "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249,
        "keyctl": 250, "unshare": 272, "perf_event_open": 298, "open_by_handle_at": 304,
        "clock_adjtime": 305, "setns": 308, "finit_module": 313, "kexec_file_load": 320,
        "bpf": 321, "userfaultfd": 323, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "mount_setattr": 442,
        "quotactl_fd": 443,
    },
    AUDIT_ARCH_I386: {
        "mount": 21, "umount": 22, "stime": 25, "acct": 51, "umount2": 52, "settimeofday": 79,
        "uselib": 86, "swapon": 87, "reboot": 88, "ioperm": 101, "syslog": 103, "iopl": 110,
        "vm86old": 113, "swapoff": 115, "clone": 120, "adjtimex": 124, "create_module": 127,
        "init_module": 128, "delete_module": 129, "get_kernel_syms": 130, "quotactl": 131,
        "_sysctl": 149, "vm86": 166, "query_module": 167, "nfsservctl": 169, "pivot_root": 217,
        "lookup_dcookie": 253, "clock_settime": 264, "kexec_load": 283, "add_key": 286,
        "request_key": 287, "keyctl": 288, "unshare": 310, "perf_event_open": 336,
        "open_by_handle_at": 342, "clock_adjtime": 343, "setns": 346, "finit_module": 350,
        "bpf": 357, "userfaultfd": 374, "clock_settime64": 404, "clock_adjtime64": 405,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "clone3": 435, "mount_setattr": 442, "quotactl_fd": 443,
    },
    AUDIT_ARCH_AARCH64: {
        "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41, "nfsservctl": 42,
        "quotactl": 60, "acct": 89, "unshare": 97, "kexec_load": 104, "init_module": 105,
        "delete_module": 106, "clock_settime": 112, "syslog": 116, "reboot": 142,
        "settimeofday": 170, "adjtimex": 171, "add_key": 217, "request_key": 218, "keyctl": 219,
        "clone": 220, "swapon": 224, "swapoff": 225, "perf_event_open": 241,
        "open_by_handle_at": 265, "clock_adjtime": 266, "setns": 268, "finit_module": 273,
        "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "clone3": 435, "mount_setattr": 442, "quotactl_fd": 443,
    },
}
# fmt: on
NATIVE = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}
# the other ABIs a process of the native one can use
ABIS = {
    AUDIT_ARCH_X86_64: (AUDIT_ARCH_X86_64, AUDIT_ARCH_I386),
    AUDIT_ARCH_AARCH64: (AUDIT_ARCH_AARCH64,),
}


@dataclass(frozen=True)
class Insn:
    code: int
    k: int = 0
    jt: str | int = 0  # a label, or 0 for the next instruction
    jf: str | int = 0


def _arch_block(arch: int) -> list[tuple[str, Insn]]:
    """The checks for one ABI, entered with nothing loaded; ends in a return on every path."""
    nums = NUMBERS[arch]
    p = f"a{arch:x}"
    out = [("", Insn(LD_ABS, OFF_NR))]
    if arch == AUDIT_ARCH_X86_64:
        out.append(("", Insn(JGE, X32_SYSCALL_BIT, f"{p}.enosys")))
    for name in DENIED:
        if name in nums:
            out.append(("", Insn(JEQ, nums[name], f"{p}.eperm")))
    for name in NOT_IMPLEMENTED:
        out.append(("", Insn(JEQ, nums[name], f"{p}.enosys")))
    for name in FLAG_CHECKED:
        out.append(("", Insn(JEQ, nums[name], f"{p}.flags")))
    out += [
        ("", Insn(RET, RET_ALLOW)),
        (f"{p}.flags", Insn(LD_ABS, OFF_ARG0)),
        ("", Insn(JSET, CLONE_NEWUSER, f"{p}.eperm")),
        ("", Insn(RET, RET_ALLOW)),
        (f"{p}.eperm", Insn(RET, RET_ERRNO | errno.EPERM)),
        (f"{p}.enosys", Insn(RET, RET_ERRNO | errno.ENOSYS)),
    ]
    return out


def program(native: int) -> list[tuple[int, int, int, int]]:
    """The filter for a process of the `native` ABI, as (code, jt, jf, k) instructions. A call
    through an ABI the filter does not know is killed: it could reach anything."""
    abis = ABIS[native]
    labelled: list[tuple[str, Insn]] = [("", Insn(LD_ABS, OFF_ARCH))]
    labelled += [("", Insn(JEQ, abi, f"abi{abi:x}")) for abi in abis]
    labelled.append(("", Insn(RET, RET_KILL_PROCESS)))
    for abi in abis:
        block = _arch_block(abi)
        block[0] = (f"abi{abi:x}", block[0][1])
        labelled += block
    where = {label: i for i, (label, _) in enumerate(labelled) if label}
    out = []
    for i, (_, insn) in enumerate(labelled):
        jumps = []
        for target in (insn.jt, insn.jf):
            offset = 0 if target == 0 else where[target] - i - 1
            if not 0 <= offset <= 255:
                raise AssertionError(f"seccomp jump of {offset} does not fit")
            jumps.append(offset)
        out.append((insn.code, jumps[0], jumps[1], insn.k))
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def native_arch() -> int | None:
    return NATIVE.get(os.uname().machine)


def install() -> None:
    """Install the filter on this thread (and what it execs). Needs no_new_privs or
    CAP_SYS_ADMIN. Raises SandboxError on a machine whose ABI has no table here."""
    native = native_arch()
    if native is None:
        raise SandboxError(
            "seccomp",
            detail=f"no filter for {os.uname().machine}: use --security-opt seccomp=unconfined",
        )
    insns = program(native)
    raw = b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(insns), ctypes.addressof(buf))
    linux.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))
