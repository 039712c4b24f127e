"""The device cgroup's rules: runc's default allow-list, the v1 lines, the v2 eBPF program (run
here in a small interpreter written from the eBPF spec, and checked against the kernel's v1
matching rules on a grid of devices and accesses), and `--device` parsing."""

from __future__ import annotations

import itertools
import os
import stat
import struct
import sys
from pathlib import Path

import pytest

from imgtool.sandbox.devices import DEFAULT_RULES, DeviceRule, parse_device, v1_lines, v2_program

CHAR, BLOCK = 2, 1  # BPF_DEVCG_DEV_*
BITS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_*

# runc's AllowedDevices (libcontainer/specconv/spec_linux.go), after Docker's deny-all
RUNC_DEFAULT = [
    ("devices.deny", "a"),
    ("devices.allow", "c *:* m"),
    ("devices.allow", "b *:* m"),
    ("devices.allow", "c 1:3 rwm"),
    ("devices.allow", "c 1:8 rwm"),
    ("devices.allow", "c 1:7 rwm"),
    ("devices.allow", "c 5:0 rwm"),
    ("devices.allow", "c 1:5 rwm"),
    ("devices.allow", "c 1:9 rwm"),
    ("devices.allow", "c 136:* rwm"),
    ("devices.allow", "c 5:2 rwm"),
]


def test_the_default_is_runc_s_allow_list() -> None:
    assert v1_lines(DEFAULT_RULES) == RUNC_DEFAULT
    assert "c 10:200 rwm" not in [line for _, line in v1_lines(DEFAULT_RULES)]  # tun: dropped


def test_v1_lines_of_an_extra_device() -> None:
    rules = (*DEFAULT_RULES, DeviceRule("b", 8, 0, "rw"))
    assert v1_lines(rules)[-1] == ("devices.allow", "b 8:0 rw")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "x"},
        {"kind": "c", "access": ""},
        {"kind": "c", "access": "rx"},
        {"kind": "c", "access": "rr"},
        {"kind": "c", "major": -1},
        {"kind": "c", "minor": 1 << 31},
        {"kind": "a", "major": 1},
        {"kind": "a", "access": "r"},
    ],
)
def test_malformed_rules_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DeviceRule(**kwargs)


@pytest.mark.parametrize(
    "rules",
    [
        (),
        (DeviceRule("c", 1, 3),),  # no default first
        (DeviceRule("a", allow=False), DeviceRule("c", 1, 3), DeviceRule("a")),  # "a" later
        (DeviceRule("a", allow=False), DeviceRule("c", 1, 3, allow=False)),  # no exception
    ],
)
def test_rule_lists_of_another_shape_are_refused(rules: tuple) -> None:
    # anything but "a default, then exceptions" would not mean the same on v1 and v2
    with pytest.raises(ValueError):
        v1_lines(rules)
    with pytest.raises(ValueError):
        v2_program(rules)


# -- the eBPF program -------------------------------------------------------------------------

CTX = object()  # R1 on entry: a pointer to struct bpf_cgroup_dev_ctx
U32, U64 = (1 << 32) - 1, (1 << 64) - 1


def run(program: bytes, kind: int, access: int, major: int, minor: int) -> int:
    """Interpret the program for one device access; only the instructions a device filter
    needs are known, anything else fails the test."""
    assert len(program) % 8 == 0 and sys.byteorder == "little"
    insns = [struct.unpack_from("<BBhi", program, i) for i in range(0, len(program), 8)]
    ctx = struct.pack("<III", kind | access << 16, major, minor)
    regs: list = [0, CTX] + [0] * 9
    pc = 0
    for _ in range(len(insns)):  # no backward jumps: each instruction runs at most once
        code, raw_regs, off, imm = insns[pc]
        dst, src = raw_regs & 0xF, raw_regs >> 4
        pc += 1
        if code == 0x61:  # ldxw dst, [src + off]
            assert regs[src] is CTX and off in (0, 4, 8), "load from outside the context"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:  # and32 dst, imm
            regs[dst] = regs[dst] & imm & U32
        elif code == 0x74:  # rsh32 dst, imm
            regs[dst] = (regs[dst] & U32) >> imm
        elif code == 0xB4:  # mov32 dst, imm
            regs[dst] = imm & U32
        elif code == 0xBC:  # mov32 dst, src
            regs[dst] = regs[src] & U32
        elif code in (0x15, 0x55, 0x5D):  # jeq/jne dst, imm; jne dst, src
            other = regs[src] if code == 0x5D else imm & U64  # imm is sign-extended
            if (regs[dst] == other) == (code == 0x15):
                assert off >= 0, "a backward jump"
                pc += off
        elif code == 0x95:  # exit
            assert regs[0] in (0, 1)
            return regs[0]
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc - 1}")
    raise AssertionError("ran off the end of the program")


def kernel_decision(
    rules: tuple[DeviceRule, ...], kind: str, major: int, minor: int, asked: str
) -> bool:
    """The v1 devices controller's matching (security/device_cgroup.c): under deny-all one
    exception must grant every bit asked for; under allow-all none may name any of them."""
    default, *exceptions = rules
    hits = [
        set(r.access)
        for r in exceptions
        if r.kind == kind and r.major in (None, major) and r.minor in (None, minor)
    ]
    if default.allow:
        return not any(set(asked) & access for access in hits)
    return any(set(asked) <= access for access in hits)


