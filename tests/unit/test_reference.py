"""distribution/reference's own test tables (../shared/conformance/image-reference), every case."""

from __future__ import annotations

import fnmatch

import pytest

from imgtool import reference
from imgtool.errors import InvalidReference
from tests.support.corpus import load_cases

CASES = load_cases("image-reference/reference_cases.json")
COMPOSE = load_cases("image-reference/reference_compose_cases.json")
REGEXP = load_cases("image-reference/reference_regexp_cases.json")


def _parse_any(text: str) -> str:
    """ParseAnyReference: a bare 64-hex id or a sha256 digest is a digest-only reference."""
    if reference.ANCHORED_IDENTIFIER.match(text):
        return "sha256:" + text
    if text.startswith("sha256:") and reference.ANCHORED_IDENTIFIER.match(text[7:]):
        return text
    return str(reference.parse_normalized_named(text))


def _run(case: dict) -> reference.Reference | str:
    api, text = case["api"], case["input"]
    if api in ("Parse", "Field.UnmarshalText"):
        return reference.parse_strict(text)
    if api == "WithName":
        ref = reference.parse_strict(text)
        if ref.tag or ref.digest:
            raise InvalidReference(text, "name only")
        return ref
    if api == "ParseNamed":
        ref = reference.parse_normalized_named(text)
        if str(ref) != text:
            raise InvalidReference(text, "not canonical")
        return ref
    if api == "ParseNormalizedNamed":
        return reference.parse_normalized_named(text)
    if api == "ParseAnyReference":
        return _parse_any(text)
    if api == "ParseDockerRef":
        return reference.parse(text)
    raise AssertionError(f"unknown api {api}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['suite']}:{c['input'][:60]}")
def test_reference_case(case: dict) -> None:
    if not case["valid"]:
        with pytest.raises(InvalidReference) as info:
            _run(case)
        assert str(info.value).startswith("invalid reference")
        return
    got = _run(case)
    if isinstance(got, str):
        assert got == case["string"]
        return
    if case["string"] is not None:
        assert str(got) == case["string"]
    if case["name"] is not None:
        assert got.name == case["name"]
    if case["domain"] is not None:
        assert got.registry == case["domain"]
    if case["path"] is not None:
        assert got.repository == case["path"]
    if case["api"] == "Parse" or case["tag"] is not None:
        assert got.tag == case["tag"]
    if case["api"] == "Parse" or case["digest"] is not None:
        assert got.digest == case["digest"]
    if case["familiar"] is not None:
        assert got.familiar == case["familiar"]
    if case["normalized"] is not None:
        assert str(got) == case["normalized"]


@pytest.mark.parametrize("case", COMPOSE, ids=lambda c: f"{c['suite']}:{c['name']}")
def test_compose(case: dict) -> None:
    ref = reference.parse_strict(case["name"])
    if case.get("expected_error"):
        with pytest.raises(InvalidReference):
            if case["tag"] is not None:
                ref.with_tag(case["tag"])
            if case["digest"] is not None:
                ref.with_digest(case["digest"])
        return
    if case["tag"] is not None:
        ref = ref.with_tag(case["tag"])
    if case["digest"] is not None:
        # the corpus uses a 37-hex fake digest that only the grammar (not sha256) accepts
        ref = reference.Reference(ref.registry, ref.repository, ref.tag, case["digest"])
    assert str(ref) == case["expected_string"]


def _regexp_for(case: dict):
    return {
        "TestDomainRegexp": reference.ANCHORED_DOMAIN,
        "TestFullNameRegexp": reference.ANCHORED_NAME,
        "TestReferenceRegexp": reference.ANCHORED_REFERENCE,
        "TestIdentifierRegexp": reference.ANCHORED_IDENTIFIER,
    }[case["suite"]]


@pytest.mark.parametrize("case", REGEXP, ids=lambda c: f"{c['suite']}:{c['input'][:50]}")
def test_grammar(case: dict) -> None:
    m = _regexp_for(case).match(case["input"])
    assert bool(m) == case["match"]
    if m and case["subs"]:
        assert [s or "" for s in m.groups()] == case["subs"]


