"""A registry download (pushed into a sink by the client) read as a file by a consumer."""

from __future__ import annotations

import contextlib
import queue
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~4 ms)
if TYPE_CHECKING:
    from collections.abc import Callable

    from imgtool.registry.client import BlobSink


class _Abandoned(Exception):
    """The reader went away: the download thread stops."""


class Pipe:
    """A blob that the registry client pushes (download_blob, with its retries and Range
    resumes) read as a file by a consumer: an upload, an archive writer, the store's staging.
    A download that starts over (a server ignoring Range) skips what was already passed on.
    `len()` is what is left to read, so an upload sends a Content-Length."""

    def __init__(self, size: int, run: Callable[[BlobSink], None]) -> None:
        self.offset = 0  # the sink's side: where the next byte written belongs
        self._delivered = 0
        self._size = size
        self._consumed = 0
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=64)
        self._buffer = bytearray()
        self._eof = False
        self._closed = threading.Event()
        threading.Thread(target=self._produce, args=(run,), daemon=True).start()

    # the download thread's side (BlobSink)
    def write(self, data: bytes) -> None:
        start = self.offset
        self.offset += len(data)
        if self.offset <= self._delivered:
            return  # sent again after a restart: already passed on
        self._put(data[max(0, self._delivered - start) :])
        self._delivered = self.offset

    def restart(self) -> None:
        self.offset = 0

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Abandoned()

    def _produce(self, run: Callable[[BlobSink], None]) -> None:
        try:
            run(self)
            self._put(None)
        except _Abandoned:
            pass
        except BaseException as e:  # handed to the reader, which raises it in its thread
            with contextlib.suppress(_Abandoned):
                self._put(e)

    # the reader's side
    def read(self, n: int = -1) -> bytes:
        want = n if n is not None and n >= 0 else 1 << 62
        while len(self._buffer) < want and not self._eof:
            item = self._queue.get()
            if item is None:
                self._eof = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self._buffer += item
        out = bytes(self._buffer[:want])
        del self._buffer[:want]
        self._consumed += len(out)
        return out

    def __len__(self) -> int:
        return max(0, self._size - self._consumed)

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
