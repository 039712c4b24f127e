"""The seccomp compiler, checked by running its programs in a classic-BPF interpreter written here
from the kernel's definition (linux/filter.h): Docker's default allow-list with its argument,
capability and architecture rules, user profiles in Docker's format, the malformed ones refused.
The syscall tables are checked against the kernel's own headers where they are installed."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import random
import re
import shutil
import struct
import time
from pathlib import Path

import pytest

from imgtool.errors import SandboxError
from imgtool.sandbox import seccomp as sc
from imgtool.sandbox import seccomp_syscalls as tables
from imgtool.sandbox.spec import CAP_NUMBERS, DEFAULT_CAPS

X86_64, I386, ARM64 = sc.AUDIT_ARCH_X86_64, sc.AUDIT_ARCH_I386, sc.AUDIT_ARCH_AARCH64
TABLE = {X86_64: tables.X86_64, I386: tables.I386, ARM64: tables.AARCH64}
ALLOW, KILL_PROCESS, KILL_THREAD = 0x7FFF0000, 0x80000000, 0
TRAP, LOG, TRACE = 0x00030000, 0x7FFC0000, 0x7FF00000


def errno_ret(value: int) -> int:
    return 0x00050000 | value


EPERM, ENOSYS, EINVAL = errno_ret(errno.EPERM), errno_ret(errno.ENOSYS), errno_ret(errno.EINVAL)
AF_INET, AF_NETLINK, AF_ALG, AF_VSOCK = 2, 16, 38, 40
NETLINK_ROUTE, NETLINK_AUDIT = 0, 9
CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x00020000, 17
ADDR_NO_RANDOMIZE, PER_LINUX32 = 0x0040000, 0x0008


def run_bpf(prog: bytes, arch: int, nr: int, *args: int) -> int:
    """What the kernel's seccomp would decide for this call: the program run on seccomp_data."""
    regs = [*args, 0, 0, 0, 0, 0, 0][:6]
    data = struct.pack("=iIQ6Q", nr - (1 << 32) if nr >= 1 << 31 else nr, arch, 0, *regs)
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    assert 0 < len(insns) <= 4096
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS: aligned, inside seccomp_data
            assert k % 4 == 0 and k < len(data), k
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:  # BPF_ALU | BPF_AND | BPF_K
            acc &= k
        elif code == 0x05:  # BPF_JMP | BPF_JA
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # JEQ, JGT, JGE, JSET with K
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        assert pc < len(insns), "ran off the end"


def default_program(caps: tuple[str, ...] = DEFAULT_CAPS, machine: str = "x86_64") -> bytes:
    return sc.compile_filter(sc.default_profile(), caps, machine)


def decide(prog: bytes, arch: int, name: str, *args: int) -> int:
    return run_bpf(prog, arch, TABLE[arch][name], *args)


# the calls hostile-user testing found passing the old deny-list, which Docker refuses
REFUSED = [
    ("io_uring_setup", (1, 0), EPERM),
    ("io_uring_enter", (), EPERM),
    ("io_uring_register", (), EPERM),
    ("kcmp", (1, 1, 0, 0, 0), EPERM),
    ("move_pages", (), EPERM),
    ("personality", (ADDR_NO_RANDOMIZE,), EPERM),
    ("personality", (PER_LINUX32 | ADDR_NO_RANDOMIZE,), EPERM),
    ("socket", (AF_NETLINK, 3, NETLINK_AUDIT), EINVAL),
    ("socket", (AF_NETLINK, 3, NETLINK_AUDIT | 7 << 32), EINVAL),  # the kernel reads an int
    ("socket", (AF_NETLINK | 7 << 32, 3, NETLINK_AUDIT), EINVAL),
    ("sysfs", (3,), EPERM),
    ("ustat", (), EPERM),
    ("socket", (AF_ALG, 5, 0), EPERM),
    ("socket", (AF_VSOCK, 1, 0), EPERM),
    ("socket", (12, 1, 0), EPERM),  # AF_DECnet: gone from the kernel
    ("socket", (AF_INET | 1 << 32, 1, 0), EPERM),  # high bits set: not what they seem
    # and what the old filter refused too
    ("keyctl", (), EPERM),
    ("add_key", (), EPERM),
    ("bpf", (), EPERM),
    ("perf_event_open", (), EPERM),
    ("userfaultfd", (), EPERM),
    ("open_by_handle_at", (), EPERM),
    ("mount", (), EPERM),
    ("umount2", (), EPERM),
    ("unshare", (CLONE_NEWNS,), EPERM),
    ("unshare", (CLONE_NEWUSER,), EPERM),
    ("setns", (), EPERM),
    ("clone", (CLONE_NEWUSER | SIGCHLD,), EPERM),
    ("clone", (CLONE_NEWNS | SIGCHLD,), EPERM),
    ("clone3", (), ENOSYS),
    ("kexec_load", (), EPERM),
    ("init_module", (), EPERM),
    ("reboot", (), EPERM),
    ("swapon", (), EPERM),
    ("settimeofday", (), EPERM),
    ("clock_settime", (), EPERM),
    ("fsopen", (), EPERM),
    ("iopl", (), EPERM),
    ("syslog", (), EPERM),
    ("vhangup", (), EPERM),
    ("mbind", (), EPERM),
    ("pidfd_getfd", (), EPERM),
    ("process_madvise", (), EPERM),
]

