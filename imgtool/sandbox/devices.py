"""Which device nodes a container may create and open: the device cgroup's rules, and Docker's
`--device HOST[:CONTAINER][:PERMS]`.

Without them container root can mknod and open any device (/dev/kvm, a loop device, the host's
disks), and a device node shipped in an image opens for any user. The default is runc's (and so
Docker's): deny everything, then allow mknod of any node (creating one is harmless, opening it
is what counts) and read/write/mknod of null, zero, full, random, urandom, tty, ptmx and the
pseudo-terminals. runc no longer allows /dev/net/tun by default, nor does this.

A rule list is one "a" rule that says what happens to a device no later rule lists (deny, for
an allow-list), then exceptions of kind "c" or "b" with the opposite verdict: the shape the v1
devices controller keeps, so v1 and v2 decide alike. The kernel's matching, which the v2
program repeats:
- under deny-all, an access is allowed when one exception grants every bit it asks for;
- under allow-all, an access is denied when one exception names any bit it asks for.

v1 takes the rules as lines written to `devices.deny` / `devices.allow`; v2 as an eBPF program
of type BPF_PROG_TYPE_CGROUP_DEVICE, built here instruction by instruction (it has the shape of
runc's and crun's device filters) and attached to the container's cgroup by cgroups.py.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from collections.abc import Sequence

from imgtool.values import Frozen

ACCESS = "rwm"
# majors are 12 bits and minors 20 in dev_t; an eBPF immediate holds 31 (it is signed)
MAX_NUMBER = (1 << 31) - 1


class DeviceRule(Frozen):
    __slots__ = ("kind", "major", "minor", "access", "allow")
    kind: str  # "a" (all devices), "c" (char) or "b" (block)
    major: int | None  # None: any
    minor: int | None
    access: str  # a non-empty subset of "rwm"
    allow: bool

    def __init__(
        self,
        kind: str,
        major: int | None = None,
        minor: int | None = None,
        access: str = ACCESS,
        allow: bool = True,
    ) -> None:
        self._init(kind, major, minor, access, allow)
        self._check()

    def _check(self) -> None:
        if self.kind not in ("a", "c", "b"):
            raise ValueError(f"device rule kind {self.kind!r} is not a, c or b")
        if not valid_access(self.access):
            raise ValueError(f"device rule access {self.access!r} is not a subset of rwm")
        for n in (self.major, self.minor):
            if n is not None and not 0 <= n <= MAX_NUMBER:
                raise ValueError(f"device number {n} is out of range")
        everything = self.major is None and self.minor is None and set(self.access) == set(ACCESS)
        if self.kind == "a" and not everything:
            raise ValueError("an 'a' rule covers every device and access: it takes no numbers")

    def __str__(self) -> str:
        """The rule as the v1 devices controller reads it: `c 1:3 rwm`, `c 136:* rwm`, `a`."""
        if self.kind == "a":
            return "a"
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.kind} {major}:{minor} {self.access}"


def valid_access(text: str) -> bool:
    return bool(text) and set(text) <= set(ACCESS) and len(set(text)) == len(text)


def _char(major: int, minor: int | None) -> DeviceRule:
    return DeviceRule("c", major, minor, ACCESS)


# runc's AllowedDevices (libcontainer/specconv), in its order, after a deny-all
DEFAULT_RULES: tuple[DeviceRule, ...] = (
    DeviceRule("a", allow=False),
    DeviceRule("c", None, None, "m"),  # mknod of any node; opening it is decided by what follows
    DeviceRule("b", None, None, "m"),
    _char(1, 3),  # /dev/null
    _char(1, 8),  # /dev/random
    _char(1, 7),  # /dev/full
    _char(5, 0),  # /dev/tty
    _char(1, 5),  # /dev/zero
    _char(1, 9),  # /dev/urandom
    _char(136, None),  # /dev/pts/*, the container's terminal among them
    _char(5, 2),  # /dev/ptmx
)


def _split(rules: Sequence[DeviceRule]) -> tuple[DeviceRule, Sequence[DeviceRule]]:
    """The default rule and the exceptions, refused unless they have the shape the module
    docstring describes (anything else would not mean the same on v1 and v2)."""
    if not rules or rules[0].kind != "a":
        raise ValueError("device rules must start with an 'a' rule (the default)")
    default, exceptions = rules[0], rules[1:]
    for r in exceptions:
        if r.kind == "a" or r.allow == default.allow:
            raise ValueError(f"device rule {r} ({'allow' if r.allow else 'deny'}) is no exception")
    return default, exceptions


def v1_lines(rules: Sequence[DeviceRule]) -> list[tuple[str, str]]:
    """(file, line) pairs to write, in order, into a fresh v1 devices cgroup."""
    _split(rules)
    return [("devices.allow" if r.allow else "devices.deny", str(r)) for r in rules]


# eBPF, as in the kernel's uapi/linux/bpf.h and bpf_common.h
LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: dst = (u32)(dst & imm)
RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
MOV32_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: if dst == imm: pc += off
JNE_K = 0x55
JNE_X = 0x5D  # if dst != src: pc += off
EXIT = 0x95
R0, R1, R2, R3, R4, R5 = range(6)
DEV_BLOCK, DEV_CHAR = 1, 2  # BPF_DEVCG_DEV_*: the low 16 bits of access_type
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4  # BPF_DEVCG_ACC_*: the high 16 bits
ACC_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
ACC_ALL = ACC_MKNOD | ACC_READ | ACC_WRITE


class Insn(Frozen):
    __slots__ = ("code", "dst", "src", "off", "imm")
    code: int
    dst: int
    src: int
    off: int
    imm: int

    def __init__(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self._init(code, dst, src, off, imm)

    def encode(self) -> bytes:
        # struct bpf_insn {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm;}: the bit-field
        # order follows the byte order
        regs = self.dst | self.src << 4 if sys.byteorder == "little" else self.dst << 4 | self.src
        return struct.pack("=BBhi", self.code, regs, self.off, self.imm)


# struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor;} arrives in R1
PROLOGUE = (
    Insn(LDX_MEM_W, R2, R1, 0),
    Insn(AND32_K, R2, imm=0xFFFF),  # R2: the device type
    Insn(LDX_MEM_W, R3, R1, 0),
    Insn(RSH32_K, R3, imm=16),  # R3: the access asked for
    Insn(LDX_MEM_W, R4, R1, 4),  # R4: major
    Insn(LDX_MEM_W, R5, R1, 8),  # R5: minor
)


def _verdict(allow: bool) -> list[Insn]:
    return [Insn(MOV32_K, R0, imm=int(allow)), Insn(EXIT)]


def _exception_block(rule: DeviceRule) -> list[Insn]:
    """Checks that jump past the block when `rule` does not match, then its verdict."""
    access = sum(ACC_BITS[c] for c in rule.access)
    kind = DEV_CHAR if rule.kind == "c" else DEV_BLOCK
    checks = [Insn(JNE_K, R2, imm=kind)]
    if access != ACC_ALL:  # every access is within rwm, and intersects it
        checks += [Insn(MOV32_X, R1, R3), Insn(AND32_K, R1, imm=access)]
        if rule.allow:  # grants every bit asked for: (asked & access) == asked
            checks.append(Insn(JNE_X, R1, R3))
        else:  # names one of them: (asked & access) != 0
            checks.append(Insn(JEQ_K, R1, imm=0))
    if rule.major is not None:
        checks.append(Insn(JNE_K, R4, imm=rule.major))
    if rule.minor is not None:
        checks.append(Insn(JNE_K, R5, imm=rule.minor))
    block = checks + _verdict(rule.allow)
    return [_jump_to(i, len(block) - n - 1) if i.code in JUMPS else i for n, i in enumerate(block)]


JUMPS = (JEQ_K, JNE_K, JNE_X)


def _jump_to(insn: Insn, offset: int) -> Insn:
    """`insn` jumping `offset` instructions past the next one."""
    return Insn(insn.code, insn.dst, insn.src, offset, insn.imm)


def v2_program(rules: Sequence[DeviceRule]) -> bytes:
    """The BPF_PROG_TYPE_CGROUP_DEVICE program for `rules`: returns 1 (allow) or 0 (deny) for
    each mknod or open of a device by a process in the cgroup."""
    default, exceptions = _split(rules)
    insns = list(PROLOGUE)
    for rule in exceptions:
        insns += _exception_block(rule)
    insns += _verdict(default.allow)
    return b"".join(i.encode() for i in insns)


class DeviceMapping(Frozen):
    """A host device node given to a container (`--device`)."""

    __slots__ = (
        "host_path",
        "container_path",
        "kind",
        "major",
        "minor",
        "mode",
        "uid",
        "gid",
        "perms",
    )
    host_path: str
    container_path: str
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int  # the host node's permission bits (stat.S_IMODE)
    uid: int
    gid: int
    perms: str  # what the container may do with it: a subset of "rwm"

    def __init__(
        self,
        host_path: str,
        container_path: str,
        kind: str,
        major: int,
        minor: int,
        mode: int,
        uid: int,
        gid: int,
        perms: str,
    ) -> None:
        self._init(host_path, container_path, kind, major, minor, mode, uid, gid, perms)

    def rule(self) -> DeviceRule:
        return DeviceRule(self.kind, self.major, self.minor, self.perms, allow=True)


def parse_device(text: str) -> DeviceMapping:
    """Docker's `--device HOST[:CONTAINER][:PERMS]`: PERMS defaults to rwm and CONTAINER to
    HOST; `HOST:PERMS` works too. HOST must be a device node (a symlink to one is followed).
    Raises ValueError, one line naming the value (the caller makes it its own error: this
    floor may not import run's)."""

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid --device {text!r}: {why}")

    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise bad("expected /host/device[:/container/path][:permissions]")
    host, container, perms = parts[0], parts[0], ACCESS
    if len(parts) == 3:
        container, perms = parts[1], parts[2]
    elif len(parts) == 2 and valid_access(parts[1]):
        perms = parts[1]
    elif len(parts) == 2:
        container = parts[1]
    if not valid_access(perms):
        raise bad(f"permissions {perms!r} are not a combination of r, w and m")
    if not os.path.isabs(host):
        raise bad(f"the host device {host!r} must be an absolute path")
    if not os.path.isabs(container) or os.path.normpath(container) == "/":
        raise bad(f"the container path {container!r} must be absolute, not /")
    container = os.path.normpath(container)
    try:
        st = os.stat(host)
    except OSError as e:
        raise bad(f"{host}: {os.strerror(e.errno or 0)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise bad(f"{host} is a directory: name each device in it (docker expands directories)")
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise bad(f"{host} is not a character or block device")
    return DeviceMapping(
        host_path=host,
        container_path=container,
        kind="c" if stat.S_ISCHR(st.st_mode) else "b",
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        perms=perms,
    )
