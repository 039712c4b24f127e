"""`imgtool build -`: stdin is either the Containerfile (the context is then empty) or a tar
of the context, plain, gzip or zstd, as `docker build -` reads it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from imgtool import compression
from imgtool.errors import BuildError, LayerError

TAR_MAGIC_AT = 257  # ustar (POSIX and GNU both start "ustar" there)
TAR_MAGIC = b"ustar"
BLOCK = 512
MAX_CONTAINERFILE = 16 << 20  # a Containerfile, not a context: bounded in memory


def _read_up_to(src: BinaryIO, size: int) -> bytes:
    """`size` bytes, fewer only at the end (pipes and decompressors return short reads)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        chunk = src.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def is_tar(head: bytes) -> bool:
    return head[TAR_MAGIC_AT : TAR_MAGIC_AT + len(TAR_MAGIC)] == TAR_MAGIC


def read_stdin_context(src: BinaryIO, context_dir: Path) -> bytes | None:
    """Read `src` to its end: a tar is extracted into `context_dir` (an empty directory), with
    the layer applier's confinement (no entry lands outside it, whatever its name, link or
    type), and None is returned; anything else is the Containerfile, returned as it is."""
    try:
        data = compression.open_decompressed(src)
        head = _read_up_to(data, BLOCK)
    except (OSError, EOFError, ValueError) as e:  # a corrupt gzip or zstd stream
        raise BuildError(f"stdin: cannot decompress: {e}") from None
    if not is_tar(head):
        rest = _read_up_to(data, MAX_CONTAINERFILE + 1 - len(head))
        text = head + rest
        if len(text) > MAX_CONTAINERFILE:
            raise BuildError(f"stdin: a Containerfile over {MAX_CONTAINERFILE >> 20} MiB")
        return text
    from imgtool.layer.apply import apply_layer

    stream = io.BufferedReader(compression.Peeked(head, data), compression.CHUNK)
    try:
        apply_layer(stream, context_dir, "plain")
    except LayerError as e:
        raise BuildError(f"stdin: the context tar: {e}") from None
    except (OSError, EOFError, ValueError) as e:
        raise BuildError(f"stdin: the context tar: {e}") from None
    return None
