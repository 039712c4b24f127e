"""Registry credentials where Docker and Podman keep them.

Looked up, first found wins (podman's order):
  $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json;
  $XDG_CONFIG_HOME/containers/auth.json (~/.config/containers/auth.json);
  $DOCKER_CONFIG/config.json (~/.docker/config.json).
In each file: `credHelpers[host]`, then `auths[host]`, then `credsStore`, as docker does.
Docker Hub's entry is the legacy key https://index.docker.io/v1/.

`imgtool login` replaces the entry that lookup finds for the host, in whichever file holds it,
so the last login is the one used; a host with no entry yet goes where `docker login` would
write it ($REGISTRY_AUTH_FILE when that is set). A helper is used when that file names one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from imgtool.atomic import atomic_write
from imgtool.errors import CredentialsError
from imgtool.reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST, DOCKER_HUB_AUTH_KEY
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import Any


class Credentials(Frozen):
    __slots__ = ("username", "password", "identity_token")
    username: str
    password: str
    identity_token: str  # an OAuth2 refresh token from a helper's "<token>" username

    def __init__(self, username: str, password: str, identity_token: str = "") -> None:
        self._init(username, password, identity_token)

    def basic_header(self) -> str:
        import base64  # ~1 ms: only where an auth entry is read or written

        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def auth_key(host: str) -> str:
    """The key a host's credentials are filed under."""
    if host in (DEFAULT_DOMAIN, DOCKER_HUB_API_HOST, "index.docker.io"):
        return DOCKER_HUB_AUTH_KEY
    return host


def _normalize_key(key: str) -> str:
    """`https://host/v1/`, `http://host`, `host/v2/` all name `host`."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
    key = key.split("/", 1)[0]
    return DOCKER_HUB_AUTH_KEY if key in ("index.docker.io", DEFAULT_DOMAIN) else key


def auth_files() -> list[Path]:
    files = []
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        files.append(Path(env))
    elif os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    files.append(config_home / "containers" / "auth.json")
    files.append(docker_config_path())
    return files


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CredentialsError(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError as e:
        raise CredentialsError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{path} must hold a JSON object")
    return doc


def _from_auths(doc: dict[str, Any], key: str, path: Path) -> Credentials | None:
    for k, entry in (doc.get("auths") or {}).items():
        if _normalize_key(k) != key or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            import base64

            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise CredentialsError(f"{path}: the auth entry for {k} is not base64") from None
            return Credentials(user, password, entry.get("identitytoken", ""))
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
        if entry.get("identitytoken"):
            return Credentials("", "", entry["identitytoken"])
    return None


def run_helper(helper: str, action: str, payload: str) -> str:
    import subprocess  # only when a helper runs: 4 ms that a pull without one never needs

    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, action], input=payload, capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {program} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"credential helper {program} {action} timed out") from None
    if proc.returncode != 0:
        out = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        if action == "get" and out and "credentials not found" in out[0].lower():
            return ""
        reason = out[0] if out else f"exit status {proc.returncode}"
        raise CredentialsError(f"credential helper {program} {action} failed: {reason}")
    return proc.stdout


def _from_helper(helper: str, key: str) -> Credentials | None:
    out = run_helper(helper, "get", key)
    if not out.strip():
        return None
    try:
        doc = json.loads(out)
        user, secret = doc["Username"], doc["Secret"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(
            f"credential helper docker-credential-{helper} gave no JSON"
        ) from None
    if user == "<token>":
        return Credentials("", "", secret)
    return Credentials(user, secret)


def _in_file(doc: dict[str, Any], key: str, path: Path) -> Credentials | None:
    """One auth file's credentials for a key, as docker reads them: `credHelpers[key]`, then
    `auths[key]`, then `credsStore`."""
    helpers = {_normalize_key(k): v for k, v in (doc.get("credHelpers") or {}).items()}
    if key in helpers:
        return _from_helper(helpers[key], key)
    found = _from_auths(doc, key, path)
    if found is None and doc.get("credsStore"):
        found = _from_helper(doc["credsStore"], key)
    return found


def _first_holding(key: str) -> tuple[Path, Credentials] | None:
    """The first auth file, in lookup order, with credentials for `key`, and those."""
    for path in auth_files():
        doc = _load(path)
        if doc is None:
            continue
        found = _in_file(doc, key, path)
        if found is not None:
            return path, found
    return None


def lookup(host: str) -> Credentials | None:
    """Credentials for a registry host (`host[:port]`), or None for anonymous access."""
    found = _first_holding(auth_key(host))
    return found[1] if found else None


def _target(key: str) -> Path:
    """Where `login` files a host's credentials: in the file whose entry lookup would use, so
    that the new ones are what the next pull uses (a stale entry in podman's auth.json would
    otherwise win over docker's config.json); for a host with no entry yet, where
    `docker login` writes (or $REGISTRY_AUTH_FILE, as podman login)."""
    found = _first_holding(key)
    if found is not None:
        return found[0]
    env = os.environ.get("REGISTRY_AUTH_FILE")
    return Path(env) if env else docker_config_path()


def _save(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps(doc, indent="\t").encode() + b"\n", mode=0o600)


def store(host: str, creds: Credentials) -> str:
    """File credentials as `docker login` does; returns where they went."""
    key = auth_key(host)
    path = _target(key)
    doc = _load(path) or {}
    helpers = {_normalize_key(k): v for k, v in (doc.get("credHelpers") or {}).items()}
    helper = helpers.get(key) or doc.get("credsStore")
    if helper:
        payload = json.dumps(
            {"ServerURL": key, "Username": creds.username, "Secret": creds.password}
        )
        run_helper(helper, "store", payload)
        return f"docker-credential-{helper}"
    import base64

    auths = doc.setdefault("auths", {})
    for k in [k for k in auths if _normalize_key(k) == key and k != key]:
        del auths[k]
    auths[key] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    _save(path, doc)
    return str(path)


def erase(host: str) -> bool:
    """Forget a host's credentials in every auth file; True when some were found."""
    key = auth_key(host)
    found = False
    for path in auth_files():
        doc = _load(path)
        if not doc:
            continue
        helper = (doc.get("credHelpers") or {}).get(key) or doc.get("credsStore")
        auths = doc.get("auths") or {}
        keys = [k for k in auths if _normalize_key(k) == key]
        if keys:
            for k in keys:
                del auths[k]
            _save(path, doc)
            found = True
        elif helper:
            try:
                run_helper(helper, "erase", key)
                found = True
            except CredentialsError:
                pass
    return found
