"""Containerfile text -> instructions, as BuildKit's parser splits it (no I/O, no expansion).

Parser directives (`# syntax=`, `# escape=`, `# check=`) at the top; comments; line
continuations (comments and blank lines inside them are skipped); JSON (exec) and shell forms;
heredocs (`<<EOF`, `<<-EOF`, quoted delimiters) for RUN, COPY and ADD; keywords in any case;
`--` ends the flags; JSON that does not parse is the shell form, JSON that is not an array of
strings an error; the legacy `ENV key value` / `LABEL key value` form is taken with a warning.
`Instruction.args` are the arguments before variable expansion, as BuildKit yields them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from imgtool.errors import ContainerfileError

KEYWORDS = {
    "from",
    "run",
    "cmd",
    "entrypoint",
    "copy",
    "add",
    "env",
    "arg",
    "label",
    "workdir",
    "user",
    "expose",
    "volume",
    "shell",
    "stopsignal",
    "healthcheck",
    "onbuild",
    "maintainer",
}
JSON_FORM = {"run", "cmd", "entrypoint", "shell", "volume", "copy", "add"}
HEREDOC_FORM = {"run", "copy", "add"}
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_FLAG = re.compile(r"^--([a-zA-Z0-9][a-zA-Z0-9-]*)(=(\S*))?$")


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool  # an unquoted delimiter: variables in the content are expanded
    chomp: bool  # <<- strips leading tabs


@dataclass
class Instruction:
    keyword: str
    args: list[str]
    flags: list[str] = field(default_factory=list)
    line: int = 0
    end_line: int = 0
    original: str = ""
    json: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    sub: Instruction | None = None  # ONBUILD's instruction

    def flag(self, name: str) -> str | None:
        for f in self.flags:
            m = _FLAG.match(f)
            if m and m.group(1) == name:
                return m.group(3) if m.group(2) else "true"
        return None

    def flag_values(self, name: str) -> list[str]:
        out = []
        for f in self.flags:
            m = _FLAG.match(f)
            if m and m.group(1) == name:
                out.append(m.group(3) if m.group(2) else "true")
        return out


@dataclass
class Containerfile:
    instructions: list[Instruction]
    directives: dict[str, str]
    escape: str
    file: str = "Containerfile"
    warnings: list[str] = field(default_factory=list)


Warn = Callable[[str], None]


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    found: dict[str, str] = {}
    i = 0
    for i, line in enumerate(lines):  # noqa: B007
        m = _DIRECTIVE.match(line.strip()) if line.strip().startswith("#") else None
        if not m:
            break
        key = m.group(1).lower()
        if key in found or key not in ("syntax", "escape", "check"):
            break
        found[key] = m.group(2)
    else:
        i = len(lines)
    return found, i


def parse(text: str, file: str = "Containerfile", warn: Warn | None = None) -> Containerfile:
    """Parse a Containerfile; every error names the file and the line. Warnings (a legacy
    form that BuildKit still accepts) go to `warn` (stderr when None) and into `.warnings`."""
    warnings: list[str] = []

    def note(line: int, text: str) -> None:
        warnings.append(f"{file}:{line}: {text}")
        (warn or _to_stderr)(warnings[-1])

    lines = text.splitlines()
    directives, _ = _directives(lines)
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise ContainerfileError(f"invalid escape token {escape!r}: use \\ or `", file=file, line=1)
    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        logical, i = _join_continuation(lines, i, escape)
        inst = _instruction(logical, start + 1, file, escape, note)
        if inst.keyword in HEREDOC_FORM or (inst.sub and inst.sub.keyword in HEREDOC_FORM):
            target = inst.sub or inst
            i = _read_heredocs(target, lines, i, file)
        inst.end_line = i
        inst.original = "\n".join(lines[start:i]).strip()
        out.append(inst)
    if not out:  # BuildKit's words, at the last line
        raise ContainerfileError("file with no instructions", file=file, line=max(1, len(lines)))
    return Containerfile(out, directives, escape, file, warnings)


def _join_continuation(lines: list[str], i: int, escape: str) -> tuple[str, int]:
    parts: list[str] = []
    while i < len(lines):
        line = lines[i]
        i += 1
        if parts and (not line.strip() or line.strip().startswith("#")):
            continue  # comments and blank lines inside a continuation are skipped
        body = line.rstrip(" \t")
        if _continues(body, escape):
            parts.append(body[:-1])
            continue
        parts.append(line)
        return "".join(parts), i
    return "".join(parts), i


def _continues(body: str, escape: str) -> bool:
    """The escape character ends the line: it continues, unless that escape is itself
    escaped (BuildKit looks at the one character before it, no further)."""
    return body.endswith(escape) and not body.endswith(escape + escape)


def _split_flags(rest: str) -> tuple[list[str], str]:
    flags: list[str] = []
    while True:
        rest = rest.lstrip()
        if not rest.startswith("--"):
            return flags, rest
        end = len(rest)
        for j, ch in enumerate(rest):
            if ch.isspace():
                end = j
                break
        token = rest[:end]
        if token == "--":  # the end of the flags: what follows is arguments, even `-x`
            return flags, rest[end:].lstrip()
        flags.append(token)
        rest = rest[end:]


def _instruction(
    logical: str, line: int, file: str, escape: str, note: Callable[[int, str], None]
) -> Instruction:
    text = logical.strip()
    m = re.match(r"^(\S+)(\s+(.*))?$", text, re.S)
    assert m is not None
    keyword = m.group(1).lower()
    rest = (m.group(3) or "").strip()
    if keyword not in KEYWORDS:
        raise ContainerfileError(f"unknown instruction: {m.group(1)}", file=file, line=line)
    if keyword == "onbuild":
        if not rest:
            raise ContainerfileError("ONBUILD needs an instruction", file=file, line=line)
        sub = _instruction(rest, line, file, escape, note)
        if sub.keyword in ("onbuild", "from", "maintainer"):
            raise ContainerfileError(
                f"{sub.keyword.upper()} is not allowed in ONBUILD", file=file, line=line
            )
        return Instruction("onbuild", [rest], [], line, sub=sub)
    # every instruction's flags are split off, as BuildKit does: `LABEL --x=1 a=b` is an
    # unknown flag (typing refuses it), not a label named --x
    flags, rest = _split_flags(rest)
    for f in flags:
        if not _FLAG.match(f):
            raise ContainerfileError(f"bad flag {f!r} for {keyword.upper()}", file=file, line=line)
    inst = Instruction(keyword, [], flags, line)
    if keyword in JSON_FORM:
        value = _maybe_json(rest, keyword.upper(), file, line)
        if value is not None:
            inst.args, inst.json = value, True
            return inst
    if keyword == "healthcheck":
        inst.args, inst.json = _healthcheck(rest, file, line)
        return inst
    if keyword in ("env", "label"):
        inst.args, legacy = _key_values(keyword, rest, file, line, escape)
        if legacy:
            kw = keyword.upper()
            note(line, f"'{kw} key value' is the legacy form: use '{kw} key=value'")
        return inst
    inst.args = _args(keyword, rest, file, line, escape)
    return inst


def _args(keyword: str, rest: str, file: str, line: int, escape: str) -> list[str]:
    if keyword in (
        "run",
        "cmd",
        "entrypoint",
        "shell",
        "maintainer",
        "stopsignal",
        "workdir",
        "user",
    ):
        if keyword in ("stopsignal", "workdir", "user") and not rest:
            raise ContainerfileError(f"{keyword.upper()} needs an argument", file=file, line=line)
        return [rest] if rest else []
    if keyword == "arg":
        words = _words(rest, escape)
        if not words:
            raise ContainerfileError("ARG needs a name", file=file, line=line)
        return words
    words = _fields(rest)  # split on white space only, quotes kept, as BuildKit does
    if keyword == "from":
        if not words or len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise ContainerfileError(
                "FROM takes an image and optionally AS name", file=file, line=line
            )
        return words
    if keyword in ("copy", "add") and len(words) < 2 and "<<" not in rest:
        raise ContainerfileError(
            f"{keyword.upper()} needs a source and a destination", file=file, line=line
        )
    if keyword in ("expose", "volume") and not words:
        raise ContainerfileError(f"{keyword.upper()} needs an argument", file=file, line=line)
    return words


def _fields(rest: str) -> list[str]:
    return re.split(r"[ \t\v\f\r]+", rest.strip()) if rest.strip() else []


def _maybe_json(text: str, what: str, file: str, line: int) -> list[str] | None:
    """The JSON form's strings; None when `text` is no JSON (then it is the shell form);
    JSON that is not an array of strings is an error."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # not JSON: the shell form, as BuildKit falls back
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ContainerfileError(
            f"{what}: the JSON form must be an array of strings: {text}", file=file, line=line
        )
    return value


