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

What the files say is kept, parsed, in the user's cache (`~/.cache/imgtool/registries.json`),
under the identity of every file read (path, device, inode, size, modification and change
times; ctime cannot be set back by hand): Debian's short-name aliases alone cost a re-pull or
a `run` of a short name ~10 ms to parse (tomllib, with typing and datetime). A file added,
removed or changed, or a cache file anyone but our user could have written, means the files
are read again.
"""

from __future__ import annotations

import json
import os

from imgtool import reference as refs
from imgtool.atomic import read_private, write_private
from imgtool.errors import ConfigError, InvalidReference
from imgtool.reference import Reference
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from imgtool.atomic import StrPath

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


class Endpoint(Frozen):
    """Where to ask for a repository: a host, the repository path there, and whether plain
    HTTP or an unverified certificate is allowed."""

    __slots__ = ("host", "repository", "insecure", "mirror")
    host: str
    repository: str
    insecure: bool
    mirror: bool

    def __init__(
        self, host: str, repository: str, insecure: bool = False, mirror: bool = False
    ) -> None:
        self._init(host, repository, insecure, mirror)

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


class RegistryEntry(Frozen):
    __slots__ = ("prefix", "location", "insecure", "blocked", "mirrors")
    prefix: str
    location: str
    insecure: bool
    blocked: bool
    mirrors: tuple[tuple[str, bool, str], ...]  # (location, insecure, pull-from-mirror)

    def __init__(
        self,
        prefix: str,
        location: str,
        insecure: bool = False,
        blocked: bool = False,
        mirrors: tuple[tuple[str, bool, str], ...] = (),
    ) -> None:
        self._init(prefix, location, insecure, blocked, mirrors)


class RegistriesConf(Frozen):
    __slots__ = ("registries", "aliases", "sources")
    registries: tuple[RegistryEntry, ...]
    aliases: dict[str, str]
    sources: tuple[str, ...]

    def __init__(
        self,
        registries: tuple[RegistryEntry, ...] = (),
        aliases: dict[str, str] | None = None,
        sources: tuple[str, ...] = (),
    ) -> None:
        self._init(registries, {} if aliases is None else aliases, sources)

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


# paths are strings (os.path), not pathlib: a re-pull reads this (see store.as_path)


def default_paths() -> list[str]:
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if env:
        return [env]
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(_home(), ".config")
    user = os.path.join(home, "containers", "registries.conf")
    return [user if os.path.exists(user) else "/etc/containers/registries.conf"]


def _home() -> str:
    """The user's home directory, as Path.home() finds it; RuntimeError without one."""
    home = os.path.expanduser("~")
    if home == "~":
        raise RuntimeError("Could not determine home directory.")
    return home


def load(paths: Sequence[StrPath] | None = None) -> RegistriesConf:
    """Read registries.conf and its drop-in directory; missing files mean no configuration.
    From the cache when it holds these very files (see the module's docstring)."""
    files: list[str] = []
    for given in paths if paths is not None else default_paths():
        p = os.fspath(given)
        if os.path.isfile(p):
            files.append(p)
        dropins = p.rstrip("/") + ".d"
        if os.path.isdir(dropins):
            files += sorted(
                os.path.join(dropins, name)
                for name in os.listdir(dropins)
                if name.endswith(".conf")
            )
    if not files:
        return RegistriesConf()
    identity = _identity(files)
    conf = _cached(identity) if identity is not None else None
    if conf is None:
        conf = _parse(files)
        if identity is not None:
            _keep(identity, conf)
    return conf


CACHE_FILE = "registries.json"
CACHE_LIMIT = 4 << 20
CACHE_FORMAT = 1  # raised when what is kept, or how the files are read, changes


def cache_dir() -> str | None:
    """$XDG_CACHE_HOME/imgtool (~/.cache/imgtool); None without a home to put it in."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    try:
        # a relative XDG_CACHE_HOME is to be ignored (XDG Base Directory specification)
        return os.path.join(
            xdg if xdg.startswith("/") else os.path.join(_home(), ".cache"), "imgtool"
        )
    except RuntimeError:
        return None


def _identity(files: list[str]) -> list[list[object]] | None:
    """What says that a file is the one parsed before: a change of content changes its size or
    its times, and a replaced file its inode. None when one is gone already (the parse says
    so)."""
    out: list[list[object]] = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            return None
        out.append([f, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out


def _cached(identity: list[list[object]]) -> RegistriesConf | None:
    """The configuration the cache holds for exactly these files, or None."""
    where = cache_dir()
    raw = None if where is None else read_private(where, CACHE_FILE, CACHE_LIMIT)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if doc["format"] != CACHE_FORMAT or doc["files"] != identity:
            return None
        registries = tuple(
            RegistryEntry(
                str(prefix),
                str(location),
                bool(insecure),
                bool(blocked),
                tuple((str(loc), bool(ins), str(how)) for loc, ins, how in mirrors),
            )
            for prefix, location, insecure, blocked, mirrors in doc["registries"]
        )
        aliases = {str(k): str(v) for k, v in doc["aliases"].items()}
        sources = tuple(str(s) for s in doc["sources"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # damaged or of another version: read the files again
    return RegistriesConf(registries, aliases, sources)


def _keep(identity: list[list[object]], conf: RegistriesConf) -> None:
    doc = {
        "format": CACHE_FORMAT,
        "files": identity,
        "registries": [
            [e.prefix, e.location, e.insecure, e.blocked, [list(m) for m in e.mirrors]]
            for e in conf.registries
        ],
        "aliases": conf.aliases,
        "sources": list(conf.sources),
    }
    where = cache_dir()
    if where is not None:
        write_private(where, CACHE_FILE, json.dumps(doc).encode())


def _parse(files: list[str]) -> RegistriesConf:
    registries: dict[str, RegistryEntry] = {}
    aliases: dict[str, str] = {}
    import tomllib  # only when there is a file and the cache does not hold it

    for f in files:
        try:
            with open(f) as text:
                doc = tomllib.loads(text.read())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{f}: {e}") from None
        for entry in _entries(doc, f):
            registries[entry.prefix] = entry  # later files override earlier ones, per prefix
        for k, v in (doc.get("aliases") or {}).items():
            if not isinstance(v, str):
                raise ConfigError(f"{f}: alias {k!r} must be a string")
            aliases[k] = v
    return RegistriesConf(tuple(registries.values()), aliases, tuple(files))


def _entries(doc: dict[str, Any], source: str) -> list[RegistryEntry]:
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
