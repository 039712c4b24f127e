"""The container's seccomp filter: an allow-list. By default Docker's (moby's profiles/seccomp, kept
as seccomp_default.json beside this file, plus one rule of imgtool's: no audit netlink socket);
`--security-opt seccomp=PROFILE.json` brings one in Docker's format, and both go through the one
compiler here: the profile's rules, chosen for the container's capabilities, this host's
architecture and kernel, turned into classic BPF for each ABI a process here can call through.

Where the semantics are not obvious:
- a rule counts when all its includes hold (caps, the host's architecture, minKernel) and none of
  its excludes does, as moby decides;
- several counted rules on one call: the strictest action among those whose arguments match wins
  (the kernel's order between stacked filters: kill, trap, errno, trace, log, allow), in any
  order; a rule without args always matches. (libseccomp lets an unconditional rule hide the
  conditional ones of the same call; here a refusal is never hidden.) Args in one rule must all
  hold, compared on all 64 bits: high bits the kernel drops from an int argument fail an allow
  rule's EQ, and a refusing rule masks them off (MASKED_EQ 0xffffffff), as the audit rule does;
- ABIs: the host's own, and i386 on x86_64 when the profile lists it (Docker's does); x32 calls
  get ENOSYS; a call through any other ABI is killed, its numbers mean other calls.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Iterable

from imgtool.errors import SandboxError
from imgtool.sandbox import seccomp_bpf, seccomp_profile, seccomp_syscalls

# installing lives with the other ctypes calls, where the container imports it without the compiler
from imgtool.sandbox.linux import install_seccomp as install  # noqa: F401
from imgtool.sandbox.seccomp_bpf import AbiPlan, Decision
from imgtool.sandbox.seccomp_profile import Profile, Rule

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
RET_ERRNO = 0x00050000

# the machines there is a filter for: their own ABI as libseccomp names it, the name moby's
# includes/excludes.arches use for them, and the other ABIs checked when a profile lists them
NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
ARCH_NAME = {"x86_64": "amd64", "aarch64": "arm64"}
COMPAT = {"SCMP_ARCH_X86_64": ("SCMP_ARCH_X86",), "SCMP_ARCH_AARCH64": ()}
ABIS: dict[str, tuple[int, dict[str, int]]] = {
    "SCMP_ARCH_X86_64": (AUDIT_ARCH_X86_64, seccomp_syscalls.X86_64),
    "SCMP_ARCH_X86": (AUDIT_ARCH_I386, seccomp_syscalls.I386),
    "SCMP_ARCH_AARCH64": (AUDIT_ARCH_AARCH64, seccomp_syscalls.AARCH64),
}
DEFAULT_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")


@functools.cache
def default_profile() -> Profile:
    """Docker's default profile, read once per process."""
    return seccomp_profile.read(DEFAULT_PROFILE)


def load_profile(path: str) -> Profile:
    """A profile in Docker's JSON format. SandboxError names the file and the culprit."""
    return seccomp_profile.read(path)


def compile_filter(profile: Profile, caps: Iterable[str], machine: str | None = None) -> bytes:
    """The packed sock_filter program of `profile` for a container with the capabilities `caps`
    ("SYS_ADMIN" or "CAP_SYS_ADMIN") on `machine` (this host's by default)."""
    machine = machine or os.uname().machine
    if machine not in NATIVE:
        raise SandboxError(
            "seccomp",
            detail=f"no syscall table for {machine}: use --security-opt seccomp=unconfined",
        )
    names = frozenset(
        c.upper() if c.upper().startswith("CAP_") else f"CAP_{c.upper()}" for c in caps
    )
    return _compile(profile, names, machine, kernel_version())


@functools.lru_cache(maxsize=32)
def _compile(
    profile: Profile, caps: frozenset[str], machine: str, kernel: tuple[int, int]
) -> bytes:
    rules = [r for r in profile.rules if counts(r, caps, ARCH_NAME[machine], kernel)]
    plans = [_plan(abi, rules, profile.default_action) for abi in _abis(profile, NATIVE[machine])]
    program = seccomp_bpf.program(plans)
    if len(program) // 8 > seccomp_bpf.MAX_INSNS:
        raise SandboxError(
            "seccomp profile",
            profile.source,
            detail=f"compiles to {len(program) // 8} BPF instructions, "
            f"over the kernel's limit of {seccomp_bpf.MAX_INSNS}",
        )
    return program


def counts(rule: Rule, caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    """Whether `rule` applies to this container, as moby filters a profile."""
    inc, exc = rule.includes, rule.excludes
    if arch in exc.arches or any(c in caps for c in exc.caps):
        return False
    if exc.min_kernel is not None and kernel >= exc.min_kernel:
        return False
    if inc.arches and arch not in inc.arches:
        return False
    if any(c not in caps for c in inc.caps):
        return False
    return inc.min_kernel is None or kernel >= inc.min_kernel


def _abis(profile: Profile, native: str) -> list[str]:
    """The ABIs the filter checks: the native one, and those beside it the profile lists."""
    if profile.arch_map:
        listed = next((subs for arch, subs in profile.arch_map if arch == native), ())
    else:
        listed = profile.architectures
    return [native, *(abi for abi in COMPAT[native] if abi in listed)]


def _plan(abi: str, rules: list[Rule], default: int) -> AbiPlan:
    audit_arch, table = ABIS[abi]
    named: dict[int, dict[int, Rule]] = {}  # number -> {rule's place in the profile: rule}
    for place, rule in enumerate(rules):
        for name in rule.names:
            nr = table.get(name)  # a name this ABI lacks is skipped, as libseccomp does
            if nr is not None:
                named.setdefault(nr, {})[place] = rule
    shared: dict[Decision, Decision] = {}  # equal decisions as one object: runs compare fast
    decisions = {}
    for nr, by_place in named.items():
        decision = _decision(by_place, default)
        decisions[nr] = shared.setdefault(decision, decision)
    refuse = None
    if abi == "SCMP_ARCH_X86_64":  # the x32 ABI: the same table with a bit set
        refuse = (seccomp_bpf.X32_SYSCALL_BIT, RET_ERRNO | errno.ENOSYS)
    return AbiPlan(audit_arch, default, decisions, refuse)


def _decision(by_place: dict[int, Rule], default: int) -> Decision:
    """The rules on one call, strictest action first (then in profile order), down to the first
    without conditions, or else the default action."""
    if len(by_place) == 1:  # the common case, quickly
        (rule,) = by_place.values()
        if not rule.conditions:
            return (((), rule.action),)
    order = sorted(by_place, key=lambda place: (_precedence(by_place[place].action), place))
    entries = []
    for place in order:
        rule = by_place[place]
        entries.append((rule.conditions, rule.action))
        if not rule.conditions:
            break
    else:
        entries.append(((), default))
    while len(entries) > 1 and entries[-2][1] == entries[-1][1]:
        del entries[-2]  # its conditions change nothing: the last entry decides the same
    return tuple(entries)


def _precedence(action: int) -> int:
    """Lower is stricter: the action bits as the kernel compares them, signed."""
    kind = action & 0xFFFF0000
    return kind - (1 << 32) if kind & 0x80000000 else kind


@functools.cache
def kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
