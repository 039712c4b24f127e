"""`--cache-to` / `--cache-from` values: `type=registry,ref=…` or `type=local,dest=…|src=…`,
with `mode=min|max` and `mounts=true|false`. Pure: text in, a CacheSpec out."""

from __future__ import annotations

from dataclasses import dataclass

from imgtool import reference as refs
from imgtool.errors import BuildError, InvalidReference

TYPES = ("registry", "local")
MODES = ("min", "max")
BOOLS = {"true": True, "false": False}
# which keys each type accepts; anything else is refused, never ignored
_KEYS = {
    "registry": frozenset({"type", "ref", "mode", "mounts"}),
    "local": frozenset({"type", "dest", "src", "mode", "mounts"}),
}


@dataclass(frozen=True)
class CacheSpec:
    type: str  # registry | local
    location: str  # the ref (registry) or the layout directory (local)
    mode: str = "min"  # min: the target stage's steps; max: every stage's
    mounts: bool = False  # also the content of RUN --mount=type=cache directories

    def __str__(self) -> str:
        where = "ref" if self.type == "registry" else "dir"
        return f"type={self.type},{where}={self.location}"


def _bad(text: str, reason: str) -> BuildError:
    return BuildError(f"cache spec {text!r}: {reason}")


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise _bad(text, f"{part!r} is not key=value")
        if key in pairs:
            raise _bad(text, f"{key} is given twice")
        pairs[key] = value.strip()
    return pairs


def _choice(text: str, key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _bad(text, f"{key}={value!r} is not one of {', '.join(allowed)}")
    return value


def parse_spec(text: str) -> CacheSpec:
    """Parse a `--cache-to`/`--cache-from` value; every key and value is checked."""
    pairs = _pairs(text)
    kind = _choice(text, "type", pairs.get("type", ""), TYPES)
    unknown = sorted(set(pairs) - _KEYS[kind])
    if unknown:
        raise _bad(text, f"unknown key {unknown[0]!r} for type={kind}")
    if kind == "registry":
        location = pairs.get("ref", "")
        if not location:
            raise _bad(text, "type=registry needs ref=")
        try:
            refs.parse(location)
        except InvalidReference as e:
            raise _bad(text, str(e)) from None
    else:
        if "dest" in pairs and "src" in pairs:
            raise _bad(text, "give dest= or src=, not both")
        location = pairs.get("dest") or pairs.get("src") or ""
        if not location:
            raise _bad(text, "type=local needs dest= or src=")
    mode = _choice(text, "mode", pairs.get("mode", "min"), MODES)
    mounts = BOOLS[_choice(text, "mounts", pairs.get("mounts", "false"), tuple(BOOLS))]
    return CacheSpec(kind, location, mode, mounts)
