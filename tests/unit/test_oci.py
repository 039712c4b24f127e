"""The OCI image-spec's own validity vectors (../shared/conformance/oci-image-spec), every case."""

from __future__ import annotations

import pytest

from imgtool import mediatypes as mt
from imgtool import oci
from imgtool.errors import InvalidPlatform, SpecError
from tests.support.corpus import load_cases

FILES = [
    "manifest_cases",
    "index_cases",
    "config_cases",
    "descriptor_cases",
    "layout_cases",
    "spec_examples",
]
CASES = [c for f in FILES for c in load_cases(f"oci-image-spec/{f}.json")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_spec_vector(case: dict) -> None:
    raw = case["document"].encode()
    if case["expected_valid"]:
        oci.validate(case["media_type"], raw)
    else:
        with pytest.raises(SpecError):
            oci.validate(case["media_type"], raw)


@pytest.mark.parametrize(
    "case", load_cases("oci-image-spec/backwards_compat_cases.json"), ids=lambda c: c["id"]
)
def test_docker_documents_parse_with_their_digest(case: dict) -> None:
    raw = case["document"].encode()
    # Docker's own media types are accepted as they are, and the digest is of the exact bytes
    kind = oci.sniff_media_type(raw)
    if kind in mt.MANIFEST_TYPES | mt.INDEX_TYPES:
        parsed = oci.parse_manifest_or_index(raw, None)
        assert parsed.digest == case["document_digest"]
    else:
        cfg = oci.ImageConfig.from_json(raw)
        assert cfg.digest == case["document_digest"]
    oci.validate(case["media_type"], case["document_converted_to_oci"].encode())


def test_schema1_is_refused_with_a_reason() -> None:
    raw = b'{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}'
    with pytest.raises(SpecError, match="schema 1"):
        oci.parse_manifest_or_index(raw, mt.DOCKER_SCHEMA1_SIGNED)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
    ],
)
def test_platform_parse_normalizes(text: str, expected: str) -> None:
    assert str(oci.Platform.parse(text)) == expected


@pytest.mark.parametrize("text", ["linux", "linux//v7", "a/b/c/d", ""])
def test_platform_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidPlatform):
        oci.Platform.parse(text)


def test_arm_v7_falls_back_to_v6_and_v5() -> None:
    got = [str(p) for p in oci.Platform.parse("linux/arm/v7").candidates()]
    assert got == ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
