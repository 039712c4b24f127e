"""A blob read while it is written: the reader follows the writer through the ingest file,
sees its end only once the blob is verified, and gets the download's own error."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from pathlib import Path

import pytest

from imgtool.errors import DigestMismatch, SizeMismatch
from imgtool.layer.arriving import Arrival
from imgtool.layer.unpacked import LayerStore
from imgtool.store import Store


def _layer() -> tuple[bytes, bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = bytes(range(256)) * 4000
        info = tarfile.TarInfo("etc/blob")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, mtime=0)


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_reader_follows_the_writer_and_ends_only_when_finished(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    _, blob = _layer()
    arrival = Arrival("layer")
    got: list[bytes] = []
    ingest = store.ingest(_digest(blob), len(blob))
    sink = arrival.sink(ingest)
    reader = arrival.reader()
    t = threading.Thread(target=lambda: got.append(reader.read()))
    t.start()
    half = len(blob) // 2
    sink.write(blob[:half])
    sink.restart()  # a server that ignored Range: the same bytes come again
    sink.write(blob[:half])
    sink.write(blob[half:])
    t.join(0.3)
    assert t.is_alive()  # every byte is there, but the blob is not verified yet
    ingest.commit()
    ingest.close()
    arrival.finish()
    t.join(5)
    assert got == [blob]
    arrival.close()


def test_reader_raises_the_downloads_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    _, blob = _layer()
    arrival = Arrival("layer")
    ingest = store.ingest(_digest(blob), len(blob))
    sink = arrival.sink(ingest)
    sink.write(blob[:100])
    reader = arrival.reader()
    assert reader.read(50) == blob[:50]
    with pytest.raises(SizeMismatch):
        ingest.commit()
    arrival.fail(SizeMismatch("blob x", len(blob), 100))
    with pytest.raises(SizeMismatch):
        reader.drain()
    ingest.close()
    arrival.close()


def test_layer_applied_as_it_arrives_and_renamed_only_when_verified(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    raw, blob = _layer()
    digest = _digest(blob)
    layers = LayerStore(store)
    arrival = Arrival(f"layer {digest}")
    ingest = store.ingest(digest, len(blob))
    sink = arrival.sink(ingest)

    def download() -> None:
        for i in range(0, len(blob), 4096):
            sink.write(blob[i : i + 4096])
        ingest.commit()
        ingest.close()
        arrival.finish()

    t = threading.Thread(target=download)
    t.start()
    (key,) = layers.unpack_layers(
        [(digest, len(blob), "application/vnd.oci.image.layer.v1.tar+gzip", _digest(raw))],
        {digest: arrival},
    )
    t.join(5)
    arrival.close()
    assert (layers.diff_dir(key) / "etc" / "blob").read_bytes() == bytes(range(256)) * 4000
    assert store.has_blob(digest)
    assert not list((layers.root / "tmp").iterdir())


def test_bad_blob_is_the_error_and_nothing_is_unpacked(tmp_path: Path) -> None:
    store = Store(tmp_path / "s").init()
    raw, blob = _layer()
    digest = _digest(blob)
    bad = blob[:10] + bytes([blob[10] ^ 0xFF]) + blob[11:]
    layers = LayerStore(store)
    arrival = Arrival(f"layer {digest}")
    ingest = store.ingest(digest, len(blob))
    sink = arrival.sink(ingest)

    def download() -> None:
        sink.write(bad)
        try:
            ingest.commit()
        except DigestMismatch as e:
            arrival.fail(e)
        ingest.close()

    t = threading.Thread(target=download)
    t.start()
    with pytest.raises(DigestMismatch):
        layers.unpack_layers(
            [(digest, len(blob), "application/vnd.oci.image.layer.v1.tar+gzip", _digest(raw))],
            {digest: arrival},
        )
    t.join(5)
    arrival.close()
    assert not store.has_blob(digest)
    assert not (layers.root / "sha256").exists() or not list((layers.root / "sha256").iterdir())
    assert not list((layers.root / "tmp").iterdir())