def test_docker_defaults() -> None:
    ref = reference.parse("python")
    assert (ref.registry, ref.repository, ref.tag) == ("docker.io", "library/python", "latest")
    assert str(ref) == "docker.io/library/python:latest"
    assert ref.api_host == "registry-1.docker.io"
    d = "sha256:" + "a" * 64
    both = reference.parse(f"host:5000/a/b:1.0@{d}")
    assert both.tag is None and both.digest == d and str(both) == f"host:5000/a/b@{d}"


@pytest.mark.parametrize(
    "text,why",
    [
        ("Python", "lowercase"),
        ("a" * 256, "longer than 255"),
        ("foo:-bad", "invalid tag"),
        ("repo@sha256:abc", "right length"),
        ("", "empty"),
        ("alpine:3.\u0661\u0662", "invalid tag"),  # Arabic-Indic digits: Go's \\w is ASCII
        ("alpine:caf\u00e9", "invalid tag"),
    ],
)
def test_refusal_says_why(text: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        reference.parse(text)


def test_familiar_match_uses_path_match() -> None:
    # FamiliarMatch cases: the pattern is matched against the familiar string, then the name.
    cases = load_cases(
        "image-reference/reference_familiar_match_cases.json",
        where=lambda c: not c.get("expected_error"),
    )
    for case in cases:
        ref = reference.parse_normalized_named(case["reference"])
        got = _path_match(case["pattern"], ref.familiar) or _path_match(
            case["pattern"], ref.familiar_name
        )
        assert got == case["expected"], case


def _path_match(pattern: str, name: str) -> bool:
    # Go's path.Match: '*' does not cross '/', so compare component by component.
    pp, nn = pattern.split("/"), name.split("/")
    return len(pp) == len(nn) and all(
        fnmatch.fnmatchcase(n, p) for p, n in zip(pp, nn, strict=True)
    )


def _by_grammar(text: str) -> tuple[str, str, str | None, str | None] | None:
    try:
        return reference._split_by_grammar(text)
    except InvalidReference:
        return None


def _mutations(seed: int, count: int) -> list[str]:
    """References of the common form, each changed in one place: a character of the grammar's
    edges inserted, replaced or dropped (deterministic)."""
    import random

    rng = random.Random(seed)
    digest = "@sha256:" + "0123456789abcdef" * 4
    bases = [
        "busybox",
        "library/busybox:latest",
        "127.0.0.1:5000/bench/busybox:v1.36",
        "registry.example.com/team/app-x/web__ui:1.0_rc-2",
        "localhost/a.b/c---d" + digest,
        "Host-1.Example:443/a/b:T" + digest,
        "a" * 130 + ":" + "t" * 128,
    ]
    alphabet = "aZ09_.-:/@[]é\n " + "-" * 3
    out = []
    for _ in range(count):
        text = list(rng.choice(bases))
        i = rng.randrange(len(text) + 1)
        what = rng.randrange(3)
        if what == 0:
            text.insert(i, rng.choice(alphabet))
        elif i < len(text):
            if what == 1:
                text[i] = rng.choice(alphabet)
            else:
                del text[i]
        out.append("".join(text))
    return out


def test_common_form_is_split_as_the_grammar_splits_it() -> None:
    """The hand-written split (no regular expressions to compile) answers only what the
    grammar answers the same way; and it does answer most common-form references."""
    texts = [c["input"] for c in CASES] + [c["input"] for c in REGEXP] + _mutations(13, 3000)
    answered = 0
    for text in texts:
        common = reference.split_common(text)
        if common is not None:
            assert common == _by_grammar(text), text
            answered += 1
    assert answered > len(texts) // 3


@pytest.mark.parametrize(
    "text",
    [
        "busybox",
        "docker.io/library/busybox:latest",
        "127.0.0.1:5000/bench/busybox:latest",
        "ghcr.io/org/app@sha256:" + "ab" * 32,
        "localhost:5000/a/b:1.0@sha256:" + "ab" * 32,
    ],
)
def test_common_references_need_no_grammar(text: str) -> None:
    assert reference.split_common(text) is not None
