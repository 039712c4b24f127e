"""Classic BPF for seccomp: decisions per ABI and syscall number in, a sock_filter program out.

Each ABI's block finds the call's number with a balanced tree of `>=` tests over the runs of
numbers that share a decision (8 tests or so, where a chain of `==` would take hundreds), then
returns, or runs the call's argument rules. Jumps go through labels; one whose offset does not fit
a conditional jump's 8 bits is rewritten through `ja`, whose offset has 32.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from typing import NamedTuple

from imgtool.sandbox.seccomp_profile import Condition

# opcodes (linux/bpf_common.h)
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
JA = 0x05  # BPF_JMP | BPF_JA
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGT = 0x25  # BPF_JMP | BPF_JGT | BPF_K
JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
RET = 0x06  # BPF_RET | BPF_K
MAX_INSNS = 4096  # BPF_MAXINSNS

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
# (little-endian: an argument's low half first, on every ABI here)
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16
RET_KILL_PROCESS = 0x80000000
X32_SYSCALL_BIT = 0x40000000
LOW = 0xFFFFFFFF

# what to do with one call: (conditions, action) entries, the first whose conditions all hold
# wins; the last has none
Decision = tuple[tuple[tuple[Condition, ...], int], ...]


class AbiPlan(NamedTuple):
    audit_arch: int  # AUDIT_ARCH_*
    default: int  # the action for a number no rule names
    decisions: dict[int, Decision]
    refuse: tuple[int, int] | None = None  # (first number, action): x86_64's x32 range


class _Insn:
    __slots__ = ("code", "k", "jt", "jf")

    def __init__(self, code: int, k: int = 0, jt: str | None = None, jf: str | None = None) -> None:
        self.code = code
        self.k = k
        self.jt = jt  # a label, or None: the next instruction
        self.jf = jf


class Assembler:
    """Instructions and labels; jumps are forward, to labels."""

    def __init__(self) -> None:
        self.insns: list[_Insn] = []
        self.labels: dict[str, int] = {}  # label -> the instruction it stands before
        self._fresh = 0

    def fresh(self, hint: str) -> str:
        self._fresh += 1
        return f"{hint}.{self._fresh}"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def load(self, offset: int) -> None:
        self.insns.append(_Insn(LD_W_ABS, offset))

    def op(self, code: int, k: int) -> None:
        self.insns.append(_Insn(code, k))

    def jump(self, code: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        self.insns.append(_Insn(code, k, jt, jf))

    def ret(self, action: int) -> None:
        self.insns.append(_Insn(RET, action))

    def assemble(self) -> bytes:
        """The packed program. A conditional jump too far for 8 bits becomes
        `j<cond> 0,1; ja T; ja F`; that moves what follows, so repeat until none is left."""
        conditional = [
            (n, insn)
            for n, insn in enumerate(self.insns)
            if insn.code in (JEQ, JGT, JGE) and (insn.jt or insn.jf)
        ]
        far: list[int] = []  # sorted: the expanded jumps' indexes
        while True:
            grown = [
                n
                for n, insn in conditional
                if any(
                    t is not None and self._at(self.labels[t], far) - self._at(n, far) > 256
                    for t in (insn.jt, insn.jf)
                )
                and n not in far
            ]
            if not grown:
                break
            far = sorted(far + grown)
        return self._pack(set(far), far)

    def _pack(self, expanded: set[int], far: list[int]) -> bytes:
        out = bytearray()
        for n, insn in enumerate(self.insns):
            here = self._at(n, far)
            if insn.code in (RET, LD_W_ABS, AND_K):
                out += struct.pack("=HBBI", insn.code, 0, 0, insn.k)
            elif insn.code == JA:
                out += struct.pack("=HBBI", JA, 0, 0, self._offset(insn.jt, here, here + 1, far))
            elif n in expanded:
                jt = self._offset(insn.jt, here + 1, here + 3, far)
                jf = self._offset(insn.jf, here + 2, here + 3, far)
                out += struct.pack("=HBBI", insn.code, 0, 1, insn.k)
                out += struct.pack("=HBBIHBBI", JA, 0, 0, jt, JA, 0, 0, jf)
            else:
                jt = self._offset(insn.jt, here, here + 1, far)
                jf = self._offset(insn.jf, here, here + 1, far)
                out += struct.pack("=HBBI", insn.code, jt, jf, insn.k)
        return bytes(out)

    @staticmethod
    def _at(n: int, far: list[int]) -> int:
        """Where instruction n lands: each expanded jump before it adds two."""
        return n + 2 * bisect.bisect_left(far, n) if far else n

    def _offset(self, target: str | None, at: int, following: int, far: list[int]) -> int:
        """The jump offset from the instruction at `at` to `target` (None: `following`)."""
        to = following if target is None else self._at(self.labels[target], far)
        if to <= at:
            raise AssertionError(f"seccomp: jump from {at} back to {target}")
        return to - at - 1


def program(plans: list[AbiPlan]) -> bytes:
    """The filter: each plan's ABI checked by its own numbers; a call through any other ABI is
    killed, as its numbers could mean anything."""
    asm = Assembler()
    asm.load(OFF_ARCH)
    for plan in plans:
        other = asm.fresh("arch")
        asm.jump(JEQ, plan.audit_arch, jf=other)
        asm.jump(JA, 0, jt=f"abi{plan.audit_arch:x}")
        asm.label(other)
    asm.ret(RET_KILL_PROCESS)
    for plan in plans:
        _abi_block(asm, plan)
    return asm.assemble()


def _abi_block(asm: Assembler, plan: AbiPlan) -> None:
    prefix = f"abi{plan.audit_arch:x}"
    asm.label(prefix)
    asm.load(OFF_NR)
    if plan.refuse is not None:
        past = asm.fresh(f"{prefix}.abi")
        asm.jump(JGE, plan.refuse[0], jf=past)
        asm.ret(plan.refuse[1])
        asm.label(past)
    blocks: dict[Decision, str] = {}  # calls with the same argument rules share one block
    _number_tree(asm, _runs(plan), blocks, prefix)
    for decision, label in blocks.items():
        asm.label(label)
        _decision_code(asm, decision, asm.fresh)


def _runs(plan: AbiPlan) -> list[tuple[int, Decision]]:
    """(first number, decision) of each run of numbers sharing a decision, from 0 up; the last
    run goes on to the end of the numbers."""
    fallback: Decision = (((), plan.default),)
    runs: list[tuple[int, Decision]] = [(0, plan.decisions.get(0, fallback))]
    for nr in range(1, max(plan.decisions, default=0) + 2):
        decision = plan.decisions.get(nr, fallback)
        if decision != runs[-1][1]:
            runs.append((nr, decision))
    return runs


def _number_tree(
    asm: Assembler, runs: list[tuple[int, Decision]], blocks: dict[Decision, str], prefix: str
) -> None:
    """A balanced tree of `nr >= first` tests down to the runs (the accumulator holds nr), laid
    out node, lower half, upper half, so that its jumps stay short; a leaf returns, or goes to
    the block of argument rules (`blocks`, emitted later). Iterative, with its own stack."""
    todo = [(0, len(runs), asm.fresh(f"{prefix}.nr"))]
    while todo:
        lo, hi, label = todo.pop()
        asm.label(label)
        if hi - lo == 1:
            decision = runs[lo][1]
            if len(decision) == 1:  # no conditions
                asm.ret(decision[0][1])
            else:
                if decision not in blocks:
                    blocks[decision] = asm.fresh(f"{prefix}.args")
                asm.jump(JA, 0, jt=blocks[decision])
            continue
        mid = (lo + hi) // 2
        upper = asm.fresh(f"{prefix}.nr")
        asm.jump(JGE, runs[mid][0], jt=upper)
        todo.append((mid, hi, upper))
        todo.append((lo, mid, asm.fresh(f"{prefix}.nr")))  # popped next: right after its node


def _decision_code(asm: Assembler, decision: Decision, fresh: Callable[[str], str]) -> None:
    for conditions, action in decision:
        if not conditions:
            asm.ret(action)  # the last entry
            return
        fail = fresh("next")
        for condition in conditions:
            compare(asm, condition, fail, fresh)
        asm.ret(action)
        asm.label(fail)


def compare(asm: Assembler, c: Condition, fail: str, fresh: Callable[[str], str]) -> None:
    """Code that goes on when `c` holds for all 64 bits of the argument and jumps to `fail`
    when not: the high halves decide unless they are equal, then the low halves."""
    low_at = OFF_ARGS + 8 * c.arg
    high_at = low_at + 4
    lo, hi = c.value & LOW, c.value >> 32
    if c.op == "SCMP_CMP_MASKED_EQ":
        want_lo, want_hi = c.value_two & LOW, c.value_two >> 32
        for at, mask, want in ((high_at, hi, want_hi), (low_at, lo, want_lo)):
            if mask == 0 and want == 0:
                continue  # always true
            asm.load(at)
            asm.op(AND_K, mask)
            asm.jump(JEQ, want, jf=fail)
        return
    if c.op == "SCMP_CMP_EQ":
        asm.load(high_at)
        asm.jump(JEQ, hi, jf=fail)
        asm.load(low_at)
        asm.jump(JEQ, lo, jf=fail)
        return
    ok = fresh("ok")
    asm.load(high_at)
    if c.op == "SCMP_CMP_NE":
        asm.jump(JEQ, hi, jf=ok)
        asm.load(low_at)
        asm.jump(JEQ, lo, jt=fail)
    elif c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        asm.jump(JGT, hi, jt=ok)
        asm.jump(JEQ, hi, jf=fail)
        asm.load(low_at)
        asm.jump(JGT if c.op == "SCMP_CMP_GT" else JGE, lo, jf=fail)
    else:  # LT, LE: the negations of GE, GT
        asm.jump(JGT, hi, jt=fail)
        asm.jump(JEQ, hi, jf=ok)
        asm.load(low_at)
        asm.jump(JGE if c.op == "SCMP_CMP_LT" else JGT, lo, jt=fail)
    asm.label(ok)
