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