ALLOWED = [
    ("read", ()),
    ("write", ()),
    ("openat", ()),
    ("execve", ()),
    ("mmap", ()),
    ("futex", ()),
    ("clone", (SIGCHLD,)),
    ("clone", (0x003D0F00,)),  # pthread_create's flags
    ("socket", (AF_INET, 1, 0)),
    ("socket", (1, 1, 0)),  # AF_UNIX
    ("socket", (AF_NETLINK, 3, NETLINK_ROUTE)),
    ("socket", (45, 2, 0)),  # AF_MCTP, the last family allowed
    ("personality", (0,)),
    ("personality", (PER_LINUX32,)),
    ("personality", (0xFFFFFFFF,)),
    ("ptrace", ()),  # safe since Linux 4.8, as Docker decides
    ("chroot", ()),  # CAP_SYS_CHROOT is a default capability
    ("arch_prctl", ()),
    ("modify_ldt", ()),
    ("setuid", ()),
    ("capset", ()),
    ("prctl", ()),
    ("seccomp", ()),
    ("statx", ()),
    ("fchmodat2", ()),
    ("mseal", ()),
    ("rseq", ()),
]


@pytest.mark.parametrize(("name", "args", "expected"), REFUSED)
def test_the_default_refuses_what_docker_refuses(name: str, args: tuple, expected: int) -> None:
    assert decide(default_program(), X86_64, name, *args) == expected


@pytest.mark.parametrize(("name", "args"), ALLOWED)
def test_the_default_allows_ordinary_calls(name: str, args: tuple) -> None:
    assert decide(default_program(), X86_64, name, *args) == ALLOW


def test_every_call_off_the_allow_list_is_refused() -> None:
    profile = json.loads(Path(sc.DEFAULT_PROFILE).read_text())
    allowed = set(profile["syscalls"][0]["names"]) | {"arch_prctl", "modify_ldt", "chroot"}
    allowed |= {"ptrace", "process_vm_readv", "process_vm_writev"}  # minKernel 4.8
    conditional = {"socket", "personality", "clone", "clone3"}
    prog = default_program()
    for name, nr in tables.X86_64.items():
        if name in conditional:
            continue
        expected = ALLOW if name in allowed else EPERM
        assert run_bpf(prog, X86_64, nr) == expected, name
    for nr in (max(tables.X86_64.values()) + 1, 600, 1000, 0x3FFFFFFF):  # numbers to come
        assert run_bpf(prog, X86_64, nr) == EPERM, nr


def test_capabilities_open_their_calls() -> None:
    admin = default_program((*DEFAULT_CAPS, "SYS_ADMIN"))
    for name in ("mount", "umount2", "unshare", "setns", "fsopen", "sethostname", "bpf"):
        assert decide(admin, X86_64, name, CLONE_NEWUSER) == ALLOW, name
    assert decide(admin, X86_64, "clone", CLONE_NEWUSER | SIGCHLD) == ALLOW
    assert decide(admin, X86_64, "clone3") == ALLOW
    ptrace = default_program((*DEFAULT_CAPS, "SYS_PTRACE"))
    for name in ("kcmp", "pidfd_getfd", "process_madvise"):
        assert decide(ptrace, X86_64, name) == ALLOW, name
        assert decide(admin, X86_64, name) == EPERM, name
    cases = {
        "SYS_TIME": "settimeofday",
        "SYS_BOOT": "reboot",
        "SYS_MODULE": "finit_module",
        "SYS_RAWIO": "iopl",
        "SYS_NICE": "mbind",
        "SYSLOG": "syslog",
        "PERFMON": "perf_event_open",
        "BPF": "bpf",
        "DAC_READ_SEARCH": "open_by_handle_at",
        "SYS_PACCT": "acct",
        "SYS_TTY_CONFIG": "vhangup",
    }
    for cap, name in cases.items():
        assert decide(default_program((*DEFAULT_CAPS, f"CAP_{cap}")), X86_64, name) == ALLOW
    no_chroot = default_program(tuple(c for c in DEFAULT_CAPS if c != "SYS_CHROOT"))
    assert decide(no_chroot, X86_64, "chroot") == EPERM
    audit = default_program((*DEFAULT_CAPS, "AUDIT_CONTROL"))
    assert decide(audit, X86_64, "socket", AF_NETLINK, 3, NETLINK_AUDIT) == ALLOW


