""".dockerignore: reading the file and matching paths, as moby/patternmatcher does.

Patterns apply in order, a later one overrides an earlier one, `!pattern` re-includes; a path is
excluded when it or one of its parent directories matches; `**` matches any number of
directories (none included); `*` and `?` never cross `/`; `\\` escapes.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from imgtool.containerfile.pathmatch import PatternError, check_syntax


def go_clean(path: str) -> str:
    """Go's filepath.Clean (posixpath.normpath keeps a leading '//')."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def go_dir(path: str) -> str:
    i = path.rfind("/")
    return go_clean(path[: i + 1]) if i >= 0 else "."


@dataclass
class Pattern:
    text: str  # cleaned, without the "!"
    exclusion: bool
    kind: str = ""  # exact | prefix | suffix | regexp
    regexp: re.Pattern[str] | None = None

    def compile(self) -> None:
        rx = "^"
        kind = "exact"
        p, i = self.text, 0
        while i < len(p):
            first = i == 0
            ch = p[i]
            i += 1
            if ch == "*":
                if i < len(p) and p[i] == "*":
                    i += 1
                    if i < len(p) and p[i] == "/":
                        i += 1
                    if i >= len(p):
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            rx += ".*"
                            kind = "regexp"
                    else:
                        rx += "(.*/)?"
                        kind = "regexp"
                    if first:
                        kind = "suffix"
                else:
                    rx += "[^/]*"
                    kind = "regexp"
            elif ch == "?":
                rx += "[^/]"
                kind = "regexp"
            elif ch in ".+()|{}$":
                rx += "\\" + ch
            elif ch == "\\":
                if i < len(p):
                    rx += "\\" + p[i]
                    i += 1
                    kind = "regexp"
                else:
                    rx += "\\\\"
            elif ch in "[]":
                rx += ch
                kind = "regexp"
            else:
                rx += ch
        self.kind = kind
        if kind == "regexp":
            try:
                self.regexp = re.compile(rx + "$", re.S)
            except re.error:
                raise PatternError("syntax error in pattern") from None

    def match(self, path: str) -> bool:
        if not self.kind:
            self.compile()
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regexp is not None
        return self.regexp.match(path) is not None


class PatternMatcher:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise PatternError('illegal exclusion pattern: "!"')
                p = p[1:]
            check_syntax(p)
            self.patterns.append(Pattern(p, exclusion))

    @property
    def exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches_or_parent_matches(self, path: str) -> bool:
        """The .dockerignore rule: is `path` (relative, '/'-separated) excluded?"""
        return self._matches(path, legacy=False)

    def matches_legacy(self, path: str) -> bool:
        """moby's deprecated Matches: parents compared at the pattern's own depth only."""
        return self._matches(path, legacy=True)

    def _matches(self, path: str, legacy: bool) -> bool:
        matched = False
        parent = go_dir(path)
        dirs = parent.split("/")
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue  # an inclusion cannot add to a match, an exclusion needs one
            hit = pat.match(path)
            if not hit and parent != ".":
                if legacy:
                    depth = len(pat.text.split("/"))
                    parents = ["/".join(dirs[:depth])] if depth <= len(dirs) else []
                else:
                    parents = ["/".join(dirs[: i + 1]) for i in range(len(dirs))]
                hit = any(pat.match(p) for p in parents)
            if hit:
                matched = not pat.exclusion
        return matched


def matches(path: str, patterns: list[str]) -> bool:
    """moby's deprecated helper: the path is cleaned and '.' never matches."""
    pm = PatternMatcher(patterns)
    path = go_clean(path)
    if path == ".":
        return False
    return pm.matches_legacy(path)


def read_ignore_file(text: str | None) -> list[str]:
    """The patterns of a .dockerignore: comments (# in column 0) and blank lines dropped,
    trimmed, cleaned, a leading '/' removed, '!' re-attached."""
    out: list[str] = []
    for line in (text or "").splitlines():
        if line.startswith("#"):
            continue
        p = line.strip()
        if not p:
            continue
        invert = p.startswith("!")
        if invert:
            p = p[1:].strip()
        if p:
            p = go_clean(p)
            if p.startswith("/") and p != "/":
                p = p.lstrip("/")
        out.append("!" + p if invert else p)
    return out
