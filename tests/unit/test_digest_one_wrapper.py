"""Hashing goes through Digest (issue 11: three hashing wrappers collapsed to one)."""

from __future__ import annotations

import hashlib

import imgtool.digest
from imgtool.layer.unpacked import chain_ids


def test_no_second_hashing_wrapper() -> None:
    assert not hasattr(imgtool.digest, "sha256_hex")


def test_chain_id_of_three_layers() -> None:
    a, b, c = (f"sha256:{ch * 64}" for ch in "abc")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, abc]


def test_small_and_large_inputs_hash_alike() -> None:
    """Digest.of takes CPython's own SHA-256 for small inputs (no OpenSSL to load), OpenSSL's
    for the rest: the same digests either side of the line."""
    data = bytes(range(256)) * (imgtool.digest.SMALL // 256 + 2)
    for n in (0, 1, imgtool.digest.SMALL - 1, imgtool.digest.SMALL, imgtool.digest.SMALL + 1):
        expected = "sha256:" + hashlib.sha256(data[:n]).hexdigest()
        assert str(imgtool.digest.Digest.of(data[:n])) == expected
    assert imgtool.digest.small_sha256(data).digest() == hashlib.sha256(data).digest()