def test_abis() -> None:
    prog = default_program()
    assert decide(prog, I386, "read") == ALLOW
    assert decide(prog, I386, "socketcall") == ALLOW
    assert decide(prog, I386, "kcmp") == EPERM
    assert decide(prog, I386, "personality", ADDR_NO_RANDOMIZE) == EPERM
    assert decide(prog, I386, "clone", CLONE_NEWUSER) == EPERM
    assert decide(prog, I386, "clone", SIGCHLD) == ALLOW
    assert decide(prog, I386, "io_uring_setup") == EPERM
    assert decide(prog, I386, "vm86") == EPERM
    assert decide(prog, I386, "socket", AF_NETLINK, 3, NETLINK_AUDIT) == EINVAL
    assert run_bpf(prog, X86_64, 0x40000000 | 0) == ENOSYS  # x32's read
    assert run_bpf(prog, X86_64, 0xFFFFFFFF) == ENOSYS  # -1
    assert run_bpf(prog, ARM64, 63) == KILL_PROCESS
    assert run_bpf(prog, 0x40000028, 3) == KILL_PROCESS  # arm's EABI: no table here
    arm = default_program(machine="aarch64")
    assert decide(arm, ARM64, "read") == ALLOW
    assert decide(arm, ARM64, "clone", SIGCHLD) == ALLOW
    assert decide(arm, ARM64, "clone", CLONE_NEWUSER) == EPERM
    assert decide(arm, ARM64, "unshare", CLONE_NEWUSER) == EPERM
    assert decide(arm, ARM64, "kcmp") == EPERM
    assert decide(arm, ARM64, "io_uring_setup") == EPERM
    assert decide(arm, ARM64, "socket", AF_ALG) == EPERM
    assert run_bpf(arm, X86_64, 0) == KILL_PROCESS
    with pytest.raises(SandboxError, match="no syscall table for riscv64"):
        sc.compile_filter(sc.default_profile(), DEFAULT_CAPS, "riscv64")


def test_every_socket_family() -> None:
    prog = default_program()
    refused = {12, 19, 20, 23, 25, 34, 37, AF_ALG, AF_VSOCK}  # AF_UNSPEC: the kernel says no
    for family in range(0, 60):
        expected = ALLOW if family not in refused and family < 46 else EPERM
        assert decide(prog, X86_64, "socket", family, 1, 0) == expected, family


def test_program_size_and_speed() -> None:
    profile = sc.default_profile()
    every_cap = tuple(CAP_NUMBERS)
    for machine in ("x86_64", "aarch64"):
        for caps in (DEFAULT_CAPS, every_cap, ()):
            assert len(sc.compile_filter(profile, caps, machine)) // 8 < 1024
    sc._compile.cache_clear()
    start = time.perf_counter()
    sc.compile_filter(profile, DEFAULT_CAPS)
    assert time.perf_counter() - start < 0.05  # about 2 ms here; loose for busy machines
    assert sc.compile_filter(profile, DEFAULT_CAPS) is sc.compile_filter(profile, DEFAULT_CAPS)


# user profiles


