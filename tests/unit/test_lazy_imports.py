"""What a command does not use, it does not import: zstandard only where a zstd stream is read
or written; archives (tarfile, zstandard) only where `copy` reads or writes an archive."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from imgtool import compression


def test_importing_compression_leaves_zstandard_unloaded() -> None:
    code = (
        "import sys, io, imgtool.compression as c; "
        "c.open_decompressed(io.BytesIO(b'plain bytes')).read(); "
        "print('zstandard' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    probe = f"import sys; {code}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_copy_between_registry_and_layout_loads_no_archive_code(tmp_path: Path) -> None:
    heavy = ("zstandard", "tarfile", "imgtool.archive", "imgtool.tarball")
    assert _loaded_after("import imgtool.copy", heavy) == []
    assert "imgtool.archive" in _loaded_after(
        "import imgtool.copy as c, imgtool.store as s; "
        f"c.open_destination(c.Location.parse('oci-archive:{tmp_path}/x.tar'), "
        f"s.Store('{tmp_path}/store'), c.TransportOptions())",
        heavy,
    )


def test_zstd_round_trip_across_frames() -> None:
    sink = io.BytesIO()
    for part in (b"first frame ", b"second frame"):
        w = compression.ZstdWriter(sink)
        w.write(part)
        w.close()
    assert compression.sniff(sink.getvalue()) == "zstd"
    back = compression.open_decompressed(io.BytesIO(sink.getvalue()))
    assert back.read() == b"first frame second frame"
