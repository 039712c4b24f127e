"""Docker's seccomp profile format (moby's profiles/seccomp), read and checked into values.

The fields as moby reads them: defaultAction, defaultErrnoRet, architectures or archMap,
syscalls[] with names (or name), action, errnoRet, args (index, value, valueTwo, op), includes and
excludes (caps, arches, minKernel), comment. A key, action, operator, architecture or capability
imgtool does not know, or cannot honour, is an error naming the file and the field: a profile is
never half applied (a misspelt "args" or "includes" would turn a narrow rule into a wide one).
Syscall names are not checked here: a name an ABI's table lacks is skipped there, as libseccomp
skips it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from imgtool.errors import SandboxError
from imgtool.sandbox.spec import CAP_NUMBERS

# SECCOMP_RET_* of each action (libseccomp's SCMP_ACT_KILL is the thread's death)
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
WITH_DATA = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")  # errnoRet: the errno, or the tracer's data
EPERM = 1
OPS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)
# libseccomp's architecture names; the compiler knows the x86 and arm64 ones
# fmt: off
SCMP_ARCHES = frozenset({
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
})
# what includes/excludes.arches name: the host's architecture as moby spells it
ARCH_NAMES = frozenset({
    "x86", "amd64", "x32", "arm", "arm64", "mips", "mipsle", "mipsel", "mips64", "mips64n32",
    "mipsel64", "mipsel64n32", "mips3l64n32", "ppc", "ppc64", "ppc64le", "riscv64", "s390",
    "s390x", "loong64", "loongarch64", "parisc", "parisc64", "m68k", "sh", "sheb",
})
# fmt: on
TOP_KEYS = frozenset({"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls"})
TOP_KEYS_UNSUPPORTED = ("flags", "listenerPath", "listenerMetadata")  # fine while empty
# "errno" is podman's spelling of errnoRet for people; errnoRet is what counts
RULE_KEYS = frozenset(
    {"names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes", "errno"}
)
FILTER_KEYS = frozenset({"caps", "arches", "minKernel"})
ARG_KEYS = frozenset({"index", "value", "valueTwo", "op"})
MAX_PROFILE_BYTES = 4 << 20

# values: named tuples, which cost a tenth of a dataclass to define (this module is imported by
# every `imgtool run`); the profile, hashed by identity, is a dataclass


class Condition(NamedTuple):
    """One argument comparison, on all 64 bits: `args[index] <op> value`, or for MASKED_EQ
    `args[index] & value == value_two` (the field is `arg`: a named tuple has an index method)."""

    arg: int
    op: str
    value: int
    value_two: int = 0


class Filter(NamedTuple):
    caps: tuple[str, ...] = ()  # "CAP_SYS_ADMIN"
    arches: tuple[str, ...] = ()  # "amd64"
    min_kernel: tuple[int, int] | None = None


class Rule(NamedTuple):
    names: tuple[str, ...]
    action: int  # the SECCOMP_RET_* value, its data (errno) included
    conditions: tuple[Condition, ...] = ()  # all must hold
    includes: Filter = Filter()  # the rule counts only with all of these
    excludes: Filter = Filter()  # and not with any of these


@dataclass(frozen=True, eq=False)  # hashed by identity: compiled programs are cached per profile
class Profile:
    source: str  # the file, for messages
    default_action: int
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    rules: tuple[Rule, ...] = ()


def read(path: str) -> Profile:
    """The profile in the file at `path`. SandboxError names the file and the culprit."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as e:
        raise SandboxError("seccomp profile", path, e.errno or 0) from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise _error(path, "", f"larger than {MAX_PROFILE_BYTES} bytes")
    return parse(raw, path)


