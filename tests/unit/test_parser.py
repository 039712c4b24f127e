"""Parser tests as file pairs (BuildKit's testfiles style): every `X.Containerfile` in
parser_cases/ must parse to `X.expected.json` (instructions, or the one-line error). Adding a
case is adding two files."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from imgtool import containerfile
from imgtool.containerfile.parser import Instruction, parse
from imgtool.errors import ContainerfileError

CASES = sorted((Path(__file__).parent / "parser_cases").glob("*.Containerfile"))


def dump(i: Instruction) -> dict:
    d = {"keyword": i.keyword, "args": i.args, "flags": i.flags, "line": i.line, "json": i.json}
    if i.heredocs:
        d["heredocs"] = [dataclasses.asdict(h) for h in i.heredocs]
    if i.sub:
        d["sub"] = dump(i.sub)
    return d


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_parser_case(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text())
    warned: list[str] = []
    try:
        cf = parse(path.read_text(), path.name, warned.append)
    except ContainerfileError as e:
        assert {"error": str(e)} == expected
        return
    got = {"directives": cf.directives, "instructions": [dump(i) for i in cf.instructions]}
    if warned:
        got["warnings"] = warned
    assert warned == cf.warnings
    assert got == expected


def test_public_api() -> None:
    insts = containerfile.parse("from busybox\nRUN echo hi\nENV A=b\n")
    assert [(i.keyword, i.args, i.line) for i in insts] == [
        ("from", ["busybox"], 1),
        ("run", ["echo hi"], 2),
        ("env", ["A", "b"], 3),
    ]


# BuildKit's parser test files (see parser_cases/buildkit/NOTICE): each case's Dockerfile must
# parse to the instructions its `result` lists, as BuildKit's node dump writes them:
# `(keyword ["--flag" …] "arg" …)`, ONBUILD's instruction nested; the negative ones must fail.
BUILDKIT = Path(__file__).parent / "parser_cases" / "buildkit"


def _case_dirs(kind: str) -> list[Path]:
    where = BUILDKIT / kind
    # a missing directory is one failing case, never an empty (silently passing) parametrize
    return sorted(p for p in where.iterdir() if p.is_dir()) if where.is_dir() else [where]


def _go_unquote(body: str) -> str:
    """A Go %q string's content: JSON escapes, plus Go's \\xNN, \\a and \\v."""
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        elif nxt in "av":
            out.append("\a" if nxt == "a" else "\v")
            i += 2
        else:
            end = i + 6 if nxt == "u" else i + 2
            out.append(json.loads(f'"{body[i:end]}"'))
            i = end
    return "".join(out)


_TOKEN = re.compile(r'\s*(?:(\()|(\))|(\[)|(\])|"((?:[^"\\]|\\.)*)"|([^\s()\[\]"]+))')


def _sexpr(line: str) -> tuple:
    """One result line: (keyword, flags, args), args may hold a nested instruction."""
    stack: list[list] = [[]]
    pos = 0
    while pos < len(line.rstrip()):
        m = _TOKEN.match(line, pos)
        assert m, f"bad result line {line!r} at {pos}"
        pos = m.end()
        if m.group(1) or m.group(3):
            stack.append(["[" if m.group(3) else "("])
        elif m.group(2) or m.group(4):
            done = stack.pop()
            stack[-1].append(done[1:] if done[0] == "[" else _node(done[1:]))
        else:
            value = m.group(6) if m.group(6) is not None else _go_unquote(m.group(5))
            stack[-1].append(value)
    return stack[0][0]


def _node(items: list) -> tuple:
    keyword, rest = items[0], items[1:]
    flags = rest.pop(0) if rest and isinstance(rest[0], list) else []
    return (keyword, flags, rest)


def _as_buildkit(i: Instruction) -> tuple:
    if i.sub is not None:
        return (i.keyword, i.flags, [_as_buildkit(i.sub)])
    return (i.keyword, i.flags, list(i.args))


@pytest.mark.parametrize("case", _case_dirs("testfiles"), ids=lambda p: p.name)
def test_buildkit_testfiles(case: Path) -> None:
    text = (case / "Dockerfile").read_text()
    expected = [_sexpr(x) for x in (case / "result").read_text().splitlines() if x.strip()]
    parsed = parse(text, "Dockerfile", lambda _: None).instructions
    assert [_as_buildkit(i) for i in parsed] == expected


@pytest.mark.parametrize("case", _case_dirs("testfiles-negative"), ids=lambda p: p.name)
def test_buildkit_testfiles_negative(case: Path) -> None:
    text = (case / "Dockerfile").read_text()
    with pytest.raises(ContainerfileError):
        parse(text, "Dockerfile", lambda _: None)


def test_buildkit_testfiles_are_all_there() -> None:
    assert len(_case_dirs("testfiles")) >= 28 and len(_case_dirs("testfiles-negative")) >= 2
    assert (BUILDKIT / "NOTICE").is_file()