def write_profile(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def user_program(tmp_path: Path, doc: dict, caps: tuple[str, ...] = DEFAULT_CAPS) -> bytes:
    return sc.compile_filter(sc.load_profile(write_profile(tmp_path, doc)), caps, "x86_64")


def test_a_deny_list_profile(tmp_path: Path) -> None:
    prog = user_program(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"name": "getpid", "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["gettid"], "action": "SCMP_ACT_KILL"},
                {"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
                {"names": ["getuid"], "action": "SCMP_ACT_LOG"},
                {"names": ["getgid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
                {"names": ["no_such_call", "getegid"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["set_tls"], "action": "SCMP_ACT_ERRNO"},  # arm's only: skipped
            ],
        },
    )
    assert decide(prog, X86_64, "mkdir") == EPERM
    assert decide(prog, I386, "mkdir") == EPERM
    assert decide(prog, X86_64, "chmod") == errno_ret(13)
    assert decide(prog, X86_64, "getpid") == KILL_PROCESS
    assert decide(prog, X86_64, "gettid") == KILL_THREAD
    assert decide(prog, X86_64, "getppid") == TRAP
    assert decide(prog, X86_64, "getuid") == LOG
    assert decide(prog, X86_64, "getgid") == TRACE | 7
    assert decide(prog, X86_64, "getegid") == EPERM
    assert decide(prog, X86_64, "read") == ALLOW
    assert decide(prog, X86_64, "kcmp") == ALLOW
    assert run_bpf(prog, X86_64, 5000) == ALLOW


def test_architectures_a_profile_leaves_out_are_killed(tmp_path: Path) -> None:
    only64 = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"]}
    prog = user_program(tmp_path, only64)
    assert decide(prog, X86_64, "read") == ALLOW
    assert decide(prog, I386, "read") == KILL_PROCESS
    by_map = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        ],
    }
    assert decide(user_program(tmp_path, by_map), I386, "read") == ALLOW
    none_listed = user_program(tmp_path, {"defaultAction": "SCMP_ACT_ALLOW"})
    assert decide(none_listed, X86_64, "read") == ALLOW
    assert decide(none_listed, I386, "read") == KILL_PROCESS


def test_includes_and_excludes(tmp_path: Path) -> None:
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_KILL"]}},
            {
                "names": ["write"],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": ["CAP_KILL", "CAP_CHOWN"]},  # all of them
            },
            {
                "names": ["close"],
                "action": "SCMP_ACT_ALLOW",
                "excludes": {"caps": ["CAP_KILL", "CAP_CHOWN"]},  # any of them
            },
            {"names": ["dup"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
            {"names": ["dup2"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["dup3"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
            {"names": ["pipe"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["pipe2"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["poll"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "99.0"}},
        ],
    }
    kill_only = user_program(tmp_path, doc, ("KILL",))
    both = user_program(tmp_path, doc, ("KILL", "CHOWN"))
    none = user_program(tmp_path, doc, ())
    assert [decide(p, X86_64, "read") for p in (kill_only, both, none)] == [ALLOW, ALLOW, EPERM]
    assert [decide(p, X86_64, "write") for p in (kill_only, both, none)] == [EPERM, ALLOW, EPERM]
    assert [decide(p, X86_64, "close") for p in (kill_only, both, none)] == [EPERM, EPERM, ALLOW]
    assert decide(none, X86_64, "dup") == ALLOW
    assert decide(none, X86_64, "dup2") == EPERM
    assert decide(none, X86_64, "dup3") == EPERM
    assert decide(none, X86_64, "pipe") == ALLOW
    assert decide(none, X86_64, "pipe2") == EPERM
    assert decide(none, X86_64, "poll") == ALLOW


OPS = {
    "SCMP_CMP_EQ": lambda a, v, _: a == v,
    "SCMP_CMP_NE": lambda a, v, _: a != v,
    "SCMP_CMP_LT": lambda a, v, _: a < v,
    "SCMP_CMP_LE": lambda a, v, _: a <= v,
    "SCMP_CMP_GT": lambda a, v, _: a > v,
    "SCMP_CMP_GE": lambda a, v, _: a >= v,
    "SCMP_CMP_MASKED_EQ": lambda a, v, w: a & v == w,
}


@pytest.mark.parametrize("op", list(OPS))
def test_argument_comparisons_use_all_64_bits(tmp_path: Path, op: str) -> None:
    """Each operator against values that differ in the high half, the low half, or not at
    all: the program must agree with plain 64-bit arithmetic."""
    values = [0, 1, 5, 0xFFFFFFFF, 1 << 32, (1 << 32) | 5, (5 << 32) | 1, 2**64 - 1, 0x7FFF_FFFF]
    for value in values:
        arg = {"index": 2, "value": value, "valueTwo": value & 0xF0000000F, "op": op}
        doc = {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [arg]}],
        }
        prog = user_program(tmp_path, doc)
        for a in values + [value - 1 if value else 3, value + 1 if value < 2**64 - 1 else 4]:
            expected = ALLOW if OPS[op](a, value, arg["valueTwo"]) else EPERM
            assert decide(prog, X86_64, "ioctl", 0, 0, a) == expected, (op, hex(value), hex(a))


def test_the_strictest_matching_rule_wins_in_any_order(tmp_path: Path) -> None:
    rules = [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 22,
            "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}],
        },
        {
            "names": ["socket"],
            "action": "SCMP_ACT_KILL_PROCESS",
            "args": [
                {"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"},  # and
            ],
        },
    ]
    for order in (rules, rules[::-1], [rules[1], rules[0], rules[2]]):
        prog = user_program(tmp_path, {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": order})
        assert decide(prog, X86_64, "socket", 2, 1, 0) == ALLOW
        assert decide(prog, X86_64, "socket", 16, 3, 0) == EINVAL
        assert decide(prog, X86_64, "socket", 16, 3, 9) == KILL_PROCESS
        assert decide(prog, X86_64, "socket", 2, 3, 9) == ALLOW


def test_random_profiles_against_a_reference(tmp_path: Path) -> None:
    """Random rules on a few calls, decided by the program and by the semantics written out
    plainly: among the matching rules the strictest action, else the default."""
    rng = random.Random(9)
    strictness = [KILL_PROCESS, KILL_THREAD, TRAP, EPERM, errno_ret(5), TRACE, LOG, ALLOW]
    names = {KILL_PROCESS: "SCMP_ACT_KILL_PROCESS", KILL_THREAD: "SCMP_ACT_KILL_THREAD"}
    names |= {TRAP: "SCMP_ACT_TRAP", TRACE: "SCMP_ACT_TRACE", LOG: "SCMP_ACT_LOG"}
    names |= {ALLOW: "SCMP_ACT_ALLOW", EPERM: "SCMP_ACT_ERRNO", errno_ret(5): "SCMP_ACT_ERRNO"}
    interesting = [0, 1, 7, 0xFFFFFFFF, 1 << 32, (3 << 32) | 7, 2**64 - 1]
    for _ in range(30):
        rules = []
        for _ in range(rng.randint(1, 6)):
            action = rng.choice(strictness)
            args = [
                {
                    "index": rng.randint(0, 2),
                    "value": rng.choice(interesting),
                    "valueTwo": rng.choice(interesting),
                    "op": rng.choice(list(OPS)),
                }
                for _ in range(rng.randint(0, 2))
            ]
            rule = {"names": [rng.choice(["read", "write"])], "action": names[action], "args": args}
            if action in (errno_ret(5), TRACE):
                rule["errnoRet"] = 5 if action == errno_ret(5) else 0
            rules.append((action, rule))
        prog = user_program(
            tmp_path, {"defaultAction": "SCMP_ACT_LOG", "syscalls": [r for _, r in rules]}
        )
        for _ in range(40):
            call = rng.choice(["read", "write"])
            a = [rng.choice(interesting) for _ in range(3)]
            matching = [
                action
                for action, rule in rules
                if rule["names"] == [call]
                and all(
                    OPS[c["op"]](a[c["index"]], c["value"], c["valueTwo"]) for c in rule["args"]
                )
            ]
            expected = min(matching, key=strictness.index) if matching else LOG
            assert decide(prog, X86_64, call, *a) == expected, (rules, call, a)


def test_long_jumps(tmp_path: Path) -> None:
    """Hundreds of argument rules on one call: jumps past 255 instructions go through `ja`."""
    values = list(range(1000, 1400))
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "write", "close"], "action": "SCMP_ACT_ALLOW"}]
        + [
            {
                "names": ["ioctl"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 1, "value": v, "op": "SCMP_CMP_EQ"}],
            }
            for v in values
        ],
    }
    prog = user_program(tmp_path, doc)
    assert len(prog) // 8 > 1600
    for v in (values[0], values[len(values) // 2], values[-1]):
        assert decide(prog, X86_64, "ioctl", 0, v) == ALLOW
    assert decide(prog, X86_64, "ioctl", 0, 999) == EPERM
    assert decide(prog, X86_64, "ioctl", 0, 1400) == EPERM
    assert decide(prog, X86_64, "close") == ALLOW
    assert decide(prog, I386, "read") == KILL_PROCESS


def test_a_profile_too_big_for_the_kernel(tmp_path: Path) -> None:
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {
                "names": ["ioctl"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 1, "value": v, "op": "SCMP_CMP_EQ"}],
            }
            for v in range(1200)
        ],
    }
    path = write_profile(tmp_path, doc)
    with pytest.raises(SandboxError, match=r"over the kernel's limit of 4096") as e:
        sc.compile_filter(sc.load_profile(path), DEFAULT_CAPS, "x86_64")
    assert path in str(e.value)