ACCESSES = ["".join(c) for n in (1, 2, 3) for c in itertools.combinations("rwm", n)]
MAJORS = [0, 1, 4, 5, 7, 8, 10, 136, 137, 4095]
MINORS = [0, 1, 2, 3, 5, 7, 8, 9, 200, 232, 1 << 19]
RULE_SETS = {
    "default": DEFAULT_RULES,
    "with --device kvm:r": (*DEFAULT_RULES, DeviceRule("c", 10, 232, "r")),
    "with a block device": (*DEFAULT_RULES, DeviceRule("b", 8, None, "rw")),
    "allow all but": (
        DeviceRule("a"),
        DeviceRule("b", 7, None, "rw", allow=False),
        DeviceRule("c", None, 232, "m", allow=False),
    ),
}


@pytest.mark.parametrize("name", RULE_SETS)
def test_the_program_decides_as_the_kernel_s_v1_controller(name: str) -> None:
    rules = RULE_SETS[name]
    program = v2_program(rules)
    wrong = []
    for kind, major, minor, asked in itertools.product("cb", MAJORS, MINORS, ACCESSES):
        got = run(
            program, CHAR if kind == "c" else BLOCK, sum(BITS[a] for a in asked), major, minor
        )
        if bool(got) != kernel_decision(rules, kind, major, minor, asked):
            wrong.append(f"{kind} {major}:{minor} {asked} -> {got}")
    assert not wrong, wrong[:10]


@pytest.mark.parametrize(
    ("kind", "major", "minor", "asked", "allowed"),
    [
        (CHAR, 10, 232, "rw", False),  # /dev/kvm
        (BLOCK, 7, 0, "r", False),  # a loop device
        (CHAR, 5, 1, "rw", False),  # /dev/console of the host
        (CHAR, 4, 1, "w", False),  # tty1
        (CHAR, 10, 200, "rw", False),  # /dev/net/tun
        (CHAR, 10, 232, "m", True),  # mknod alone is harmless
        (BLOCK, 7, 0, "m", True),
        (CHAR, 1, 3, "rw", True),  # /dev/null
        (CHAR, 1, 9, "r", True),  # /dev/urandom
        (CHAR, 136, 7, "rw", True),  # a pseudo-terminal
        (CHAR, 5, 2, "rw", True),  # /dev/ptmx
    ],
)
def test_the_default_program_on_known_devices(
    kind: int, major: int, minor: int, asked: str, allowed: bool
) -> None:
    access = sum(BITS[a] for a in asked)
    assert run(v2_program(DEFAULT_RULES), kind, access, major, minor) == int(allowed)


def test_the_program_s_encoding() -> None:
    program = v2_program(DEFAULT_RULES)
    # r2 = *(u32 *)(r1 + 0): code 0x61, dst 2 in the low nibble, src 1 in the high one
    assert program[:8] == bytes([0x61, 0x12, 0, 0, 0, 0, 0, 0])
    assert program[-8:] == bytes([0x95, 0, 0, 0, 0, 0, 0, 0])  # exit
    assert program[-16:-8] == bytes([0xB4, 0, 0, 0, 0, 0, 0, 0])  # r0 = 0: deny the rest


# -- --device ---------------------------------------------------------------------------------


def test_parse_device_defaults() -> None:
    m = parse_device("/dev/null")
    assert (m.host_path, m.container_path, m.perms) == ("/dev/null", "/dev/null", "rwm")
    assert (m.kind, m.major, m.minor) == ("c", 1, 3)
    st = os.stat("/dev/null")
    assert (m.mode, m.uid, m.gid) == (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    assert m.rule() == DeviceRule("c", 1, 3, "rwm", allow=True)


@pytest.mark.parametrize(
    ("text", "container", "perms"),
    [
        ("/dev/null:rw", "/dev/null", "rw"),
        ("/dev/null:/dev/mynull", "/dev/mynull", "rwm"),
        ("/dev/null:/dev/mynull:r", "/dev/mynull", "r"),
        ("/dev/null:/dev/sub/../x:mr", "/dev/x", "mr"),
    ],
)
def test_parse_device_forms(text: str, container: str, perms: str) -> None:
    m = parse_device(text)
    assert (m.container_path, m.perms) == (container, perms)
    assert m.rule() == DeviceRule("c", 1, 3, perms)


def test_parse_device_follows_a_symlink_to_the_node(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/dev/zero")
    m = parse_device(f"{tmp_path}/link:/dev/z")
    assert (m.kind, m.major, m.minor, m.host_path) == ("c", 1, 5, f"{tmp_path}/link")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a block device needs root")
def test_parse_device_block(tmp_path: Path) -> None:
    os.mknod(tmp_path / "disk", stat.S_IFBLK | 0o640, os.makedev(7, 3))
    m = parse_device(f"{tmp_path}/disk:/dev/xvda:r")
    assert (m.kind, m.major, m.minor, m.mode, m.perms) == ("b", 7, 3, 0o640, "r")
    assert m.rule() == DeviceRule("b", 7, 3, "r")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected"),
        (":/dev/x", "expected"),
        ("/dev/null:/a:rw:x", "expected"),
        ("/dev/null:/dev/x:rx", "permissions 'rx'"),
        ("/dev/null:/dev/x:rr", "permissions 'rr'"),
        ("/dev/null:/dev/x:", "permissions ''"),
        ("dev/null", "must be an absolute path"),
        ("/dev/null:dev/x", "must be absolute"),
        ("/dev/null:/", "must be absolute, not /"),
        ("/dev/null:/dev/..", "must be absolute, not /"),
        ("/dev/null:", "container path ''"),
        ("{tmp}/missing", "No such file"),
        ("{tmp}", "is a directory"),
        ("{tmp}/file", "is not a character or block device"),
    ],
)
def test_parse_device_errors_name_the_value(text: str, why: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    text = text.format(tmp=tmp_path)
    with pytest.raises(ValueError) as e:
        parse_device(text)
    message = str(e.value)
    assert message.startswith(f"invalid --device {text!r}: ") and why in message
    assert "\n" not in message
