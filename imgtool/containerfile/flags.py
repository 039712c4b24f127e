"""Instruction flags (`--name=value`) and RUN's `--mount` specs, parsed and checked.

Each instruction names the flags it takes and their kind; an unknown flag, a repeated
single flag, a flag without its value or a boolean that is neither true nor false is an
error naming the instruction's line, as BuildKit's BFlags refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from imgtool.containerfile import values
from imgtool.containerfile.parser import Instruction
from imgtool.errors import ContainerfileError

_FLAG = re.compile(r"^--([a-zA-Z0-9][a-zA-Z0-9-]*)(=(.*))?$", re.S)


class Kind(Enum):
    BOOL = "bool"  # --x, --x=true, --x=false
    STRING = "string"  # --x=value, once
    STRINGS = "strings"  # --x=value, repeatable


Bad = Callable[[str], ContainerfileError]


def bad_of(inst: Instruction, file: str) -> Bad:
    """An error about `inst`, at its line."""
    return lambda text: ContainerfileError(text, file=file, line=inst.line)


@dataclass(frozen=True)
class Flags:
    given: tuple[tuple[str, str], ...]  # (name, value) in order; a bare boolean is "true"

    def string(self, name: str) -> str | None:
        return next((v for k, v in self.given if k == name), None)

    def strings(self, name: str) -> tuple[str, ...]:
        return tuple(v for k, v in self.given if k == name)

    def boolean(self, name: str) -> bool:
        return self.string(name) == "true"


def parse_flags(inst: Instruction, allowed: Mapping[str, Kind], bad: Bad) -> Flags:
    seen: list[tuple[str, str]] = []
    kw = inst.keyword.upper()
    for text in inst.flags:
        m = _FLAG.match(text)
        if m is None:
            raise bad(f"bad flag {text!r} for {kw}")
        name, value = m.group(1), m.group(3)
        kind = allowed.get(name)
        if kind is None:
            raise bad(f"unknown flag --{name} for {kw}")
        if kind is not Kind.STRINGS and any(k == name for k, _ in seen):
            raise bad(f"{kw}: --{name} given more than once")
        if kind is Kind.BOOL:
            value = "true" if value is None else value.lower()
            if value not in ("true", "false"):
                raise bad(f"{kw}: --{name}={m.group(3)}: expected true or false")
        elif not value:
            raise bad(f"{kw}: --{name} needs a value (--{name}=…)")
        seen.append((name, value))
    return Flags(tuple(seen))


MOUNT_TYPES = ("bind", "cache", "secret", "ssh", "tmpfs")
# what each key of a --mount spec is called canonically; only keys imgtool acts on
_MOUNT_KEYS = {
    "type": "type",
    "target": "target",
    "dst": "target",
    "destination": "target",
    "source": "source",
    "src": "source",
    "from": "from",
    "id": "id",
    "readonly": "readonly",
    "ro": "readonly",
    "readwrite": "readwrite",
    "rw": "readwrite",
    "required": "required",
    "size": "size",
    "sharing": "sharing",
}


@dataclass(frozen=True)
class MountSpec:
    """One `RUN --mount=…`: its type and its options by canonical key."""

    kind: str
    options: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        # a repeated key: the last one counts, as in BuildKit's (and `type`'s here)
        return next((v for k, v in reversed(self.options) if k == key), default)

    @property
    def target(self) -> str:
        return self.get("target")

    def is_true(self, key: str) -> bool:
        return self.get(key).lower() == "true"


def parse_mount(text: str, bad: Bad) -> MountSpec:
    options: list[tuple[str, str]] = []
    for part in text.split(","):
        key, eq, value = part.partition("=")
        canonical = _MOUNT_KEYS.get(key.strip().lower())
        if canonical is None:
            raise bad(f"--mount: unknown option {key!r} in {text!r}")
        options.append((canonical, value if eq else "true"))
    spec = MountSpec(dict(options).get("type", "bind"), tuple(options))
    _check_mount(spec, text, bad)
    return spec


def _check_mount(spec: MountSpec, text: str, bad: Bad) -> None:
    if spec.kind not in MOUNT_TYPES:
        raise bad(f"--mount: unsupported type {spec.kind!r} (one of {', '.join(MOUNT_TYPES)})")
    if spec.kind in ("bind", "cache", "tmpfs") and not spec.target:
        raise bad(f"--mount=type={spec.kind} needs a target: {text!r}")
    for key in ("readonly", "readwrite", "required"):
        if spec.get(key, "true").lower() not in ("true", "false"):
            raise bad(f"--mount: {key}={spec.get(key)}: expected true or false")
    if spec.get("sharing", "shared") != "shared":
        raise bad(f"--mount: sharing={spec.get('sharing')} is not supported (shared only)")
    size = spec.get("size")
    if size and not values.has_variable(size):
        try:
            values.byte_size(size)
        except ValueError as e:
            raise bad(f"--mount=type=tmpfs size: {e}") from None