def parse(raw: bytes | str, source: str) -> Profile:
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _error(source, "", f"not JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise _error(source, "", f"not JSON: {type(e).__name__}") from None
    top = _object(source, "the profile", doc)
    _known_keys(source, "", top, TOP_KEYS | set(TOP_KEYS_UNSUPPORTED))
    for key in TOP_KEYS_UNSUPPORTED[:2]:  # metadata means nothing without a listener
        if top.get(key):
            raise _error(source, key, "not supported by imgtool (no seccomp agent, no flags)")
    if "defaultAction" not in top:
        raise _error(source, "defaultAction", "missing")
    default = _action(
        source, "defaultAction", "defaultErrnoRet", top["defaultAction"], top.get("defaultErrnoRet")
    )
    arches = tuple(
        _arch(source, f"architectures[{i}]", a) for i, a in _items(source, "architectures", top)
    )
    arch_map = tuple(_arch_map_entry(source, i, e) for i, e in _items(source, "archMap", top))
    if arches and arch_map:
        raise _error(source, "archMap", "give either architectures or archMap, not both")
    rules = tuple(_rule(source, i, r) for i, r in _items(source, "syscalls", top))
    return Profile(source, default, arches, arch_map, rules)


def _rule(source: str, i: int, raw: Any) -> Rule:
    where = f"syscalls[{i}]"
    obj = _object(source, where, raw)
    _known_keys(source, where, obj, RULE_KEYS)
    if "name" in obj and obj.get("names"):
        raise _error(source, where, "give either name or names, not both")
    if "name" in obj:
        names: tuple[str, ...] = (_string(source, f"{where}.name", obj["name"]),)
    else:
        names = tuple(
            _string(source, f"{where}.names[{j}]", n)
            for j, n in _items(source, f"{where}.names", obj, "names")
        )
    if "action" not in obj:
        raise _error(source, f"{where}.action", "missing")
    action = _action(
        source, f"{where}.action", f"{where}.errnoRet", obj["action"], obj.get("errnoRet")
    )
    conditions = tuple(
        _condition(source, f"{where}.args[{j}]", a)
        for j, a in _items(source, f"{where}.args", obj, "args")
    )
    includes = _filter(source, f"{where}.includes", obj.get("includes"))
    excludes = _filter(source, f"{where}.excludes", obj.get("excludes"))
    return Rule(names, action, conditions, includes, excludes)


def _action(source: str, action_field: str, errno_field: str, name: Any, errno_ret: Any) -> int:
    """The SECCOMP_RET_* value of an action with its errnoRet."""
    if name == "SCMP_ACT_NOTIFY":
        raise _error(source, action_field, "SCMP_ACT_NOTIFY is not supported (no seccomp agent)")
    if not isinstance(name, str) or name not in ACTIONS:
        raise _error(source, action_field, f"unknown action {name!r}")
    if name not in WITH_DATA:
        if errno_ret is not None:
            raise _error(source, errno_field, "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take one")
        return ACTIONS[name]
    if errno_ret is None:
        return ACTIONS[name] | EPERM  # as runc: EPERM unless told otherwise
    limit = 4095 if name == "SCMP_ACT_ERRNO" else 0xFFFF  # errno values end at MAX_ERRNO
    return ACTIONS[name] | _uint(source, errno_field, errno_ret, limit)


def _condition(source: str, where: str, raw: Any) -> Condition:
    obj = _object(source, where, raw)
    _known_keys(source, where, obj, ARG_KEYS)
    for key in ("index", "value", "op"):
        if key not in obj:
            raise _error(source, f"{where}.{key}", "missing")
    index = _uint(source, f"{where}.index", obj["index"], 5)
    op = obj["op"]
    if op not in OPS:
        raise _error(source, f"{where}.op", f"unknown operator {op!r}")
    value = _uint(source, f"{where}.value", obj["value"], 2**64 - 1)
    value_two = _uint(source, f"{where}.valueTwo", obj.get("valueTwo", 0), 2**64 - 1)
    return Condition(index, op, value, value_two)


def _filter(source: str, where: str, raw: Any) -> Filter:
    if raw is None:
        return Filter()
    obj = _object(source, where, raw)
    _known_keys(source, where, obj, FILTER_KEYS)
    caps = tuple(
        _cap(source, f"{where}.caps[{i}]", c)
        for i, c in _items(source, f"{where}.caps", obj, "caps")
    )
    arches = []
    for i, a in _items(source, f"{where}.arches", obj, "arches"):
        if a not in ARCH_NAMES:
            raise _error(source, f"{where}.arches[{i}]", f"unknown architecture {a!r}")
        arches.append(a)
    min_kernel = None
    if obj.get("minKernel") is not None:
        text = obj["minKernel"]
        m = re.fullmatch(r"(\d{1,4})\.(\d{1,4})", text) if isinstance(text, str) else None
        if m is None:
            raise _error(source, f"{where}.minKernel", f"{text!r} is not a MAJOR.MINOR version")
        min_kernel = (int(m.group(1)), int(m.group(2)))
    return Filter(caps, tuple(arches), min_kernel)


def _cap(source: str, where: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.startswith("CAP_") or raw[4:] not in CAP_NUMBERS:
        raise _error(source, where, f"unknown capability {raw!r}")
    return raw


def _arch(source: str, where: str, raw: Any) -> str:
    if raw not in SCMP_ARCHES:
        raise _error(source, where, f"unknown architecture {raw!r}")
    return raw


def _arch_map_entry(source: str, i: int, raw: Any) -> tuple[str, tuple[str, ...]]:
    where = f"archMap[{i}]"
    obj = _object(source, where, raw)
    _known_keys(source, where, obj, {"architecture", "subArchitectures"})
    arch = _arch(source, f"{where}.architecture", obj.get("architecture"))
    subs = tuple(
        _arch(source, f"{where}.subArchitectures[{j}]", s)
        for j, s in _items(source, f"{where}.subArchitectures", obj, "subArchitectures")
    )
    return arch, subs


def _items(source: str, where: str, obj: dict[str, Any], key: str = "") -> list[tuple[int, Any]]:
    """The (index, item) pairs of the list at obj[key] (`where`'s last part by default);
    absent or null is empty, as in Go."""
    value = obj.get(key or where.rsplit(".", 1)[-1])
    if value is None:
        return []
    if not isinstance(value, list):
        raise _error(source, where, f"a list was expected, not {type(value).__name__}")
    return list(enumerate(value))


def _object(source: str, where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _error(source, where, f"an object was expected, not {type(raw).__name__}")
    return raw


def _known_keys(
    source: str, where: str, obj: dict[str, Any], known: set[str] | frozenset[str]
) -> None:
    for key in obj:
        if key not in known:
            raise _error(source, f"{where}.{key}" if where else key, "unknown field")


def _string(source: str, where: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise _error(source, where, f"a string was expected, not {type(raw).__name__}")
    return raw


def _uint(source: str, where: str, raw: Any, limit: int) -> int:
    # bool is an int to Python, not to JSON
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= limit:
        raise _error(source, where, f"{raw!r} is not a whole number from 0 to {limit}")
    return raw


def _error(source: str, where: str, message: str) -> SandboxError:
    return SandboxError(
        "seccomp profile", source, detail=f"{where}: {message}" if where else message
    )
