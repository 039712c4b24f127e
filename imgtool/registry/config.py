"""Registry configuration as containers-registries.conf(5) describes it (version 2 TOML).

    [[registry]]
    prefix = "docker.io"
    location = "docker.io"
    insecure = false
    blocked = false
    [[registry.mirror]]
    location = "127.0.0.1:5000/hub"
    insecure = true
    [aliases]
    "python" = "docker.io/library/python"

Read from $CONTAINERS_REGISTRIES_CONF, else ~/.config/containers/registries.conf, else
/etc/containers/registries.conf, plus the drop-ins of the matching registries.conf.d.
Short names resolve as Docker resolves them (docker.io), unless an alias names them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtool import reference as refs
from imgtool.errors import ConfigError, InvalidReference
from imgtool.reference import Reference

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


@dataclass(frozen=True)
class Endpoint:
    """Where to ask for a repository: a host, the repository path there, and whether plain
    HTTP or an unverified certificate is allowed."""

    host: str
    repository: str
    insecure: bool = False
    mirror: bool = False

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[tuple[str, bool, str], ...] = ()  # (location, insecure, pull-from-mirror)


@dataclass(frozen=True)
class RegistriesConf:
    registries: tuple[RegistryEntry, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def entry_for(self, name: str) -> RegistryEntry | None:
        """The entry whose prefix matches `name` (host/repository) longest, as the man page says."""
        best: RegistryEntry | None = None
        for e in self.registries:
            p = e.prefix
            matches = (
                name == p
                or name.startswith(p.rstrip("/") + "/")
                or (p.startswith("*.") and name.split("/", 1)[0].endswith(p[1:]))
            )
            if matches and (best is None or len(p) > len(best.prefix)):
                best = e
        return best

    def resolve(self, text: str) -> Reference:
        """Parse a user's reference; a short name with an alias takes the alias's name."""
        if refs.is_short_name(text) and self.aliases:
            name, suffix = _split_suffix(text)
            target = self.aliases.get(name)
            if target is not None:
                try:
                    return refs.parse(target + suffix)
                except InvalidReference as e:
                    raise ConfigError(f"alias {name!r} = {target!r}: {e.reason}") from None
        return refs.parse(text)

    def endpoints(self, ref: Reference, insecure: bool = False) -> list[Endpoint]:
        """Mirrors first, in order, then the registry itself (or the location it is moved to)."""
        name = ref.name
        entry = self.entry_for(name)
        if entry is None:
            return [Endpoint(ref.api_host, ref.repository, insecure)]
        if entry.blocked:
            raise ConfigError(f"registry {ref.registry} is blocked by {', '.join(self.sources)}")
        out: list[Endpoint] = []
        by_digest = ref.digest is not None
        for location, mirror_insecure, pull_from in entry.mirrors:
            if (pull_from == "digest-only" and not by_digest) or (
                pull_from == "tag-only" and by_digest
            ):
                continue
            out.append(_rewrite(name, entry.prefix, location, mirror_insecure or insecure, True))
        out.append(_rewrite(name, entry.prefix, entry.location, entry.insecure or insecure, False))
        return out


def _split_suffix(text: str) -> tuple[str, str]:
    at = text.find("@")
    name, digest = (text[:at], text[at:]) if at >= 0 else (text, "")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:] + digest
    return name, digest


def _rewrite(name: str, prefix: str, location: str, insecure: bool, mirror: bool) -> Endpoint:
    rest = name[len(prefix) :].lstrip("/") if not prefix.startswith("*.") else name.split("/", 1)[1]
    full = f"{location.rstrip('/')}/{rest}" if rest else location
    host, _, repo = full.partition("/")
    if host == refs.DEFAULT_DOMAIN:
        host = refs.DOCKER_HUB_API_HOST
        if "/" not in repo:
            repo = refs.OFFICIAL_PREFIX + repo
    return Endpoint(host, repo, insecure, mirror)


def resolve_name(text: str) -> Reference:
    """A name as a user typed it, as every command reads it: a short name through the aliases
    of registries.conf (read only for short names), any other as Docker normalizes it."""
    if not refs.is_short_name(text):
        return refs.parse(text)
    return load().resolve(text)


def default_paths() -> list[Path]:
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if env:
        return [Path(env)]
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = home / "containers" / "registries.conf"
    return [user if user.exists() else Path("/etc/containers/registries.conf")]


def load(paths: list[Path] | None = None) -> RegistriesConf:
    """Read registries.conf and its drop-in directory; missing files mean no configuration."""
    files: list[Path] = []
    for p in paths if paths is not None else default_paths():
        if p.is_file():
            files.append(p)
        dropins = p.with_name(p.name + ".d")
        if dropins.is_dir():
            files += sorted(dropins.glob("*.conf"))
    registries: dict[str, RegistryEntry] = {}
    aliases: dict[str, str] = {}
    if files:
        import tomllib  # only when there is a file: most commands start without one
    for f in files:
        try:
            doc = tomllib.loads(f.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{f}: {e}") from None
        for entry in _entries(doc, f):
            registries[entry.prefix] = entry  # later files override earlier ones, per prefix
        for k, v in (doc.get("aliases") or {}).items():
            if not isinstance(v, str):
                raise ConfigError(f"{f}: alias {k!r} must be a string")
            aliases[k] = v
    return RegistriesConf(tuple(registries.values()), aliases, tuple(str(f) for f in files))


def _entries(doc: dict[str, Any], source: Path) -> list[RegistryEntry]:
    out = []
    for r in doc.get("registry") or []:
        if not isinstance(r, dict):
            raise ConfigError(f"{source}: [[registry]] entries must be tables")
        location = r.get("location") or ""
        prefix = r.get("prefix") or location
        if not prefix:
            raise ConfigError(f"{source}: a [[registry]] needs a prefix or a location")
        mirrors = []
        for m in r.get("mirror") or []:
            if not isinstance(m, dict) or not m.get("location"):
                raise ConfigError(f"{source}: [[registry.mirror]] of {prefix} needs a location")
            pull_from = m.get("pull-from-mirror", "all")
            if pull_from not in ("all", "digest-only", "tag-only"):
                raise ConfigError(f"{source}: pull-from-mirror {pull_from!r} is not valid")
            mirrors.append((m["location"], bool(m.get("insecure", False)), pull_from))
        if r.get("mirror-by-digest-only"):
            mirrors = [(loc, ins, "digest-only") for loc, ins, _ in mirrors]
        out.append(
            RegistryEntry(
                _normalize_prefix(prefix),
                location or prefix,
                bool(r.get("insecure", False)),
                bool(r.get("blocked", False)),
                tuple(mirrors),
            )
        )
    return out


def _normalize_prefix(prefix: str) -> str:
    return refs.DEFAULT_DOMAIN if prefix == refs.LEGACY_DEFAULT_DOMAIN else prefix
