"""The seccomp program, run by a classic-BPF interpreter written here from the kernel's
definition (linux/filter.h): every ABI, every kind of decision. Its syscall tables are checked
against the kernel's own headers where they are installed."""

from __future__ import annotations

import errno
import re
import struct
from pathlib import Path

import pytest

from imgtool.sandbox import seccomp as sc

X86_64, I386, ARM64 = sc.AUDIT_ARCH_X86_64, sc.AUDIT_ARCH_I386, sc.AUDIT_ARCH_AARCH64
ALLOW, KILL = sc.RET_ALLOW, sc.RET_KILL_PROCESS
EPERM, ENOSYS = sc.RET_ERRNO | errno.EPERM, sc.RET_ERRNO | errno.ENOSYS


def run_bpf(prog: list[tuple[int, int, int, int]], arch: int, nr: int, arg0: int = 0) -> int:
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    acc, pc = 0, 0
    for _ in range(10_000):
        code, jt, jf, k = prog[pc]
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            assert code == 0x20, hex(code)  # W | ABS only
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif cls == 0x05:  # BPF_JMP
            op = code & 0xF0
            if op == 0x10:
                taken = acc == k
            elif op == 0x30:
                taken = acc >= k
            elif op == 0x40:
                taken = bool(acc & k)
            else:
                raise AssertionError(f"unexpected jump {code:#x}")
            pc += 1 + (jt if taken else jf)
        elif cls == 0x06:  # BPF_RET
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
    raise AssertionError("the program does not end")


@pytest.mark.parametrize(
    ("native", "arch", "name", "arg0", "expected"),
    [
        (X86_64, X86_64, "keyctl", 0, EPERM),
        (X86_64, X86_64, "open_by_handle_at", 0, EPERM),
        (X86_64, X86_64, "bpf", 0, EPERM),
        (X86_64, X86_64, "clone", 17, ALLOW),  # fork: SIGCHLD
        (X86_64, X86_64, "clone", 0x10000000 | 17, EPERM),  # CLONE_NEWUSER
        (X86_64, X86_64, "unshare", 0x00020000, ALLOW),  # CLONE_NEWNS: capabilities decide
        (X86_64, X86_64, "unshare", 0x10000000, EPERM),
        (X86_64, X86_64, "clone3", 0, ENOSYS),
        (X86_64, I386, "keyctl", 0, EPERM),
        (X86_64, I386, "clone", 0x10000000, EPERM),
        (X86_64, I386, "vm86", 0, EPERM),
        (ARM64, ARM64, "keyctl", 0, EPERM),
        (ARM64, ARM64, "unshare", 0x10000000, EPERM),
        (ARM64, ARM64, "clone", 17, ALLOW),
    ],
)
def test_decisions(native: int, arch: int, name: str, arg0: int, expected: int) -> None:
    assert run_bpf(sc.program(native), arch, sc.NUMBERS[arch][name], arg0) == expected


def test_everything_else_is_allowed() -> None:
    prog = sc.program(X86_64)
    denied = {sc.NUMBERS[X86_64][n] for n in (*sc.DENIED, *sc.FLAG_CHECKED, *sc.NOT_IMPLEMENTED)
              if n in sc.NUMBERS[X86_64]}  # fmt: skip
    for nr in range(0, 460):
        if nr not in denied:
            assert run_bpf(prog, X86_64, nr) == ALLOW, nr
    assert run_bpf(prog, X86_64, 0) == ALLOW  # read
    assert run_bpf(prog, I386, 3) == ALLOW  # read on i386


def test_other_abis_are_refused() -> None:
    assert run_bpf(sc.program(X86_64), X86_64, 0x40000000 | 0) == ENOSYS  # x32's read
    assert run_bpf(sc.program(X86_64), ARM64, 63) == KILL
    assert run_bpf(sc.program(ARM64), X86_64, 0) == KILL


def test_every_denied_call_has_a_number_on_x86_64_or_i386() -> None:
    for name in sc.DENIED:
        assert name in sc.NUMBERS[X86_64] or name in sc.NUMBERS[I386], name


HEADERS = {
    X86_64: "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
    I386: "/usr/include/x86_64-linux-gnu/asm/unistd_32.h",
    ARM64: "/usr/include/asm-generic/unistd.h",
}


@pytest.mark.parametrize("arch", [X86_64, I386, ARM64])
def test_numbers_match_the_kernel_headers(arch: int) -> None:
    header = Path(HEADERS[arch])
    if not header.exists():
        pytest.skip(f"{header} is not installed (linux-libc-dev)")
    defined = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^#define __NR3?2?_(\w+)\s+(\d+)\s*$", header.read_text(), re.M)
    }
    for name, nr in sc.NUMBERS[arch].items():
        assert defined.get(name) == nr, (name, nr, defined.get(name))