BAD_PROFILES = [
    ("{", "not JSON"),
    ("[]", "an object was expected"),
    ({"syscalls": []}, "defaultAction: missing"),
    ({"defaultAction": "SCMP_ACT_DENY"}, "defaultAction: unknown action 'SCMP_ACT_DENY'"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY is not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}, "defaultErrnoRet: only"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}, "defaultErrnoRet: -1 is not"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": True}, "defaultErrnoRet: True"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}, "flags: not"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/x"}, "listenerPath: not"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultaction": "x"}, "defaultaction: unknown field"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86_64"]}, "unknown architecture"),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"], "archMap": [{}]},
        "archMap",
    ),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls: a list was expected"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]}, "action: missing"),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "read", "action": "x"}]},
        "syscalls[0].names: a list was expected",
    ),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [1], "action": "x"}]},
        "syscalls[0].names[0]: a string was expected",
    ),
    (
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "ALLOW"}]},
        "syscalls[0].action: unknown action 'ALLOW'",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["a"], "name": "b", "action": "SCMP_ACT_ERRNO"}],
        },
        "either name or names",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["a"], "action": "SCMP_ACT_KILL", "errnoRet": 1}],
        },
        "syscalls[0].errnoRet: only",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}],
        },
        "syscalls[0].errnoRet: 5000 is not a whole number from 0 to 4095",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW", "arg": []}],
        },
        "syscalls[0].arg: unknown field",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {
                    "names": ["a"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_MASKED"}],
                }
            ],
        },
        "syscalls[0].args[0].op: unknown operator 'SCMP_CMP_MASKED'",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {
                    "names": ["a"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
                }
            ],
        },
        "syscalls[0].args[0].index: 6 is not",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {
                    "names": ["a"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 2**64, "op": "SCMP_CMP_EQ"}],
                }
            ],
        },
        "syscalls[0].args[0].value",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1}]}
            ],
        },
        "syscalls[0].args[0].op: missing",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"cap": ["CAP_KILL"]}}
            ],
        },
        "syscalls[0].includes.cap: unknown field",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["SYS_ADMIN"]}}
            ],
        },
        "syscalls[0].includes.caps[0]: unknown capability 'SYS_ADMIN'",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["x86_64"]}}
            ],
        },
        "syscalls[0].excludes.arches[0]: unknown architecture 'x86_64'",
    ),
    (
        {
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}
            ],
        },
        "syscalls[0].includes.minKernel: '4' is not a MAJOR.MINOR version",
    ),
]


