"""Pure parts of `build -` (telling a tar from a Containerfile) and of tmpfs mount sizes."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from imgtool.builder.run_step import _byte_size
from imgtool.builder.stdincontext import read_stdin_context
from imgtool.errors import BuildError


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("4096", 4096), ("64m", 64 << 20), ("1.5GiB", 3 << 29), ("512kb", 512 << 10)],
)
def test_tmpfs_sizes_read_as_buildkit_reads_them(text: str, size: int) -> None:
    assert _byte_size(text) == size


@pytest.mark.parametrize("text", ["8m", "64 MB", "1.5GiB", "8192Kb", "8mi", "1p", "7340032", "3 g"])
def test_one_size_syntax_for_tmpfs_and_run_memory(text: str) -> None:
    """go-units' RAMInBytes serves both: BuildKit's tmpfs size= and docker run -m."""
    from imgtool.sandbox.cgroups import parse_memory

    assert _byte_size(text) == parse_memory(text)


@pytest.mark.parametrize("text", ["", "lots", "-1m", "1x", "1m2", "64  m", "1e3", "1.2.3m"])
def test_a_tmpfs_size_that_is_none_is_refused(text: str) -> None:
    with pytest.raises(BuildError, match="is not a size"):
        _byte_size(text)


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("Containerfile")
        ti.size = 13
        t.addfile(ti, io.BytesIO(b"FROM scratch\n"))
    return buf.getvalue()


@pytest.mark.parametrize("pack", [lambda b: b, gzip.compress, zstandard.compress])
def test_a_tar_on_stdin_is_extracted(tmp_path: Path, pack) -> None:  # noqa: ANN001
    assert read_stdin_context(io.BytesIO(pack(_tar())), tmp_path) is None
    assert (tmp_path / "Containerfile").read_bytes() == b"FROM scratch\n"


@pytest.mark.parametrize("text", [b"", b"FROM scratch\n", b"x" * 600])
def test_anything_else_on_stdin_is_the_containerfile(tmp_path: Path, text: bytes) -> None:
    context = tmp_path / "context"
    context.mkdir()
    assert read_stdin_context(io.BytesIO(text), context) == text
    assert list(context.iterdir()) == []


def test_a_corrupt_compressed_stream_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="stdin: cannot decompress"):
        read_stdin_context(io.BytesIO(b"\x1f\x8b" + b"\0" * 40), tmp_path)


def test_a_size_with_more_digits_than_a_float_holds_is_refused_not_a_traceback() -> None:
    from imgtool.containerfile.values import byte_size

    with pytest.raises(ValueError, match="too large"):
        byte_size("9" * 400)


def test_a_size_beyond_int64_is_refused_not_taken_as_no_limit() -> None:
    from imgtool.containerfile.values import byte_size

    with pytest.raises(ValueError, match="too large"):
        byte_size("99999999999999999999999999999p")
    assert byte_size("7p") == 7 << 50  # within int64: kept
