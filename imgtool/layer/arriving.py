"""A blob read while it is being downloaded: the download writes it into the store's ingest
file (hashing it there, once), and an applier reads the same file behind the writer.

The ingest file is the buffer between them, so an applier that waits for the layers below
holds no bytes in memory, a resumed download (HTTP Range) simply goes on growing it, and a
restarted one rewrites the same bytes. The reader's end of file comes only once the blob
has been verified and committed; a failed download raises its own error in the reader, so
a truncated or corrupted blob is reported as what it is, not as a broken gzip stream.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Protocol

    class IngestFile(Protocol):
        """What `store.Ingest` offers the download: the part the arrival wraps."""

        offset: int

        def write(self, data: bytes) -> None: ...

        def restart(self) -> None: ...

        def reader_fd(self) -> int: ...


READ_MAX = 1 << 20


class Arrival:
    """One blob's download as seen by its reader. Thread-safe: the download thread writes
    through `sink()`, then calls `finish()` or `fail()`; the applier reads `reader()`."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._cond = threading.Condition()
        self._fd = -1
        self._length = 0  # bytes of the file that hold what the download wrote
        self._done = False
        self._error: BaseException | None = None

    # --- the download's side -------------------------------------------------------------

    def sink(self, ingest: IngestFile) -> ArrivalSink:
        """Wrap the ingest file the download writes; what it already holds (an earlier,
        interrupted pull) is readable at once."""
        with self._cond:
            self._fd = ingest.reader_fd()
            self._length = ingest.offset
            self._cond.notify_all()
        return ArrivalSink(self, ingest)

    def stored(self, path: str) -> None:
        """The blob was already in the store (another process fetched it): read it there."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with self._cond:
            self._fd = fd
            self._length = os.fstat(fd).st_size
            self._done = True
            self._cond.notify_all()

    def _grew(self, length: int) -> None:
        with self._cond:
            self._length = length
            self._cond.notify_all()

    def finish(self) -> None:
        """The blob is verified and in the store."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._done = True
            self._cond.notify_all()

    def outcome(self) -> BaseException | None:
        """Wait for the download to end; its error, or None when the blob is in the store."""
        with self._cond:
            self._cond.wait_for(lambda: self._done)
            return self._error

    # --- the reader's side ---------------------------------------------------------------

    def reader(self) -> ArrivalReader:
        return ArrivalReader(self)

    def _available(self, pos: int) -> tuple[int, int]:
        """Wait until bytes past `pos` are there or the download ended: (fd, bytes readable
        at `pos`); 0 bytes means the end of a verified blob. A failed download raises."""
        with self._cond:
            self._cond.wait_for(lambda: self._done or (self._fd >= 0 and self._length > pos))
            if self._error is not None:
                raise self._error
            return self._fd, max(0, self._length - pos)

    def close(self) -> None:
        with self._cond:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class ArrivalSink:
    """The download's sink (`registry.client.BlobSink`): writes go to the ingest file, and
    the reader is told how far it may read."""

    def __init__(self, arrival: Arrival, ingest: IngestFile) -> None:
        self._arrival = arrival
        self._ingest = ingest

    @property
    def offset(self) -> int:
        return self._ingest.offset

    def write(self, data: bytes) -> None:
        self._ingest.write(data)
        self._arrival._grew(self._ingest.offset)

    def restart(self) -> None:
        # the reader keeps its position: the same bytes are written again (and what it read
        # is checked against the diff_id anyway)
        self._ingest.restart()
        self._arrival._grew(0)


class ArrivalReader:
    """A file object over an arriving blob, from its first byte; blocks for bytes to come."""

    def __init__(self, arrival: Arrival) -> None:
        self._arrival = arrival
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(READ_MAX):
                parts.append(chunk)
            return b"".join(parts)
        while n:
            fd, avail = self._arrival._available(self._pos)
            if avail == 0:
                return b""
            data = os.pread(fd, min(n, avail), self._pos)
            if data:  # empty: a restart truncated the file under us; wait for it to regrow
                self._pos += len(data)
                return data
        return b""

    def drain(self) -> None:
        """Read to the end: returns once the blob is verified, raises if it was not."""
        while self.read(READ_MAX):
            pass