@pytest.mark.parametrize(("doc", "culprit"), BAD_PROFILES)
def test_malformed_profiles_are_refused(tmp_path: Path, doc: object, culprit: str) -> None:
    path = write_profile(tmp_path, doc)
    with pytest.raises(SandboxError) as e:
        sc.load_profile(path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"seccomp profile: {path}: "), message
    assert culprit in message, message


def test_a_missing_profile(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match=r"seccomp profile: .*nope.json: No such file"):
        sc.load_profile(str(tmp_path / "nope.json"))


def test_podman_style_fields_and_nulls_are_accepted(tmp_path: Path) -> None:
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": None,
        "flags": [],
        "syscalls": [
            {
                "names": ["read"],
                "action": "SCMP_ACT_ALLOW",
                "args": None,
                "comment": "",
                "includes": {},
                "excludes": {"caps": None},
            },
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "errno": "EPERM"},
        ],
    }
    prog = user_program(tmp_path, doc)
    assert decide(prog, X86_64, "read") == ALLOW
    assert decide(prog, X86_64, "write") == EPERM
    assert decide(prog, X86_64, "close") == ENOSYS


OTHER_ARCHES_ONLY = {
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "sync_file_range2",
    "swapcontext",
    "recv",
    "send",
    "riscv_flush_icache",
    "riscv_hwprobe",
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
}


def test_the_default_profile_names_real_calls() -> None:
    """A misspelt name would be skipped silently, as an unknown one is: every name is in a
    table here, or a call of an architecture imgtool has no table for."""
    doc = json.loads(Path(sc.DEFAULT_PROFILE).read_text())
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO" and doc["defaultErrnoRet"] == 1
    names = {n for rule in doc["syscalls"] for n in rule["names"]}
    known = set(tables.X86_64) | set(tables.I386) | set(tables.AARCH64)
    assert names - known == OTHER_ARCHES_ONLY
    assert not {"io_uring_setup", "kcmp", "move_pages", "sysfs", "ustat"} & set(
        doc["syscalls"][0]["names"]
    )


# the syscall tables against the kernel's headers

HEADERS = {
    X86_64: "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
    I386: "/usr/include/x86_64-linux-gnu/asm/unistd_32.h",
    ARM64: "/usr/include/asm-generic/unistd.h",
}
# what arm64 defines before it includes asm-generic/unistd.h
ARM64_WANTS = {
    "__ARCH_WANT_RENAMEAT",
    "__ARCH_WANT_NEW_STAT",
    "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS",
    "__ARCH_WANT_SYS_CLONE3",
    "__ARCH_WANT_MEMFD_SECRET",
}


def header_numbers(text: str, wants: set[str] | None = None) -> dict[str, int]:
    """The __NR_ numbers a unistd header defines; with `wants`, asm-generic's as a 64-bit
    architecture defining those __ARCH_WANT_ builds it: its #if lines evaluated, its aliases
    (__NR_fstat for __NR3264_fstat) followed."""
    macros: dict[str, str] = {}
    live = [True]
    for line in text.splitlines():
        words = line.split(None, 2)
        if not words or not words[0].startswith("#"):
            continue
        directive = words[0]
        if directive in ("#if", "#ifdef", "#ifndef") and wants is not None:
            cond = line.split(None, 1)[1]
            if directive != "#if":
                cond = ("!" if directive == "#ifndef" else "") + f"defined({cond.strip()})"
            cond = re.sub(r"defined\((\w+)\)", lambda m: str(m.group(1) in wants), cond)
            cond = cond.replace("__BITS_PER_LONG", "64").replace("||", " or ")
            cond = cond.replace("&&", " and ").replace("!=", "<>").replace("!", " not ")
            live.append(live[-1] and eval(cond.replace("<>", "!=")))
        elif directive == "#else" and wants is not None:
            live[-1] = live[-2] and not live[-1]
        elif directive == "#endif" and wants is not None:
            live.pop()
        elif directive == "#define" and live[-1] and len(words) == 3:
            macros[words[1]] = words[2].strip()
    found = {}
    for name, value in macros.items():
        while value in macros:
            value = macros[value]
        if name.startswith("__NR_") and value.isdigit():
            found[name[5:]] = int(value)
    found.pop("syscalls", None)
    found.pop("arch_specific_syscall", None)
    return found


