"""WWW-Authenticate challenges and the bearer-token flow of the distribution spec."""

from __future__ import annotations

import re
import threading
import time

from imgtool.values import Frozen, Value

_PARAM = re.compile(r'\s*([a-zA-Z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


class Challenge(Frozen):
    __slots__ = ("scheme", "params")
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]

    def __init__(self, scheme: str, params: dict[str, str] | None = None) -> None:
        self._init(scheme, {} if params is None else params)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        """A challenge may ask for several scopes at once, space-separated (cross-repo mount)."""
        return tuple(self.params.get("scope", "").split())

    @property
    def error(self) -> str:
        return self.params.get("error", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse `Bearer realm="…",service="…",scope="…"` (and several challenges in one header)."""
    out: list[Challenge] = []
    rest = header.strip()
    while rest:
        m = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if not m:
            break
        scheme = m.group(1).lower()
        rest = rest[m.end() :]
        params: dict[str, str] = {}
        while True:
            pm = _PARAM.match(rest)
            if not pm:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[pm.end() :]
        out.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return out


def repository_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def merge_scopes(scopes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """One scope per resource, with the union of its actions, in a stable order."""
    merged: dict[str, list[str]] = {}
    for s in scopes:
        kind, _, rest = s.partition(":")
        name, _, actions = rest.rpartition(":")
        key = f"{kind}:{name}"
        acts = merged.setdefault(key, [])
        for a in actions.split(","):
            if a and a not in acts:
                acts.append(a)
    return tuple(f"{k}:{','.join(sorted(v))}" for k, v in sorted(merged.items()))


class Token(Value):
    __slots__ = ("value", "expires_at")
    value: str
    expires_at: float

    def __init__(self, value: str, expires_at: float) -> None:
        self._init(value, expires_at)


class TokenCache:
    """Tokens per (realm, service, scopes); thread-safe, expired ones are never returned."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...]], Token] = {}
        self._lock = threading.Lock()

    def get(self, realm: str, service: str, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            t = self._tokens.get((realm, service, scopes))
            if t is None or t.expires_at <= time.monotonic():
                return None
            return t.value

    def put(
        self, realm: str, service: str, scopes: tuple[str, ...], value: str, ttl: float
    ) -> None:
        # renew a little early, so that a token does not expire between check and use
        with self._lock:
            self._tokens[(realm, service, scopes)] = Token(value, time.monotonic() + ttl * 0.9)

    def drop(self, realm: str, service: str, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop((realm, service, scopes), None)
