"""Content digests as the OCI image spec defines them: `algorithm:encoded`.

The grammar admits any algorithm; the registered ones (sha256, sha512) must also have the right
length and lower-case hex. imgtool addresses content by sha256 only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgtool.errors import InvalidDigest

if TYPE_CHECKING:
    from hashlib import _Hash

_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_REGISTERED: dict[str, re.Pattern[str]] = {
    "sha256": re.compile(r"^[a-f0-9]{64}$"),
    "sha512": re.compile(r"^[a-f0-9]{128}$"),
}
CANONICAL = "sha256"


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate; registered algorithms must have well-formed hex."""
        if not isinstance(text, str) or not _GRAMMAR.match(text):
            raise InvalidDigest(str(text), "not of the form algorithm:encoded")
        algorithm, encoded = text.split(":", 1)
        pattern = _REGISTERED.get(algorithm)
        if pattern is not None and not pattern.match(encoded):
            raise InvalidDigest(text, f"{algorithm} needs lower-case hex of the right length")
        return cls(algorithm, encoded)

    @classmethod
    def parse_sha256(cls, text: str) -> Digest:
        """Parse a digest imgtool can verify and store (sha256 only)."""
        d = cls.parse(text)
        if d.algorithm != CANONICAL:
            raise InvalidDigest(text, f"unsupported algorithm {d.algorithm} (imgtool uses sha256)")
        return d

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of bytes in memory (a stream: feed `sha256()`)."""
        return cls(CANONICAL, sha256(data).hexdigest())

    @property
    def short(self) -> str:
        """The 12 hex characters Docker shows as an id."""
        return self.encoded[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def sha256(data: bytes = b"") -> _Hash:
    """A sha256 hasher. hashlib is imported on first use: loading OpenSSL costs ~5 ms, which
    commands that only read the store (`run` of an unpacked image) need not pay."""
    import hashlib

    return hashlib.sha256(data)


def is_valid(text: str) -> bool:
    try:
        Digest.parse(text)
    except InvalidDigest:
        return False
    return True