@pytest.mark.parametrize("arch", [X86_64, I386, ARM64])
def test_numbers_match_the_kernel_headers(arch: int) -> None:
    header = Path(HEADERS[arch])
    if not header.exists():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    defined = header_numbers(header.read_text(), ARM64_WANTS if arch == ARM64 else None)
    assert len(defined) > 250
    for name, nr in defined.items():
        assert TABLE[arch].get(name) == nr, (name, nr, TABLE[arch].get(name))
    past = {n: nr for n, nr in TABLE[arch].items() if n not in defined}
    assert all(nr > max(defined.values()) or n in ("uretprobe", "uprobe") for n, nr in past.items())
    assert len(set(TABLE[arch].values())) == len(TABLE[arch])  # no number twice


# --- the compiled default filter kept in the store (seccomp_cache) ---

from imgtool.sandbox import seccomp_bpf  # noqa: E402
from imgtool.sandbox import seccomp_cache as cache  # noqa: E402

_real_compile = sc.compile_filter


def _default_program(caps=DEFAULT_CAPS) -> bytes:
    return _real_compile(sc.default_profile(), caps)


def _cache_file(cache_dir: Path) -> Path:
    (path,) = cache_dir.glob("*.bpf")
    return path


def _no_compiling(monkeypatch) -> list[int]:
    calls: list[int] = []

    def counting(profile, caps, machine=None):
        calls.append(1)
        return _real_compile(profile, caps, machine)

    monkeypatch.setattr(sc, "compile_filter", counting)
    return calls


def test_cache_compiles_once_then_reads_the_same_program(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache" / "seccomp"
    calls = _no_compiling(monkeypatch)
    first = cache.default_filter(DEFAULT_CAPS, cache_dir)
    second = cache.default_filter(DEFAULT_CAPS, cache_dir)
    assert first == second == _default_program()
    assert len(calls) == 1
    path = _cache_file(cache_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    assert cache.read(cache_dir, path.stem) == first


def test_cache_key_follows_caps_machine_kernel_and_compiler(tmp_path, monkeypatch):
    base = cache.cache_key(DEFAULT_CAPS, "x86_64", "6.18.0")
    assert cache.cache_key(reversed(DEFAULT_CAPS), "x86_64", "6.18.0") == base
    assert cache.cache_key([f"CAP_{c}" for c in DEFAULT_CAPS], "x86_64", "6.18.0") == base
    assert cache.cache_key((*DEFAULT_CAPS, "SYS_ADMIN"), "x86_64", "6.18.0") != base
    assert cache.cache_key(DEFAULT_CAPS, "aarch64", "6.18.0") != base
    assert cache.cache_key(DEFAULT_CAPS, "x86_64", "5.4.0") != base
    # the sources count by their files' identity: another install (copies: new inodes) is
    # another key, stable while its files stay; an edit of the profile or the compiler, even
    # one that keeps the size, is another key again
    here = tmp_path / "pkg"
    here.mkdir()
    for name in cache.COMPILER_FILES:
        shutil.copy2(os.path.join(cache._HERE, name), here / name)
    monkeypatch.setattr(cache, "_HERE", str(here))
    installed = cache.cache_key(DEFAULT_CAPS, "x86_64", "6.18.0")
    assert installed != base
    assert cache.cache_key(DEFAULT_CAPS, "x86_64", "6.18.0") == installed
    keys = {installed}
    for name in ("seccomp_default.json", "seccomp_bpf.py"):
        edited = here / name
        data = edited.read_bytes()
        before = edited.stat()
        edited.write_bytes(data[::-1])  # same size, new content
        os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
        key = cache.cache_key(DEFAULT_CAPS, "x86_64", "6.18.0")
        assert key not in keys  # the ctime moved: no one can set it back
        keys.add(key)


def test_cache_key_reads_no_source(monkeypatch):
    """The key is made from stat calls: the sources (64 kB) are not read on every run."""

    def refuse(file, *args, **kwargs):
        raise AssertionError(f"opened {file}")

    for module in (builtins, io, os):
        monkeypatch.setattr(module, "open", refuse)
    assert len(cache.cache_key(DEFAULT_CAPS, "x86_64", "6.18.0")) == 64


def test_cache_caps_give_their_own_program(tmp_path):
    cache_dir = tmp_path / "cache" / "seccomp"
    default = cache.default_filter(DEFAULT_CAPS, cache_dir)
    admin = cache.default_filter((*DEFAULT_CAPS, "SYS_ADMIN"), cache_dir)
    assert admin == _default_program((*DEFAULT_CAPS, "SYS_ADMIN")) != default
    assert len(list(cache_dir.glob("*.bpf"))) == 2


def _allow_all() -> bytes:
    return struct.pack("=HBBI", 0x06, 0, 0, ALLOW)  # BPF_RET ALLOW: what an attacker would plant


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda p, d: p.chmod(0o666), id="file-writable-by-others"),
        pytest.param(lambda p, d: p.chmod(0o620), id="file-writable-by-group"),
        pytest.param(lambda p, d: d.chmod(0o777), id="dir-writable-by-others"),
        pytest.param(lambda p, d: d.parent.chmod(0o777), id="cache-dir-writable-by-others"),
        pytest.param(lambda p, d: os.chown(p, 65534, 65534), id="file-of-another-user"),
        pytest.param(lambda p, d: os.chown(d, 65534, 65534), id="dir-of-another-user"),
    ],
)
def test_cache_ignores_files_others_could_have_written(tmp_path, monkeypatch, spoil):
    cache_dir = tmp_path / "cache" / "seccomp"
    cache.default_filter(DEFAULT_CAPS, cache_dir)
    path = _cache_file(cache_dir)
    path.write_bytes(cache.encode(_allow_all()))  # well formed, but not ours alone
    spoil(path, cache_dir)
    calls = _no_compiling(monkeypatch)
    assert cache.default_filter(DEFAULT_CAPS, cache_dir) == _default_program()
    assert len(calls) == 1