def _healthcheck(rest: str, file: str, line: int) -> tuple[list[str], bool]:
    """HEALTHCHECK's type (CMD, NONE…) and its command: one shell string or the JSON form's
    strings (then True)."""
    kind, _, command = rest.strip().partition(" ")
    if not kind:
        return [], False
    command = command.strip()
    if not command:
        return [kind], False
    argv = _maybe_json(command, "HEALTHCHECK", file, line)  # not JSON: the shell form
    return ([kind, *argv], True) if argv is not None else ([kind, command], False)


def _words(rest: str, escape: str) -> list[str]:
    """White-space separated words; quotes and escapes kept (expansion removes them later)."""
    words: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch == escape and i + 1 < len(rest) and quote != "'":
            cur.append(ch + rest[i + 1])
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
            cur.append(ch)
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch.isspace():
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
        i += 1
    if cur:
        words.append("".join(cur))
    return words


def _key_values(
    keyword: str, rest: str, file: str, line: int, escape: str
) -> tuple[list[str], bool]:
    """ENV/LABEL: `k=v k2="v 2"` pairs, or the legacy `ENV key value with spaces` form.
    Returns ([key, value, key, value, ...] with values unexpanded, whether it was legacy)."""
    words = _words(rest, escape)
    if not words:
        raise ContainerfileError(f"{keyword.upper()} needs key=value", file=file, line=line)
    if "=" not in words[0]:
        if len(words) < 2:
            raise ContainerfileError(
                f"{keyword.upper()} {rest!r}: expected key=value", file=file, line=line
            )
        key, value = re.split(r"[ \t\v\f\r]+", rest, maxsplit=1)
        return [key, value], True
    out = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise ContainerfileError(
                f"{keyword.upper()}: {w!r} is not key=value", file=file, line=line
            )
        out += [k, v]
    return out, False


def _read_heredocs(inst: Instruction, lines: list[str], i: int, file: str) -> int:
    text = " ".join(inst.args) if not inst.json else ""
    for m in _HEREDOC.finditer(text):
        chomp, quote, name = m.group(1) == "-", m.group(2), m.group(3)
        body: list[str] = []
        while True:
            if i >= len(lines):
                raise ContainerfileError(
                    f"unterminated heredoc <<{name}", file=file, line=inst.line
                )
            line = lines[i]
            i += 1
            candidate = line.lstrip("\t") if chomp else line
            if candidate == name:
                break
            body.append(candidate)
        inst.heredocs.append(Heredoc(name, "\n".join(body) + "\n", not quote, chomp))
    return i
