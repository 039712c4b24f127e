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


GOOD = {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "a" * 64, "size": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mediaType": None}, "descriptor.mediaType is missing"),  # null is absent, as in Go
        ({"digest": 7}, "descriptor.digest must be a string"),
        ({"size": None}, "descriptor.size is missing"),
        ({"digest": ...}, "descriptor.digest is missing"),  # ...: the key left out
        ({"size": "3"}, "descriptor.size must be an integer"),
        ({"size": True}, "descriptor.size must be an integer"),  # a bool is no number here
        ({"artifactType": 1}, "descriptor.artifactType must be a string"),
    ],
)
def test_a_field_missing_or_of_the_wrong_type_is_named(change: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        oci.Descriptor.from_dict({k: v for k, v in {**GOOD, **change}.items() if v is not ...})
    assert str(err.value) == message


def test_optional_fields_may_be_absent_or_null() -> None:
    d = oci.Descriptor.from_dict({**GOOD, "artifactType": None, "data": None})
    assert (d.size, d.artifact_type, d.data) == (3, None, None)