def test_cache_ignores_a_symlinked_file(tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache" / "seccomp"
    cache.default_filter(DEFAULT_CAPS, cache_dir)
    path = _cache_file(cache_dir)
    planted = tmp_path / "planted.bpf"
    planted.write_bytes(cache.encode(_allow_all()))
    planted.chmod(0o600)
    path.unlink()
    path.symlink_to(planted)
    calls = _no_compiling(monkeypatch)
    assert cache.default_filter(DEFAULT_CAPS, cache_dir) == _default_program()
    assert len(calls) == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-8], id="truncated"),
        pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="bit-flipped"),
        pytest.param(lambda b: b"x" + b[1:], id="bad-magic"),
        pytest.param(lambda b: b[: len(cache.MAGIC) + 10], id="header-only"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_cache_recompiles_a_damaged_file(tmp_path, monkeypatch, damage):
    cache_dir = tmp_path / "cache" / "seccomp"
    cache.default_filter(DEFAULT_CAPS, cache_dir)
    path = _cache_file(cache_dir)
    path.write_bytes(damage(path.read_bytes()))
    calls = _no_compiling(monkeypatch)
    assert cache.default_filter(DEFAULT_CAPS, cache_dir) == _default_program()
    assert len(calls) == 1
    assert cache.read(cache_dir, path.stem) == _default_program()  # replaced


def test_cache_refuses_a_program_over_the_kernel_limit():
    too_long = _allow_all() * (seccomp_bpf.MAX_INSNS + 1)
    assert cache._decode(cache.encode(too_long)) is None
    assert cache._decode(cache.encode(_allow_all())) == _allow_all()
    assert cache.BPF_MAX_INSNS == seccomp_bpf.MAX_INSNS


def test_cache_in_an_unwritable_place_still_gives_the_program(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the directory would go")
    assert cache.default_filter(DEFAULT_CAPS, blocker / "seccomp") == _default_program()


def test_cache_key_on_a_read_only_file_system_follows_the_text(tmp_path, monkeypatch):
    """An image file system (squashfs, erofs) gives each version's files the inode numbers and
    times of its build: there the sources count by their text."""
    real_statvfs = os.statvfs

    class ReadOnly:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_flag = st.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly(real_statvfs(path)))
    keys = []
    for version in ("a", "b"):  # two installs of the same text: new inodes, new times
        here = tmp_path / version
        here.mkdir()
        for name in cache.COMPILER_FILES:
            shutil.copy(os.path.join(cache._HERE, name), here / name)
        monkeypatch.setattr(cache, "_HERE", str(here))
        keys.append(cache.cache_key(DEFAULT_CAPS, "x86_64", "6.18.0"))
    assert keys[0] == keys[1]
    edited = tmp_path / "b" / "seccomp_default.json"
    edited.write_bytes(edited.read_bytes()[::-1])  # same size, new text
    assert cache.cache_key(DEFAULT_CAPS, "x86_64", "6.18.0") != keys[0]
