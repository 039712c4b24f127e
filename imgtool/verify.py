"""Readers and writers that hash what passes through them and check it at the end."""

from __future__ import annotations

from imgtool.digest import sha256
from imgtool.errors import DigestMismatch, SizeMismatch

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import BinaryIO


class VerifyingReader:
    """Reads `src`, hashing; at EOF the size and the sha256 digest must be as expected.

    Drain it to EOF (`drain()`) before trusting what was read: tar readers stop before padding.
    """

    def __init__(
        self, src: BinaryIO, expected_digest: str, expected_size: int | None, what: str
    ) -> None:
        self._src = src
        self._expected = expected_digest
        self._size = expected_size
        self._what = what
        self._hash = sha256()
        self._read = 0
        self._done = False

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        if data:
            self._hash.update(data)
            self._read += len(data)
            if self._size is not None and self._read > self._size:
                raise SizeMismatch(self._what, self._size, self._read)
        elif n != 0:
            self._finish()
        return data

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._size is not None and self._read != self._size:
            raise SizeMismatch(self._what, self._size, self._read)
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._expected:
            raise DigestMismatch(self._what, self._expected, actual, self._read)

    def drain(self, chunk: int = 1 << 20) -> None:
        while self.read(chunk):
            pass

    @property
    def bytes_read(self) -> int:
        return self._read


class HashingWriter:
    """Writes through to `sink`, counting bytes and hashing them with sha256."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._hash = sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._sink.write(data)

    def flush(self) -> None:
        self._sink.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
