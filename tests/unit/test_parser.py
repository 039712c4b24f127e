"""Parser tests as file pairs (BuildKit's testfiles style): every `X.Containerfile` in
parser_cases/ must parse to `X.expected.json` (instructions, or the one-line error). Adding a
case is adding two files."""

from __future__ import annotations

import dataclasses
import json
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
