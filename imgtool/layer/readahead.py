"""A stream read ahead by a thread of its own, so that decompressing and hashing a layer (zlib,
isal, zstandard and hashlib release the GIL on big buffers) run on another core while the
applier parses the tar and makes its files. At most `depth` chunks wait: a layer is never held
in memory, and a slow applier slows the reading down.

What the reading raises (a corrupt stream, a digest that does not match, a failed download)
is raised by `read` in the applier's thread, where the bytes before it have been read: the
same error at the same point as without the thread.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Protocol

    class Readable(Protocol):
        def read(self, n: int = -1, /) -> bytes: ...


CHUNK = 1 << 20
DEPTH = 8


class ReadAhead:
    """Reads `src` in `chunk`-sized reads in a thread, up to `depth` chunks ahead of `read`.
    Use it as a context manager: leaving it stops the thread (and waits for its read in
    progress) before `src` may be closed."""

    def __init__(self, src: Readable, chunk: int = CHUNK, depth: int = DEPTH) -> None:
        self._src = src
        self._chunk = chunk
        self._depth = depth
        self._cond = threading.Condition()
        self._ready: list[bytes | BaseException] = []  # b"" or an error ends it
        self._stopped = False
        self._buf = b""
        self._pos = 0
        self._end: bytes | BaseException | None = None  # what ended the stream, once read
        self._thread = threading.Thread(target=self._fill, name="read-ahead", daemon=True)
        self._thread.start()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the reading thread ----------------------------------------------------------------

    def _fill(self) -> None:
        item: bytes | BaseException = b""
        while not self._stopped:
            try:
                item = self._src.read(self._chunk)
            except BaseException as e:  # handed to the reader, raised there
                item = e
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or len(self._ready) < self._depth)
                self._ready.append(item)
                self._cond.notify_all()
            if not isinstance(item, bytes) or not item:
                return

    # --- the reader ------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(self._chunk):
                parts.append(chunk)
            return b"".join(parts)
        if self._pos >= len(self._buf):
            self._buf, self._pos = self._next(), 0
        if self._pos == 0 and n >= len(self._buf):
            self._pos = len(self._buf)
            return self._buf  # the whole chunk: no copy
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def _next(self) -> bytes:
        if self._end is None:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._ready))
                item = self._ready.pop(0)
                self._cond.notify_all()
            if isinstance(item, bytes) and item:
                return item
            self._end = item
        if isinstance(self._end, BaseException):
            raise self._end
        return b""

    def drain(self) -> None:
        """Read to the end (raising what ended the stream, if it was an error)."""
        while self.read(self._chunk):
            pass

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
