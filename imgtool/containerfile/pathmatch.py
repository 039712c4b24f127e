"""Go's path.Match for one path component: the wildcards of COPY and ADD sources (BuildKit
matches them with filepath.Match, a bad pattern matching nothing), of .dockerignore lines
(moby's patternmatcher refuses a bad one) and of `check --forbid`, so that a pattern means one
thing wherever imgtool takes one.

`*` is any run of characters, `?` one character, `[a-z]` and `[^a-z]` a class (`^` negates,
`!` does not, unlike fnmatch), `\\` escapes the next character (in a class too).
"""

from __future__ import annotations

import functools
import re

WILDCARDS = "*?["


class PatternError(ValueError):
    pass


def has_wildcards(text: str) -> bool:
    """Whether `text` has an unescaped wildcard (else it names a path as it is)."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] in WILDCARDS:
            return True
        i += 1
    return False


def match_component(pattern: str, name: str) -> bool:
    """Go's path.Match of one name (no '/' in it); a malformed pattern matches nothing.
    Linear in the name for each star, as Go's: a regex would backtrack exponentially on
    patterns like `*a*a*a*a*b`, and patterns come from strangers' Containerfiles."""
    tokens = _tokens(pattern)
    if tokens is None:
        return False
    # the classic wildcard walk: on a mismatch, let the last star take one more character
    t = n = 0
    star_t, star_n = -1, 0
    while n < len(name):
        more = t < len(tokens)
        tok = tokens[t] if more else None
        if more and tok is None:  # a star: first try it empty
            star_t, star_n = t, n
            t += 1
        elif tok is not None and tok.fullmatch(name[n]):
            t += 1
            n += 1
        elif star_t >= 0 and name[star_n] != "/":  # a star never takes a '/'
            star_n += 1
            t, n = star_t + 1, star_n
        else:
            return False
    return all(tok is None for tok in tokens[t:])


@functools.lru_cache(maxsize=256)
def _tokens(pattern: str) -> tuple[re.Pattern[str] | None, ...] | None:
    """The pattern as single-character matchers, None for each `*`; None if malformed."""
    try:
        return tuple(None if rx == "*" else re.compile(rx, re.S) for rx in _token_regexes(pattern))
    except PatternError:
        return None


def _token_regexes(pattern: str) -> list[str]:
    """One regex per character the pattern matches ('*' for a star). Raises PatternError
    where Go's path.Match says ErrBadPattern."""
    check_syntax(pattern)
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if not out or out[-1] != "*":  # a run of stars is one star
                out.append("*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            rx, i = _class_regex(pattern, i)
            out.append(rx)
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return out


def _class_regex(pattern: str, i: int) -> tuple[str, int]:
    """The class that starts at pattern[i] ('['), already checked: its regex and the index
    after its ']'."""
    i += 1
    negated = pattern[i] == "^"
    i += negated
    parts: list[str] = []
    while not (pattern[i] == "]" and parts):
        lo, i = _class_char(pattern, i)
        part = re.escape(lo)
        if pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
            part += "-" + re.escape(hi)
        parts.append(part)
    return ("[^" if negated else "[") + "".join(parts) + "]", i + 1


def check_syntax(pattern: str) -> None:
    """Refuse what Go's path.Match calls a syntax error: an unclosed or empty class, a range
    running backwards, a lone '-' or ']' in a class, a trailing escape."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise PatternError("syntax error in pattern")
            i += 2
            continue
        if ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            count = 0
            while True:
                if i >= n:
                    raise PatternError("syntax error in pattern")
                if pattern[i] == "]" and count > 0:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi < lo:
                        raise PatternError("syntax error in pattern")
                count += 1
            continue
        i += 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise PatternError("syntax error in pattern")
    if pattern[i] == "\\":
        if i + 1 >= n:
            raise PatternError("syntax error in pattern")
        return pattern[i + 1], i + 2
    return pattern[i], i + 1
