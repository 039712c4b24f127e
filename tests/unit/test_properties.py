"""Properties over generated input (hypothesis): references print as they parse, arbitrary text
is refused with the parsers' own errors (never another traceback), and a tree written as a layer
and applied to a fresh directory is the same tree."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgtool import reference
from imgtool.containerfile.shell import (
    ShellError,
    expand_heredoc,
    process_word,
    process_word_with_matches,
    process_words,
)
from imgtool.errors import InvalidReference
from imgtool.layer.apply import apply_layer
from imgtool.layer.diff import write_layer

# no example database in the checkout; a few seconds per property at most
FAST = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- references --------------------------------------------------------------------------------

_alnum = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
_path_component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_path = st.lists(_path_component, min_size=1, max_size=3).map("/".join)
_host = st.one_of(
    st.just("localhost"),
    st.from_regex(r"[a-z0-9]{1,5}(\.[a-z0-9]([a-z0-9-]{0,4}[a-z0-9])?){1,2}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9]{1,5}\.[A-Za-z]{2,4}", fullmatch=True),
)
_domain = st.builds(
    lambda host, port: host + (f":{port}" if port else ""),
    _host,
    st.one_of(st.none(), st.integers(1, 65535)),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: "sha256:" + h)


def _domain_part(domain: str | None, path: str) -> str:
    # without a domain, a first component with a dot would be read as one (and "_" is no
    # part of a host name): such a path is only valid under a domain
    if domain is None and "." in path.split("/")[0]:
        domain = "example.com"
    return f"{domain}/" if domain else ""


valid_references = st.builds(
    lambda domain, path, tag, digest: (
        _domain_part(domain, path)
        + path
        + (f":{tag}" if tag else "")
        + (f"@{digest}" if digest else "")
    ),
    st.one_of(st.none(), _domain),
    _path,
    st.one_of(st.none(), _tag),
    st.one_of(st.none(), _digest),
)


@FAST
@given(valid_references)
def test_a_parsed_reference_prints_as_it_parses(text: str) -> None:
    ref = reference.parse(text)
    assert reference.parse(str(ref)) == ref
    assert reference.parse_normalized_named(str(ref)) == ref
    strict = reference.parse_strict(text)
    assert reference.parse_strict(str(strict)) == strict
    assert str(strict) == text  # nothing of a strict reference is lost or added
    # the familiar form is short for the same reference
    assert reference.parse(ref.familiar) == ref


# text that is close to the grammar (so the parsers get deep), then anything at all
_near_reference = st.text(alphabet="abcAB09.:/@-_ sha256:", max_size=80)


@FAST
@given(st.one_of(_near_reference, st.text(max_size=300)))
def test_any_text_is_a_reference_or_refused_with_a_reason(text: str) -> None:
    for parser in (
        reference.parse,
        reference.parse_strict,
        reference.parse_normalized_named,
        reference.parse_name,
    ):
        try:
            parser(text)
        except InvalidReference as e:
            assert str(e).startswith("invalid reference"), str(e)


# --- the shell-word lexer ----------------------------------------------------------------------

# pieces of the syntax strung together reach the lexer's corners; then any characters
_shell_piece = st.sampled_from(
    ["${", "$", "{", "}", "a", "ab", ":", "-", "+", "?", "=", "%", "#", "/", "*", "!"]
    + ["'", '"', "\\", "`", " ", "\n", "[", "]", "~", "a}", "${a", "${a:", "${a/"]
)
_shell_text = st.one_of(
    st.lists(_shell_piece, max_size=14).map("".join),
    st.text(max_size=120),
)
_env = st.dictionaries(st.sampled_from(["a", "b", "ab", "HOME", "_"]), st.text(max_size=8))


@settings(FAST, max_examples=500)  # the lexer is quick, and its corners are many
@given(_shell_text, _env, st.sampled_from(["\\", "`"]))
def test_the_lexer_only_ever_raises_its_own_error(text: str, env: dict, escape: str) -> None:
    for process in (process_word, process_words, expand_heredoc, process_word_with_matches):
        try:
            process(text, env, escape)
        except ShellError:
            pass


@FAST
@given(st.from_regex(r"[A-Za-z0-9_./=,-]{1,30}", fullmatch=True), _env)
def test_plain_words_are_left_as_they_are(text: str, env: dict) -> None:
    # nothing to expand, quote or escape: the word is itself
    assert process_word(text, env) == text
    assert process_words(text, env) == [text]


# --- layer round trip --------------------------------------------------------------------------

ROOT = os.geteuid() == 0
_name = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9_.\- ]{0,11}", fullmatch=True).filter(
    lambda n: n not in (".", "..") and not n.startswith(".wh.")
)
_entry = st.fixed_dictionaries(
    {
        "parent": st.integers(0, 50),
        "name": _name,
        "kind": st.sampled_from(["dir", "file", "file", "symlink", "hardlink"]),
        "file_mode": st.sampled_from([0o644, 0o755, 0o600, 0o444, 0o640, 0o4755, 0o2755]),
        "dir_mode": st.sampled_from([0o755, 0o700, 0o750, 0o1777]),
        "content": st.binary(max_size=600),
        "target": st.one_of(
            st.from_regex(r"(/|\.\./)?[a-z.]{1,8}(/[a-z.]{1,8}){0,2}", fullmatch=True),
            st.just("/etc/shadow"),
        ),
        "owner": st.tuples(st.integers(0, 2000), st.integers(0, 2000)),
        "mtime_ns": st.integers(0, 2_000_000_000 * 10**9),
    }
)


def _build(root: Path, entries: list[dict]) -> None:
    """The tree the entries describe: each in an earlier directory (chosen by index)."""
    dirs = [root]
    files: list[Path] = []
    dir_times: list[tuple[Path, int]] = []  # path, mtime_ns
    for e in entries:
        path = dirs[e["parent"] % len(dirs)] / e["name"]
        if os.path.lexists(path):
            continue
        kind = e["kind"]
        if kind == "hardlink" and not files:
            kind = "file"
        if kind == "dir":
            path.mkdir()
            os.chmod(path, e["dir_mode"])
            dirs.append(path)
            dir_times.append((path, e["mtime_ns"]))
        elif kind == "file":
            path.write_bytes(e["content"])
            files.append(path)
        elif kind == "symlink":
            os.symlink(e["target"], path)
        else:
            os.link(files[e["parent"] % len(files)], path)
        if ROOT:
            os.lchown(path, *e["owner"])
        if kind == "file":
            os.chmod(path, e["file_mode"])  # after chown, which clears set-id bits
        os.utime(path, ns=(e["mtime_ns"], e["mtime_ns"]), follow_symlinks=False)
    # a directory's time, once what it holds is in place
    for d, mtime_ns in dir_times:
        os.utime(d, ns=(mtime_ns, mtime_ns))


def _tree(root: Path) -> dict[str, tuple]:
    """What each path is: type, mode, owner, mtime and contents or target; and which paths
    share an inode (hard links)."""
    out: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            s = os.lstat(p)
            if stat.S_ISREG(s.st_mode):
                what: object = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                inodes.setdefault(s.st_ino, []).append(rel)
            elif stat.S_ISLNK(s.st_mode):
                what = os.readlink(p)
            else:
                what = None
            mode = 0 if stat.S_ISLNK(s.st_mode) else stat.S_IMODE(s.st_mode)
            out[rel] = (stat.S_IFMT(s.st_mode), mode, s.st_uid, s.st_gid, s.st_mtime_ns, what)
    links = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    out["<hard links>"] = tuple(tuple(g) for g in links)
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roundtrip")


@FAST
@given(st.lists(_entry, max_size=25))
def test_a_tree_written_as_a_layer_applies_to_the_same_tree(
    scratch: Path, entries: list[dict]
) -> None:
    work = Path(tempfile.mkdtemp(dir=scratch))
    try:
        source, target = work / "source", work / "target"
        source.mkdir()
        target.mkdir()
        _build(source, entries)
        layer = io.BytesIO()
        written = write_layer(source, layer)
        layer.seek(0)
        apply_layer(layer, target)
        want, got = _tree(source), _tree(target)
        assert got == want
        assert written.diff_id == "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
        assert written.size == len(layer.getvalue())
    finally:
        shutil.rmtree(work)
