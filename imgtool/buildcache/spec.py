"""`--cache-to` / `--cache-from` values: `type=registry,ref=…` or `type=local,dest=…` (to) /
`src=…` (from), with `mode=min|max` (to) and `mounts=true|false` (both: export the cache
mounts / restore them). Pure: text in, a CacheSpec out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imgtool import reference as refs
from imgtool.errors import BuildError, InvalidReference

Direction = Literal["from", "to"]
TYPES = ("registry", "local")
MODES = ("min", "max")
BOOLS = {"true": True, "false": False}
# which keys each type accepts; anything else is refused, never ignored
_KEYS = {
    "registry": frozenset({"type", "ref", "mode", "mounts"}),
    "local": frozenset({"type", "dest", "src", "mode", "mounts"}),
}
# keys of a type that only one flag uses: on the other, refused with the reason
_OTHER_FLAGS = {
    ("from", "mode"): "mode= chooses what --cache-to exports; --cache-from reads whatever is there",
    ("from", "dest"): "dest= is where --cache-to writes; --cache-from reads src=",
    ("to", "src"): "src= is what --cache-from reads; --cache-to writes dest=",
}
_DIRECTORY = {"from": "src", "to": "dest"}  # type=local's directory key, by flag


@dataclass(frozen=True)
class CacheSpec:
    type: str  # registry | local
    location: str  # the ref (registry) or the layout directory (local)
    mode: str = "min"  # min: the target stage's steps; max: every stage's
    mounts: bool = False  # also the content of RUN --mount=type=cache directories

    def __str__(self) -> str:
        where = "ref" if self.type == "registry" else "dir"
        return f"type={self.type},{where}={self.location}"


class _Refused(ValueError):
    """A reason the value is refused; parse_spec names the flag and the value."""


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise _Refused(f"{part!r} is not key=value")
        if key in pairs:
            raise _Refused(f"{key} is given twice")
        pairs[key] = value.strip()
    return pairs


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _Refused(f"{key}={value!r} is not one of {', '.join(allowed)}")
    return value


def _check_keys(kind: str, keys: set[str], direction: Direction) -> None:
    unknown = sorted(keys - _KEYS[kind])
    if unknown:
        raise _Refused(f"unknown key {unknown[0]!r} for type={kind}")
    for key in sorted(keys):
        if (direction, key) in _OTHER_FLAGS:
            raise _Refused(_OTHER_FLAGS[direction, key])


def _location(kind: str, pairs: dict[str, str], direction: Direction) -> str:
    if kind == "registry":
        location = pairs.get("ref", "")
        if not location:
            raise _Refused("type=registry needs ref=")
        try:
            refs.parse(location)
        except InvalidReference as e:
            raise _Refused(str(e)) from None
        return location
    key = _DIRECTORY[direction]
    if not pairs.get(key):
        raise _Refused(f"type=local needs {key}=")
    return pairs[key]


def parse_spec(text: str, direction: Direction) -> CacheSpec:
    """Parse the value of `--cache-{direction}`; every key and value is checked, and a key
    only the other flag uses is refused (mode= and dest= on --cache-from, src= on --cache-to)."""
    try:
        pairs = _pairs(text)
        kind = _choice("type", pairs.get("type", ""), TYPES)
        _check_keys(kind, set(pairs), direction)
        location = _location(kind, pairs, direction)
        mode = _choice("mode", pairs.get("mode", "min"), MODES)
        mounts = BOOLS[_choice("mounts", pairs.get("mounts", "false"), tuple(BOOLS))]
    except _Refused as e:
        raise BuildError(f"--cache-{direction} {text!r}: {e}") from None
    return CacheSpec(kind, location, mode, mounts)
