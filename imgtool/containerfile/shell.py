"""Shell-word expansion as BuildKit's Dockerfile frontend does it (frontend/dockerfile/shell).

`process_word` expands one word (quotes removed, variables expanded); `process_words` also
splits on unquoted white space, including white space that an unquoted variable brought in.
Supported: '…', "…", the escape character, $VAR, ${VAR}, ${VAR:-w} ${VAR-w} ${VAR:+w} ${VAR+w}
${VAR:?m} ${VAR?m} ${VAR#p} ${VAR##p} ${VAR%p} ${VAR%%p} ${VAR/p/r} ${VAR//p/r}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

EOF = ""
_SPECIAL = set("@*#?-$!0")


class ShellError(ValueError):
    pass


def _unmatched(closer: str) -> ShellError:
    return ShellError(f"unexpected end of statement while looking for matching {closer}")


@dataclass
class _Words:
    buf: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf.clear()
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        for ch in s:
            self.add_raw_char(ch)

    def get(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf.clear()
            self.in_word = False
        return self.words


class _Lexer:
    def __init__(
        self,
        text: str,
        env: Mapping[str, str],
        escape: str,
        skip_unset: bool,
        skip_quotes: bool = False,
    ) -> None:
        self.skip_quotes = skip_quotes
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.skip_unset = skip_unset
        self.raw_escapes = False
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._process_stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek() != EOF:
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.get()
            if ch == "$" or (ch in ("'", '"') and not self.skip_quotes):
                tmp = {"$": self.dollar, "'": self.single_quote, '"': self.double_quote}[ch]()
                result.append(tmp)
                if ch == "$":
                    words.add_string(tmp)
                else:
                    words.add_raw_string(tmp)
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    words.add_raw_char(ch)
                    result.append(ch)
                ch = self.next()
                if ch == EOF:
                    break
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise _unmatched(stop)
        return "".join(result), words.get()

    def single_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if ch == EOF:
                raise _unmatched("single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == EOF:
                raise _unmatched("double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt == EOF:
                    continue  # a lone escape at the end of the word is dropped
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while self.peek() != EOF:
            ch = self.peek()
            if not out and ch.isdigit():
                while self.peek() != EOF and self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL:
                return self.next()
            if not (ch.isalpha() or ch.isdigit() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()
        if self.peek() == EOF:
            raise ShellError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise ShellError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        chs = ch
        null_is_unset = False
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            chs += ch
        if ch in ("+", "-", "?", "#", "%"):
            return self._modifier(name, ch, chs, null_is_unset)
        if ch == "/" and not null_is_unset:
            return self._replace(name)
        raise ShellError(f"unsupported modifier ({chs}) in substitution")

    def _modifier(self, name: str, ch: str, chs: str, null_is_unset: bool) -> str:
        raw = ch in ("#", "%")
        if null_is_unset and raw:
            raise ShellError(f"unsupported modifier ({chs}) in substitution")
        try:
            word, _ = self.process_stop_on("}", raw)
        except ShellError:
            if self.peek() == EOF:
                raise ShellError("syntax error: missing '}'") from None
            raise
        value, found = self.get_env(name)
        if self.skip_unset and not found:
            return "${" + name + chs + word + "}"
        empty = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not found:
                raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ShellError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = bool(word) and word[0] == ch
        if greedy:
            word = word[1:]
        return _trim(word, value, greedy, suffix=ch == "%")

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.process_stop_on("/", True)
        except ShellError:
            if self.peek() == EOF:
                raise ShellError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.process_stop_on("}", True)
        except ShellError:
            if self.peek() == EOF:
                raise ShellError("syntax error: missing '}'") from None
            raise
        value, found = self.get_env(name)
        if self.skip_unset and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        rx = re.compile(pattern_to_regex(pattern, greedy=True))
        rep = replacement  # kept raw, escapes included, as BuildKit does
        if replace_all:
            return rx.sub(lambda _: rep, value)
        m = rx.search(value)
        return value if m is None else value[: m.start()] + rep + value[m.end() :]


def pattern_to_regex(pattern: str, greedy: bool) -> str:
    """A shell glob (with backslash escapes) as a regular expression."""
    out: list[str] = []
    i = 0
    star = ".*" if greedy else ".*?"
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            j = pattern.find("]", i + 2)
            if j == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _trim(pattern: str, value: str, greedy: bool, suffix: bool) -> str:
    rx = re.compile(pattern_to_regex(pattern, greedy=True), re.S)
    n = len(value)
    if suffix:  # shortest suffix first unless greedy
        order = range(0, n + 1) if greedy else range(n, -1, -1)
        for i in order:
            if rx.fullmatch(value[i:]):
                return value[:i]
        return value
    order = range(n, -1, -1) if greedy else range(0, n + 1)
    for i in order:
        if rx.fullmatch(value[:i]):
            return value[i:]
    return value


def _process(text: str, env: Mapping[str, str], escape: str) -> tuple[_Lexer, str, list[str]]:
    """The lexer (for the variables it met), the word, and the fields it splits into."""
    lex = _Lexer(text, env, escape, False)
    try:
        word, words = lex.process_stop_on(EOF, False)
    except ShellError as e:
        raise ShellError(f"failed to process {text!r}: {e}") from None
    return lex, word, words


def process_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    return _process(text, env, escape)[1]


def process_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    return _process(text, env, escape)[2]


def expand_heredoc(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Variables in a heredoc with an unquoted delimiter: quotes are content, escapes stay."""
    lex = _Lexer(text, env, escape, False, skip_quotes=True)
    try:
        return lex.process_stop_on(EOF, True)[0]
    except ShellError as e:
        raise ShellError(f"failed to expand heredoc: {e}") from None


def process_word_with_matches(
    text: str, env: Mapping[str, str], escape: str = "\\"
) -> tuple[str, set[str], set[str]]:
    """The expanded word, the variables it used that were set, and those that were not."""
    lex, word, _ = _process(text, env, escape)
    return word, lex.matched, lex.unmatched - lex.matched
