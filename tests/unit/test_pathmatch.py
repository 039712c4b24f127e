"""Go's path.Match for one component (containerfile/pathmatch), the one matcher behind COPY
wildcards, .dockerignore's syntax and `check --forbid`. Cases from Go's match_test.go."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgtool.containerfile.pathmatch import (
    PatternError,
    check_syntax,
    has_wildcards,
    match_component,
)

GO_CASES = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*b*c*d*e*", "axbxcxdxe", True),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[!a]b", "a☺b", False),  # '!' is a member, not a negation (fnmatch negates)
    ("a[!a]b", "a!b", True),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("*x", "xxx", True),
]
BAD = ["[]a]", "[-]", "[x-]", "[a-b-c]", "[", "[^", "[^bc", "a[", "\\", "[z-a]"]


@pytest.mark.parametrize(("pattern", "name", "want"), GO_CASES)
def test_go_path_match(pattern: str, name: str, want: bool) -> None:
    assert match_component(pattern, name) is want


@pytest.mark.parametrize("pattern", BAD)
def test_a_malformed_pattern_is_refused_and_matches_nothing(pattern: str) -> None:
    with pytest.raises(PatternError, match="syntax error in pattern"):
        check_syntax(pattern)
    assert not match_component(pattern, "a") and not match_component(pattern, pattern)


@pytest.mark.parametrize(
    ("text", "want"),
    [("a/b.txt", False), ("*.txt", True), ("a?", True), ("[ab]", True), ("a\\*b", False)],
)
def test_wildcards_unless_escaped(text: str, want: bool) -> None:
    assert has_wildcards(text) is want


def test_check_forbid_patterns_use_it() -> None:
    from imgtool.filetree import glob_match

    assert glob_match("var/[^c]*", "var/log") and not glob_match("var/[^c]*", "var/cache")
    assert glob_match("**/a\\*b", "x/a*b") and not glob_match("**/a\\*b", "x/axb")


def test_copy_wildcards_use_it(tmp_path: Path) -> None:
    from imgtool import inroot
    from imgtool.builder.sourcetree import glob

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("apple", "banana", "cherry", "!x"):
        (ctx / name).write_text(name)
    with inroot.opened(inroot.open_root(str(ctx))) as fd:
        assert glob(fd, "[^b]*") == ["!x", "apple", "cherry"]
        assert glob(fd, "[!b]*") == ["!x", "banana"]
        assert glob(fd, "[z-a]*") == []  # malformed: nothing, as BuildKit


@pytest.mark.parametrize("pattern", ["etc/[a-", "a/b\\", "**/[]x"])
def test_a_forbid_glob_go_would_call_malformed_is_refused(pattern: str) -> None:
    from imgtool.filetree import check_glob

    with pytest.raises(ValueError):
        check_glob(pattern)


def test_a_well_formed_forbid_glob_passes_the_check() -> None:
    from imgtool.filetree import check_glob

    check_glob("**/.git")
    check_glob("var/cache/apt/*.bin")


def test_many_stars_against_a_long_name_match_without_backtracking() -> None:
    # a backtracking regex takes hours on this (stars^name); the walk is linear per star
    pattern = "*a" * 28 + "*b"
    assert not match_component(pattern, "a" * 200)
    assert match_component(pattern, "a" * 200 + "b")
