"""Content digests as the OCI image spec defines them: `algorithm:encoded`.

The grammar admits any algorithm; the registered ones (sha256, sha512) must also have the right
length and lower-case hex. imgtool addresses content by sha256 only.
"""

from __future__ import annotations

import re

from imgtool.errors import InvalidDigest
from imgtool.values import Frozen

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from hashlib import _Hash

# patterns, compiled (and cached by re) on first use: most commands never parse a digest
_GRAMMAR = r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
_REGISTERED = {"sha256": r"^[a-f0-9]{64}$", "sha512": r"^[a-f0-9]{128}$"}
CANONICAL = "sha256"
LOWER_HEX = frozenset("0123456789abcdef")


def is_sha256(text: str) -> bool:
    """`sha256:` and 64 lower-case hex digits: the digest imgtool makes and stores, told
    without compiling the patterns above (a run or a re-pull parses a few, nothing else)."""
    return len(text) == 71 and text.startswith("sha256:") and LOWER_HEX.issuperset(text[7:])


class Digest(Frozen):
    """A parsed digest; ordered by algorithm, then encoded value."""

    __slots__ = ("algorithm", "encoded")
    algorithm: str
    encoded: str

    def __init__(self, algorithm: str, encoded: str) -> None:
        self._init(algorithm, encoded)

    def __lt__(self, other: Digest) -> bool:
        return (self.algorithm, self.encoded) < (other.algorithm, other.encoded)

    def __le__(self, other: Digest) -> bool:
        return (self.algorithm, self.encoded) <= (other.algorithm, other.encoded)

    def __gt__(self, other: Digest) -> bool:
        return (self.algorithm, self.encoded) > (other.algorithm, other.encoded)

    def __ge__(self, other: Digest) -> bool:
        return (self.algorithm, self.encoded) >= (other.algorithm, other.encoded)

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate; registered algorithms must have well-formed hex."""
        if isinstance(text, str) and is_sha256(text):
            return cls(CANONICAL, text[7:])
        if not isinstance(text, str) or not re.fullmatch(_GRAMMAR, text):
            raise InvalidDigest(str(text), "not of the form algorithm:encoded")
        algorithm, encoded = text.split(":", 1)
        pattern = _REGISTERED.get(algorithm)
        if pattern is not None and not re.fullmatch(pattern, encoded):
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
        hasher = small_sha256 if len(data) <= SMALL else sha256
        return cls(CANONICAL, hasher(data).hexdigest())

    @property
    def short(self) -> str:
        """The 12 hex characters Docker shows as an id."""
        return self.encoded[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def sha256(data: bytes = b"") -> _Hash:
    """A sha256 hasher. hashlib is imported on first use: loading OpenSSL costs ~3-5 ms, which
    commands that only read the store (`run` of an unpacked image) need not pay."""
    import hashlib

    return hashlib.sha256(data)


SMALL = 64 << 10  # what `small_sha256` is for: manifests, configs, ChainIDs, cache keys


def small_sha256(data: bytes = b"") -> _Hash:
    """A sha256 hasher for small inputs (up to some tens of kB): CPython's own SHA-256 (what
    hashlib falls back to without OpenSSL) loads in ~0.3 ms where hashlib loads OpenSSL in
    ~3 ms, but hashes several times slower, so blobs and streams take `sha256`. The digests
    are the same."""
    try:
        from _sha256 import sha256 as builtin  # type: ignore[import-not-found]
    except ImportError:  # Python 3.12 and later name it _sha2
        try:
            from _sha2 import sha256 as builtin  # type: ignore[import-not-found]
        except ImportError:  # an interpreter without CPython's builtin hashes
            return sha256(data)
    return builtin(data)


def is_valid(text: str) -> bool:
    try:
        Digest.parse(text)
    except InvalidDigest:
        return False
    return True
