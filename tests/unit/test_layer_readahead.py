"""The layer stream's read-ahead thread and the gzip reader it drives: the same bytes, the
same errors at the same point, bounded memory, nothing left running."""

from __future__ import annotations

import array
import fcntl
import gzip
import hashlib
import importlib.util
import io
import os
import random
import tarfile
import tempfile
import threading
import zlib
from pathlib import Path

import pytest

from imgtool import compression
from imgtool.errors import DigestMismatch, LayerError
from imgtool.layer import unpacked
from imgtool.layer.readahead import ReadAhead
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _read_all(src: object, rnd: random.Random) -> bytes:
    parts = []
    while chunk := src.read(rnd.choice([1, 7, 512, 4096, 1 << 20])):  # type: ignore[attr-defined]
        parts.append(chunk)
    return b"".join(parts)


# zlib always (the fallback), python-isal too where it is installed
CODECS = ["zlib", *(["isal"] if importlib.util.find_spec("isal") else [])]


@pytest.fixture(params=CODECS)
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "zlib":
        monkeypatch.setattr(compression, "_inflate", lambda: (zlib, (zlib.error,)))
    decoder = {"zlib": "zlib", "isal": "isal.isal_zlib"}[request.param]
    assert compression._inflate()[0].__name__ == decoder
    return str(request.param)


def test_gzip_reader_reads_members_and_padding_as_gzip_does(codec: str) -> None:
    rnd = random.Random(7)
    raw = [rnd.randbytes(300_000), b"", bytes(5_000_000), b"tail"]
    blob = b"".join(gzip.compress(r) + b"\0" * rnd.randrange(3) for r in raw) + b"\0" * 1000
    assert gzip.GzipFile(fileobj=io.BytesIO(blob)).read() == b"".join(raw)
    assert _read_all(compression.GzipReader(io.BytesIO(blob)), rnd) == b"".join(raw)
    assert compression.GzipReader(io.BytesIO(blob)).read() == b"".join(raw)


def test_gzip_reader_refuses_a_bad_checksum_and_a_truncated_stream(codec: str) -> None:
    blob = bytearray(gzip.compress(random.Random(1).randbytes(100_000)))
    blob[-6] ^= 1  # the CRC
    with pytest.raises(gzip.BadGzipFile, match="corrupt gzip stream"):
        compression.GzipReader(io.BytesIO(bytes(blob))).read()
    with pytest.raises(EOFError):
        compression.GzipReader(io.BytesIO(bytes(blob[:-20]))).read()
    with pytest.raises(gzip.BadGzipFile):
        compression.GzipReader(io.BytesIO(gzip.compress(b"")[:10] + b"\xff" * 100)).read()
    trailing = gzip.compress(b"abc") + b"not a gzip member" * 10
    with pytest.raises(gzip.BadGzipFile):
        compression.GzipReader(io.BytesIO(trailing)).read()


def test_gzip_reader_gives_at_most_what_is_asked(codec: str) -> None:
    """A small blob that inflates to a lot is read a bounded piece at a time."""
    reader = compression.GzipReader(io.BytesIO(gzip.compress(bytes(64 << 20))))
    assert len(reader.read(4096)) == 4096
    sizes = {len(c) for c in iter(lambda: reader.read(1 << 20), b"")}
    assert max(sizes) <= 1 << 20


class _Source:
    """Chunks, then an error or the end; counts the reads."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.error = error
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b""


def test_read_ahead_gives_the_same_bytes_in_any_read_size() -> None:
    rnd = random.Random(3)
    chunks = [rnd.randbytes(rnd.randrange(1, 5000)) for _ in range(200)]
    with ReadAhead(_Source(chunks), chunk=4096, depth=3) as ahead:
        assert _read_all(ahead, rnd) == b"".join(chunks)
        assert ahead.read(10) == b""


def test_read_ahead_raises_the_error_after_the_bytes_before_it() -> None:
    src = _Source([b"a" * 10, b"b" * 10], ValueError("digest mismatch"))
    with ReadAhead(src, depth=1) as ahead:
        assert ahead.read(15) == b"a" * 10
        assert ahead.read(100) == b"b" * 10
        with pytest.raises(ValueError, match="digest mismatch"):
            ahead.read(1)
        with pytest.raises(ValueError, match="digest mismatch"):
            ahead.drain()  # still the error: never a quiet end


def test_read_ahead_stops_when_left_early() -> None:
    """An applier that refuses a layer leaves the rest unread: the thread stops (it held at
    most `depth` chunks) and nothing reads the source once the reader is closed."""
    src = _Source([b"x" * 100] * 1000)
    with ReadAhead(src, chunk=100, depth=4) as ahead:
        assert ahead.read(100) == b"x" * 100
    reads = src.reads
    assert reads <= 1 + 4 + 1  # the one read, the ones waiting, one blocked in hand
    assert not ahead._thread.is_alive()
    assert src.reads == reads


def _tar(*members: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if name.endswith("@"):  # a hard link to the path `data` names
                info.name, info.type, info.linkname = name[:-1], tarfile.LNKTYPE, data.decode()
                data = b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _unpack(store: Store, raw: bytes, diff_id: str | None = None) -> str:
    blob = gzip.compress(raw, mtime=0)
    digest = store.write_blob(blob)
    (key,) = LayerStore(store).unpack_layers(
        [(digest, len(blob), GZIP_LAYER, diff_id or "sha256:" + hashlib.sha256(raw).hexdigest())]
    )
    return key


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_a_refused_layer_leaves_no_thread_and_nothing_unpacked(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    big = random.Random(5).randbytes(8 << 20)  # more than the read-ahead holds
    with pytest.raises(LayerError):
        _unpack(store, _tar(("a", b"x"), ("link@", b"../nowhere"), ("b", big)))
    assert not _read_ahead_threads()
    with pytest.raises(DigestMismatch):
        _unpack(store, _tar(("a", big)), "sha256:" + "0" * 64)
    assert not _read_ahead_threads()
    assert not list((store.root / "layers" / "tmp").iterdir())
    assert not (store.root / "layers" / "sha256").exists()


def _flags(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, unpacked.FS_IOC_GETFLAGS, flags, True)
        return flags[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def test_layers_are_unpacked_in_a_top_directory(tmp_path: Path) -> None:
    """On ext4, `layers/tmp/` is a top of directory hierarchies (chattr +T)."""
    store = Store(tmp_path / "s").init()
    key = _unpack(store, _tar(("etc/hostname", b"box\n")))
    assert (LayerStore(store).diff_dir(key) / "etc" / "hostname").read_bytes() == b"box\n"
    if _ext4(tmp_path):
        flags = _flags(store.root / "layers" / "tmp")
        assert flags is not None and flags & unpacked.FS_TOPDIR_FL


def _ext4(path: Path) -> bool:
    """Whether `path` is on an ext2/3/4 file system (the one that has the top-dir flag)."""
    best, fstype = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, kind, *_ = line.split()
        if str(path.resolve()).startswith(point.rstrip("/") + "/") and len(point) > len(best):
            best, fstype = point, kind
    return fstype in ("ext2", "ext3", "ext4")


def test_a_file_system_without_the_flag_changes_nothing(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        unpacked._mark_top_dir(Path(d))  # tmpfs has no such flag: no error either
        assert os.listdir(d) == []
