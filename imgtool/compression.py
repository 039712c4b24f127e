"""Sniffing, decompressing and compressing layer streams (gzip, zstd, none).

File objects in, file objects out. Compressed output is deterministic: a gzip header with no
name and mtime 0, so the same tar always gives the same blob.
"""

from __future__ import annotations

import importlib
import io
import zlib
from types import ModuleType

# zstandard (~5 ms to import) is imported where a zstd stream is read or written, and gzip
# (~1 ms) where one is written or found corrupt: most layers, and every command that only
# copies blobs, never need them

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from typing import BinaryIO, Literal

    Compression = Literal["gzip", "zstd", "none"]
else:
    Compression = str

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20
WBITS_GZIP = 16 + zlib.MAX_WBITS  # a gzip header and trailer (CRC, length) around deflate


def sniff(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class Peeked(io.RawIOBase):
    """Puts bytes read ahead (to sniff what a stream is) back in front of it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        n = len(data)
        buf[:n] = data
        return n


def open_decompressed(src: BinaryIO, compression: Compression | None = None) -> BinaryIO:
    """A reader of the uncompressed bytes; sniffs the format unless told.

    zstd is read across frames: python-zstandard stops after the first frame otherwise.
    """
    if compression is None:
        head = src.read(4)
        compression = sniff(head)
        src = io.BufferedReader(Peeked(head, src), CHUNK)
    if compression == "gzip":
        return GzipReader(src)  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        dctx = zstandard.ZstdDecompressor()
        return dctx.stream_reader(src, read_across_frames=True, closefd=False)
    return src


def _inflate() -> tuple[ModuleType, tuple[type[Exception], ...]]:
    """The gzip decoder and the errors it raises: python-isal's when it is installed (it
    inflates a layer in half zlib's time), else zlib."""
    try:
        isal_zlib = importlib.import_module("isal.isal_zlib")  # optional: no stubs either
    except ImportError:
        return zlib, (zlib.error,)
    return isal_zlib, (isal_zlib.error, zlib.error)


class GzipReader:
    """A gzip stream's uncompressed bytes: members one after another, zero padding between or
    after them skipped (what `gzip.GzipFile` reads). The decoder checks each member's CRC and
    length itself, and keeps the GIL released while it inflates, so a thread reading this
    leaves the others running. A corrupt stream raises `gzip.BadGzipFile`, a truncated one
    EOFError, as `gzip.GzipFile` does."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._codec, self._errors = _inflate()
        self._decoder = self._codec.decompressobj(WBITS_GZIP)
        self._pending = b""  # compressed bytes read but not given to the decoder yet
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        while n and not self._ended:
            if self._decoder.eof and not self._next_member():
                break
            data = self._pending or self._src.read(CHUNK)
            if not data:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            try:
                out = self._decoder.decompress(data, n)  # at most n: no gzip bomb in memory
            except self._errors as e:
                import gzip

                raise gzip.BadGzipFile(f"corrupt gzip stream: {e}") from None
            self._pending = self._decoder.unconsumed_tail
            if out:
                return out
        return b""

    def _next_member(self) -> bool:
        """After a member's end: start the next one; False at the end of the stream."""
        rest = self._decoder.unused_data.lstrip(b"\0")
        while not rest:
            more = self._src.read(CHUNK)
            if not more:
                self._ended = True
                return False
            rest = more.lstrip(b"\0")
        self._decoder = self._codec.decompressobj(WBITS_GZIP)
        self._pending = rest
        return True

    def close(self) -> None:
        pass


class GzipWriter:
    """A deterministic gzip stream writer (no file name, mtime 0) over a binary sink."""

    def __init__(self, sink: BinaryIO, level: int = 6) -> None:
        import gzip

        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=level, mtime=0)

    def write(self, data: bytes) -> int:
        return self._gz.write(data)

    def close(self) -> None:
        self._gz.close()


class ZstdWriter:
    def __init__(self, sink: BinaryIO, level: int = 3) -> None:
        import zstandard

        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._w = cctx.stream_writer(sink, closefd=False)

    def write(self, data: bytes) -> int:
        return self._w.write(data)

    def close(self) -> None:
        import zstandard

        self._w.flush(zstandard.FLUSH_FRAME)
        self._w.close()


class PlainWriter:
    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        return self._sink.write(data)

    def close(self) -> None:
        pass


def compressing_writer(
    sink: BinaryIO, compression: Compression
) -> GzipWriter | ZstdWriter | PlainWriter:
    if compression == "gzip":
        return GzipWriter(sink)
    if compression == "zstd":
        return ZstdWriter(sink)
    return PlainWriter(sink)


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    buf = io.BytesIO()
    w = GzipWriter(buf, level)
    w.write(data)
    w.close()
    return buf.getvalue()


__all__ = [
    "Compression",
    "sniff",
    "open_decompressed",
    "compressing_writer",
    "gzip_bytes",
    "zlib",
]
